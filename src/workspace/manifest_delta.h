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

// The same as ApplyDelta, on and to serializations (ManifestHash's, when `base_bytes` is one): what
// the server and an agent do with a delta, without parsing the 10,000 entries it does not change.
// The same errors; also InvalidArgument when `base_bytes` is not a manifest.
Result<std::string> ApplyDeltaToBytes(std::string_view base_bytes, const v1::ManifestDelta& delta);

// One root of a delta applied to `root` in place (its entries sorted by path, as a scan makes
// them): what ApplyDelta makes of that root, touching only the entries the delta names (entries
// move by pointer when some come or go). The same errors; `root` is unchanged on one.
Status ApplyRootDelta(v1::WorkspaceRoot* root, const v1::RootDelta& rd);

// The file contents the delta's entries name (what must be in a store before the manifest is).
std::set<std::string> DeltaContent(const v1::ManifestDelta& delta);

}  // namespace tidepool::workspace
