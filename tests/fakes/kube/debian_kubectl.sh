#!/usr/bin/env bash
# Prints the path of Debian's kubectl (package kubernetes-client, 1.20), for the checks of the
# fake API server and the tests that drive it as an operator would. /usr/bin/kubectl may belong
# to another package (e.g. Google Cloud SDK's "kubectl", which conflicts with kubernetes-client
# on that path): then the kubernetes-client .deb is fetched with `apt-get download` and unpacked
# into a cache folder ($FAKE_KUBE_CACHE, default /var/cache/tidepool-fake-kube), never installed
# over it. Exit 2 when it cannot be had.
set -euo pipefail
if dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null | grep -q "install ok installed"; then
  echo /usr/bin/kubectl; exit 0
fi
owner="$(dpkg -S /usr/bin/kubectl 2>/dev/null | cut -d: -f1 || true)"
if [ -z "$owner" ] && [ "$(id -u)" = 0 ]; then
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >&2; then
    echo /usr/bin/kubectl; exit 0
  fi
fi
cache="${FAKE_KUBE_CACHE:-/var/cache/tidepool-fake-kube}"
if [ ! -x "$cache/usr/bin/kubectl" ]; then
  mkdir -p "$cache/deb"
  (cd "$cache/deb" && apt-get -o APT::Sandbox::User=root download kubernetes-client >&2) || exit 2
  dpkg-deb -x "$cache"/deb/kubernetes-client_*.deb "$cache" || exit 2
fi
echo "$cache/usr/bin/kubectl"
