// Small header-only helpers for the clients' terminals: the full client (src/cli) and the small
// static vrun/vbatch (src/fastclient), which links none of the project's libraries.
#pragma once

#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>

namespace tidepool {

// Writes all of `data`, retrying short writes and EINTR. A reader that went away (EPIPE) ends
// it quietly: there is nothing sensible to do with the rest.
inline void WriteAll(int fd, const std::string& data) {
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// Puts stdin in raw mode (for a remote PTY) and restores it. Restore may be called from two
// threads at once (the run's end and a signal that ends the client; TSan found it): exactly one
// of them restores.
struct RawTerminal {
  std::atomic<bool> raw{false};
  termios saved{};
  void MakeRaw() {
    if (tcgetattr(STDIN_FILENO, &saved) != 0) return;
    termios t = saved;
    cfmakeraw(&t);
    if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0) raw = true;
  }
  void Restore() {
    if (raw.exchange(false)) tcsetattr(STDIN_FILENO, TCSANOW, &saved);
  }
};

}  // namespace tidepool
