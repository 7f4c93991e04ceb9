#!/usr/bin/env bash
# Makes the TLS material for the FAKE Kubernetes API server (tests only), with the openssl CLI:
#   ca.crt ca.key                      a CA (unless DIR already has one: it is then reused)
#   server.crt server.key              signed by it, SANs 127.0.0.1, ::1, localhost (+ --ip/--dns)
#   client-NAME.crt client-NAME.key    client certificates, CN=NAME (the user name), O=GROUP
# Usage: make_certs.sh DIR [--ip IP]... [--dns NAME]... [--client NAME[:GROUP]]...
# With no --client, one client "cert-user" (group "testers") is made.
set -euo pipefail
dir="${1:?usage: make_certs.sh DIR [--ip IP]... [--dns NAME]... [--client NAME[:GROUP]]...}"
shift
ips=(127.0.0.1 ::1)
dnss=(localhost)
clients=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ip) ips+=("$2"); shift 2 ;;
    --dns) dnss+=("$2"); shift 2 ;;
    --client) clients+=("$2"); shift 2 ;;
    *) echo "make_certs.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#clients[@]} -gt 0 ] || clients=(cert-user:testers)
mkdir -p "$dir"
cd "$dir"
umask 077

if [ ! -s ca.crt ] || [ ! -s ca.key ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.crt -days 3650 -subj "/CN=fake-kube-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

san=""
for ip in "${ips[@]}"; do san+="${san:+,}IP:$ip"; done
for d in "${dnss[@]}"; do san+="${san:+,}DNS:$d"; done

sign() { # name subject extensions
  local name="$1" subj="$2" ext="$3"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
  printf '%s\n' "$ext" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out "$name.crt" -days 3650 -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

sign server "/CN=fake-kube-apiserver" \
  "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san"

for c in "${clients[@]}"; do
  name="${c%%:*}"; group=""
  [ "$c" != "$name" ] && group="${c#*:}"
  subj="/CN=$name"; [ -n "$group" ] && subj="/O=$group/CN=$name"
  sign "client-$name" "$subj" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
done
chmod 644 ./*.crt
echo "$dir"
