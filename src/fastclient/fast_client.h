// `vrun` and `vbatch` as small programs: no gRPC, no protobuf, so that they start in about the
// time of any C++ program instead of the ~6 ms it takes just to load gRPC (performance.md, P1).
//
// They speak the fast protocol (common/fast_protocol.h) to the server's usual port and behave
// exactly as `tidepool run` / `tidepool batch` (src/cli/run.cc, batch.cc): same options, output,
// stdin, signals, terminal handling, messages and exit statuses. Whatever they do not handle
// themselves (--help, usage errors, `vbatch -f`, TLS, a server that does not speak the fast
// protocol, an address that is not HOST:PORT, or in the static build a host name other than
// localhost ...) they hand to the full client by exec'ing the
// `tidepool` binary next to them, before anything with an effect was sent: behaviour is never
// lost, only the speed. TIDEPOOL_CLIENT_TRACE=1 says on stderr which of the two ran.
#pragma once

namespace tidepool::fastclient {

enum class Mode { kRun, kBatch };

int Main(Mode mode, int argc, char** argv);

}  // namespace tidepool::fastclient
