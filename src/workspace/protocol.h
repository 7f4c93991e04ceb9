// Words the server and every client agree on about workspaces (header-only: the fast clients,
// which link neither protobuf nor OpenSSL, include it too).
#pragma once

namespace tidepool {

// Starts the message of the FAILED_PRECONDITION a submission gets when its pool brings the
// caller's files and it named none: a client that cannot send them hands the command to one
// that can (`tidepool`), which asks WorkspaceService.Settings first and never sees it.
inline constexpr char kWorkspaceNeeded[] = "workspace needed: ";

// Chunk size for blob transfers (client <-> server, server <-> agent).
inline constexpr unsigned kBlobChunkBytes = 1u << 20;

}  // namespace tidepool
