// A manifest told as its difference from another one (its base) that the receiver already has:
// what a client sends when one file of a 10,000-file tree changed (spec P12), instead of the
// whole manifest (~95 bytes per entry). Pure.
#pragma once

#include <set>
#include <string>
#include <string_view>

#include "common/status.h"
#include "tidepool/v1/workspace.pb.h"

namespace tidepool::workspace {

// The delta that makes `next` from `base`, from the two manifests' deterministic serializations
// (ManifestHash's). Roots are matched by path; a root `base` lacks is sent whole. Entries compare
// as bytes: only the entries that differ are parsed, so a delta of a 10,000-entry
// manifest costs no allocation per entry. InvalidArgument when either is not a manifest.
Result<v1::ManifestDelta> MakeDelta(const std::string& base_hash, std::string_view base_bytes, const std::string& next_hash,
                                    std::string_view next_bytes);

// `base` with `delta` applied. InvalidArgument naming what does not fit: a removed path `base`
// lacks, an entry path that is not a workspace path, a root named twice. The caller checks the
// result's hash against delta.hash().
Result<v1::WorkspaceManifest> ApplyDelta(const v1::WorkspaceManifest& base, const v1::ManifestDelta& delta);

// The file contents the delta's entries name (what must be in a store before the manifest is).
std::set<std::string> DeltaContent(const v1::ManifestDelta& delta);

}  // namespace tidepool::workspace
