// The backends' config blocks, registered by the backends themselves.
//
// The configuration layer names no backend: each backend folder (src/backends/<name>/) registers
// its block here — its config key, its schema (schema.h), whether it is built, and the checks
// that relate several of its fields — through backends::Registrar (backends/registry.h), from a
// static object. `schema::Backend()` (the `backend: {...}` oneof), the builder's checks
// (build.cc) and the feature table's `backend.KEY` entries (features.h) are all read from here.
//
// Registration happens during static initialisation, before main; lookups happen after. The
// lookups are thread-safe once main has started.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/features.h"
#include "config/schema.h"

namespace tidepool::config {

// Reports an error in a backend block: `field` is a dotted path below the block ("" = the block
// itself), `at_key` places it at the field's key rather than its value. The builder turns it
// into "FILE:LINE:COL: PATH: MESSAGE".
using BackendErrorReport = std::function<void(const std::string& field, const std::string& message, bool at_key)>;

struct BackendSchema {
  std::string key;  // the config key, `backend: {KEY: {...}}`
  int order = 0;    // its place in lists of known backends (errors, docs); lower first, then key
  const schema::Message* (*message)() = nullptr;  // its block's fields
  // Built in this version; false = loaded, validated and reported "not yet active"
  // (features.h, id "backend.KEY").
  bool active = false;
  // Rules that relate several fields (the decoder checks each field alone), or nullptr.
  std::function<void(const nlohmann::json& fields, const BackendErrorReport& report)> check;
  // Its workers are on other machines (hosts over SSH, Slurm nodes, pods, VMs): a pool of it
  // brings the caller's workspace to them unless it says otherwise (`workspace.mode`).
  bool remote = false;
  // Non-empty: a known name that Tidepool refuses, with this message (the block is not decoded).
  std::string unsupported;
};

// Registers `s` (a later registration of the same key replaces it). Not for use after main.
void RegisterBackendSchema(BackendSchema s);

// For tests that register a backend of their own: takes `key` out again.
void UnregisterBackendSchema(std::string_view key);

// nullptr when no backend registered `key`.
const BackendSchema* FindBackendSchema(std::string_view key);

// Every registered backend, in `order`.
std::vector<const BackendSchema*> BackendSchemas();

// The feature of the backend `key` ("backend.KEY", "KEY backend"), or nullptr.
const Feature* BackendFeature(std::string_view key);

}  // namespace tidepool::config
