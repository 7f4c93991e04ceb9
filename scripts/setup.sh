#!/usr/bin/env bash
# Installs everything Tidepool needs to build, run and test, from Debian 12 packages only.
# Idempotent; run as root (or with sudo available).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  # toolchain
  g++ cmake ninja-build pkg-config ccache git
  # vrun's and vbatch's C clients are static musl programs (src/fastclient/*_lite.c)
  musl-tools
  # libraries
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libsqlite3-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libyaml-cpp-dev
  libssl-dev libcpp-httplib-dev libcurl4-openssl-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # used by the tests and scripts themselves
  procps iproute2 python3 util-linux openssl python3-kubernetes
  # real SSH hosts for the ssh backend (tests start one sshd per network-namespace host)
  openssh-server openssh-client
  # a real Slurm cluster for the slurm backend (tests/slurm/setup.sh starts it on this machine)
  slurm-wlm munge
  # the workspace tests (a git work tree on another host) and its benchmark (rsync beside it)
  git rsync
  # fuzzing (libFuzzer and the sanitizer runtimes come with clang 14's compiler-rt)
  clang libclang-rt-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present" >&2
fi

# Debian's kubectl (kubernetes-client), for the checks of the fake Kubernetes API server
# (tests/fakes/kube). Where another package owns /usr/bin/kubectl (Google Cloud SDK's), it is not
# installed over it: the check script unpacks Debian's package beside it instead.
if ! dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null | grep -q "install ok installed" &&
   ! dpkg -S /usr/bin/kubectl >/dev/null 2>&1; then
  echo "setup: installing kubernetes-client" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends kubernetes-client
fi
