// A Bloom filter of strings: MayContain(s) is false only if s was never added. Sized at
// construction for `capacity` strings at about 1% false positives (10 bits and 7 probes each);
// past its capacity it still never says "absent" wrongly, only "maybe" more often, so the owner
// rebuilds a bigger one when full() (it cannot list what it holds).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace tidepool {

class BloomFilter {
 public:
  explicit BloomFilter(size_t capacity = 1024);

  void Add(std::string_view s);
  bool MayContain(std::string_view s) const;

  size_t size() const { return added_; }  // Add() calls, repeats included
  bool full() const { return added_ >= capacity_; }

 private:
  static constexpr int kProbes = 7;
  // Probe i is bit (h1 + i * h2) mod bits (Kirsch and Mitzenmacher: two hashes do for seven).
  struct Probes {
    uint64_t h1, h2, bits;
    uint64_t Bit(int i) const { return (h1 + static_cast<uint64_t>(i) * h2) % bits; }
  };
  Probes ProbesOf(std::string_view s) const;

  std::vector<uint64_t> words_;
  uint64_t bits_;
  size_t capacity_;
  size_t added_ = 0;
};

}  // namespace tidepool
