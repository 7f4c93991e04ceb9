#include "common/bloom_filter.h"

#include <algorithm>

namespace tidepool {
namespace {

// The two hashes: FNV-1a from two offsets, each through murmur3's finaliser (FNV alone leaves
// the short, similar ids this holds too alike in the high bits).
uint64_t Mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

uint64_t Fnv(std::string_view s, uint64_t h) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return Mix(h);
}

}  // namespace

BloomFilter::BloomFilter(size_t capacity) : capacity_(std::max<size_t>(capacity, 64)) {
  bits_ = static_cast<uint64_t>(capacity_) * 10;
  words_.assign((bits_ + 63) / 64, 0);
  bits_ = words_.size() * 64;
}

BloomFilter::Probes BloomFilter::ProbesOf(std::string_view s) const {
  return {Fnv(s, 0xcbf29ce484222325ULL), Fnv(s, 0x84222325cbf29ce4ULL) | 1, bits_};
}

void BloomFilter::Add(std::string_view s) {
  Probes p = ProbesOf(s);
  for (int i = 0; i < kProbes; ++i) {
    uint64_t bit = p.Bit(i);
    words_[bit / 64] |= uint64_t{1} << (bit % 64);
  }
  ++added_;
}

bool BloomFilter::MayContain(std::string_view s) const {
  Probes p = ProbesOf(s);
  for (int i = 0; i < kProbes; ++i) {
    uint64_t bit = p.Bit(i);
    if (!(words_[bit / 64] & (uint64_t{1} << (bit % 64)))) return false;
  }
  return true;
}

}  // namespace tidepool
