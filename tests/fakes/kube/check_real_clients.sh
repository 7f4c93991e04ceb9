#!/usr/bin/env bash
# Checks the FAKE Kubernetes API server with real clients nobody here wrote: Debian's kubectl
# (package kubernetes-client, 1.20) and Debian's python3-kubernetes. Prints PASS/FAIL lines and
# exits non-zero on any failure. Root may install the packages (see ensure_* below).
#   tests/fakes/kube/check_real_clients.sh [--kubectl-only | --python-only]
# Env: KUBECTL=path (a kubectl 1.20 to use instead of Debian's), KEEP=1 (keep the temp dir).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODE="${1:-all}"
TMP="$(mktemp -d /tmp/fake-kube-check.XXXXXX)"
FAKE_PID=""
fails=0; passes=0

cleanup() {
  [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null && wait "$FAKE_PID" 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

pass() { echo "PASS: $*"; passes=$((passes + 1)); }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# Debian's kubectl. /usr/bin/kubectl may belong to another package (e.g. Google Cloud SDK's
# "kubectl", which conflicts with kubernetes-client on that path): then the kubernetes-client .deb
# is fetched with `apt-get download` and unpacked into a cache folder, never installed over it.
ensure_kubectl() {
  if [ -n "${KUBECTL:-}" ]; then return; fi
  if dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null | grep -q "install ok installed"; then
    KUBECTL=/usr/bin/kubectl; return
  fi
  local owner; owner="$(dpkg -S /usr/bin/kubectl 2>/dev/null | cut -d: -f1 || true)"
  if [ -z "$owner" ] && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >&2 \
      && { KUBECTL=/usr/bin/kubectl; return; }
  fi
  local cache="${FAKE_KUBE_CACHE:-/var/cache/tidepool-fake-kube}"
  if [ ! -x "$cache/usr/bin/kubectl" ]; then
    mkdir -p "$cache/deb" && (cd "$cache/deb" && apt-get -o APT::Sandbox::User=root download kubernetes-client >&2) \
      && dpkg-deb -x "$cache"/deb/kubernetes-client_*.deb "$cache" || { echo "cannot get kubernetes-client" >&2; exit 2; }
  fi
  KUBECTL="$cache/usr/bin/kubectl"
}

ensure_python_kubernetes() {
  /usr/bin/python3 -c "import kubernetes" 2>/dev/null && return
  [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    python3-kubernetes >&2
  /usr/bin/python3 -c "import kubernetes" || { echo "python3-kubernetes missing" >&2; exit 2; }
}

TOKEN="tok-$RANDOM$RANDOM"
"$HERE/make_certs.sh" "$TMP/tls" --client cert-user:testers >/dev/null
printf '%s,file-user,1001\n' "file-tok-1" > "$TMP/tokens.csv"
python3 "$HERE/fake_apiserver.py" --tls-dir "$TMP/tls" --token "tester=$TOKEN" --token-file "$TMP/tokens.csv" \
  --grace-scale 0.05 --bookmark-interval 0.5 >"$TMP/fake.out" 2>"$TMP/fake.err" &
FAKE_PID=$!
for _ in $(seq 50); do [ -s "$TMP/fake.out" ] && break; sleep 0.1; done
URL="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$TMP/fake.out")" \
  || { echo "fake did not start: $(cat "$TMP/fake.err")" >&2; exit 2; }
echo "fake at $URL"
ADMIN() { curl -sf --cacert "$TMP/tls/ca.crt" -X POST "$URL/fake/$1" >/dev/null; }

cat > "$TMP/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {server: "$URL", certificate-authority: "$TMP/tls/ca.crt"}
users:
- name: tester
  user: {token: "$TOKEN"}
- name: cert-user
  user: {client-certificate: "$TMP/tls/client-cert-user.crt", client-key: "$TMP/tls/client-cert-user.key"}
- name: bad
  user: {token: "not-a-token"}
contexts:
- {name: fake, context: {cluster: fake, user: tester, namespace: default}}
- {name: fake-cert, context: {cluster: fake, user: cert-user, namespace: default}}
- {name: fake-bad, context: {cluster: fake, user: bad, namespace: default}}
current-context: fake
EOF

run_kubectl_checks() {
  ensure_kubectl
  local v; v="$("$KUBECTL" version --client --short 2>/dev/null || "$KUBECTL" version --client)"
  echo "kubectl: $KUBECTL ($v)"
  K() { "$KUBECTL" --kubeconfig "$TMP/kubeconfig" --cache-dir "$TMP/kcache" "$@"; }
  local out

  out="$(K version 2>&1)"; grep -q 'Server Version.*v1.20.2-fake' <<<"$out" \
    && pass "kubectl version sees the fake server" || fail "kubectl version: $out"

  out="$(K apply -f "$HERE/agentpool-crd.yaml" 2>&1)"
  grep -q 'customresourcedefinition.apiextensions.k8s.io/agentpools.tidepool.dev created' <<<"$out" \
    && pass "kubectl apply CRD (default client-side validation)" || fail "kubectl apply CRD: $out"
  out="$(K apply -f "$HERE/agentpool-crd.yaml" 2>&1)"
  grep -q 'agentpools.tidepool.dev unchanged' <<<"$out" \
    && pass "kubectl apply CRD again: unchanged" || fail "kubectl apply CRD again: $out"

  out="$(K api-resources 2>&1)"
  grep -Eq '^agentpools +ap +tidepool.dev/v1 +true +AgentPool' <<<"$out" \
    && pass "kubectl api-resources lists agentpools (ap)" || fail "kubectl api-resources: $out"

  out="$(K apply -f "$HERE/testdata/agentpool.yaml" 2>&1)"
  grep -q 'agentpool.tidepool.dev/gpu created' <<<"$out" && pass "kubectl apply AgentPool" \
    || fail "kubectl apply AgentPool: $out"
  out="$(K apply -f "$HERE/testdata/agentpool.yaml" 2>&1)"
  grep -q 'agentpool.tidepool.dev/gpu unchanged' <<<"$out" && pass "kubectl apply AgentPool again: unchanged" \
    || fail "kubectl apply AgentPool again: $out"
  sed 's/max_workers: 4/max_workers: 8/' "$HERE/testdata/agentpool.yaml" > "$TMP/ap8.yaml"
  out="$(K apply -f "$TMP/ap8.yaml" 2>&1)"
  grep -q 'agentpool.tidepool.dev/gpu configured' <<<"$out" && pass "kubectl apply changed AgentPool: configured" \
    || fail "kubectl apply changed AgentPool: $out"
  out="$(K get ap gpu -o 'jsonpath={.spec.max_workers} {.metadata.generation}' 2>&1)"
  [ "$out" = "8 2" ] && pass "kubectl apply patched spec (max_workers 8, generation 2)" \
    || fail "after apply: max_workers generation = '$out'"

  curl -sf --cacert "$TMP/tls/ca.crt" -H "Authorization: Bearer $TOKEN" -X PATCH \
    -H 'Content-Type: application/merge-patch+json' \
    -d '{"status":{"workers":{"ready":2,"starting":1},"queued":5}}' \
    "$URL/apis/tidepool.dev/v1/namespaces/default/agentpools/gpu/status" >/dev/null
  out="$(K get ap 2>&1)"
  grep -Eq '^NAME +READY +STARTING +QUEUED +AGE' <<<"$out" && grep -Eq '^gpu +2 +1 +5 +[0-9]+s' <<<"$out" \
    && pass "kubectl get ap: printer columns READY/STARTING/QUEUED/AGE" || fail "kubectl get ap: $out"
  out="$(K get ap gpu -o yaml 2>&1)"
  grep -q '^kind: AgentPool' <<<"$out" && grep -q 'max_workers: 8' <<<"$out" && grep -q 'queued: 5' <<<"$out" \
    && pass "kubectl get ap gpu -o yaml" || fail "kubectl get ap gpu -o yaml: $out"

  out="$(K create secret generic agent-token --from-literal=token=s3cret 2>&1)"
  grep -q 'secret/agent-token created' <<<"$out" && pass "kubectl create secret generic" \
    || fail "kubectl create secret: $out"
  out="$(K get secret agent-token -o 'jsonpath={.data.token}' 2>&1 | base64 -d 2>/dev/null)"
  [ "$out" = s3cret ] && pass "secret data round trip" || fail "secret data: '$out'"

  out="$(K create -f "$HERE/testdata/pod.yaml" 2>&1)"
  grep -q 'pod/worker-1 created' <<<"$out" && pass "kubectl create -f pod.yaml" || fail "kubectl create pod: $out"
  out="$(K run other --image=busybox --labels=pool=y --restart=Never 2>&1)"
  grep -q 'pod/other created' <<<"$out" && pass "kubectl run" || fail "kubectl run: $out"
  out="$(K get pods -l pool=x 2>&1)"
  grep -Eq '^worker-1 +0/1 +Pending +0 ' <<<"$out" && ! grep -q '^other' <<<"$out" \
    && pass "kubectl get pods -l pool=x" || fail "kubectl get pods -l pool=x: $out"
  out="$(K get pods -l 'pool in (x,y)' -o name 2>&1 | sort | tr '\n' ' ')"
  [ "$out" = "pod/other pod/worker-1 " ] && pass "kubectl get pods -l 'pool in (x,y)'" \
    || fail "kubectl get pods -l in: $out"
  out="$(K get pods -l 'pool!=x' -o name 2>&1)"
  [ "$out" = "pod/other" ] && pass "kubectl get pods -l pool!=x" || fail "kubectl get pods -l !=: $out"

  ADMIN pods/default/worker-1/phase?phase=Running
  ADMIN pods/default/other/evict
  out="$(K get pods 2>&1)"
  grep -Eq '^worker-1 +1/1 +Running' <<<"$out" && grep -Eq '^other +0/1 +Evicted' <<<"$out" \
    && pass "kubectl get pods shows Running and Evicted" || fail "kubectl get pods (Running/Evicted): $out"
  out="$(K get pods --field-selector status.phase=Running -o name 2>&1)"
  [ "$out" = "pod/worker-1" ] && pass "kubectl get pods --field-selector status.phase=Running" \
    || fail "field selector: $out"

  # A running pod goes through deletionTimestamp for its grace period (30 s x --grace-scale 0.05);
  # kubectl delete waits (list + watch with a fieldSelector) until it is gone.
  out="$(timeout 60 "$KUBECTL" --kubeconfig "$TMP/kubeconfig" --cache-dir "$TMP/kcache" delete pod worker-1 2>&1)"
  grep -q 'pod "worker-1" deleted' <<<"$out" && pass "kubectl delete pod (graceful, waited)" \
    || fail "kubectl delete pod: $out"
  out="$(K get pods 2>&1)"
  ! grep -q '^worker-1' <<<"$out" && grep -q '^other' <<<"$out" && pass "kubectl get pods: worker-1 gone" \
    || fail "kubectl get pods after delete: $out"
  out="$(K get pod worker-1 2>&1)"
  grep -q 'Error from server (NotFound): pods "worker-1" not found' <<<"$out" \
    && pass "kubectl get deleted pod: NotFound" || fail "kubectl get deleted pod: $out"

  out="$(K --context fake-bad get pods 2>&1)"; rc=$?
  [ $rc -ne 0 ] && grep -q 'Unauthorized' <<<"$out" && pass "kubectl with a bad token: Unauthorized" \
    || fail "kubectl with a bad token (rc=$rc): $out"
  out="$(K --context fake-cert get pods -o name 2>&1)"
  [ "$out" = "pod/other" ] && pass "kubectl with a client certificate" || fail "kubectl client cert: $out"
  out="$(K --token file-tok-1 get ns default -o name 2>&1)"
  [ "$out" = "namespace/default" ] && pass "kubectl with a token from --token-file" || fail "token file: $out"
  printf '%s,file-user,1001\n' "file-tok-2" > "$TMP/tokens.csv"
  out="$(K --token file-tok-1 get ns default -o name 2>&1)"
  grep -q Unauthorized <<<"$out" && [ "$(K --token file-tok-2 get ns default -o name 2>&1)" = namespace/default ] \
    && pass "token rotated in the token file: old refused, new accepted" || fail "token rotation: $out"

  out="$(K get pods -n nope 2>&1)"
  grep -q 'No resources found in nope namespace' <<<"$out" || grep -q 'namespaces "nope" not found' <<<"$out" \
    && pass "kubectl get pods -n missing namespace" || fail "missing namespace: $out"
  out="$(K create secret generic s -n nope --from-literal=a=b 2>&1)"
  grep -q 'namespaces "nope" not found' <<<"$out" && pass "kubectl create in a missing namespace: NotFound" \
    || fail "create in missing namespace: $out"

  out="$(K delete -f "$HERE/testdata/agentpool.yaml" 2>&1)"
  grep -q 'agentpool.tidepool.dev "gpu" deleted' <<<"$out" && pass "kubectl delete -f agentpool.yaml" \
    || fail "kubectl delete ap: $out"
  out="$(K get ap 2>&1)"
  grep -q 'No resources found in default namespace.' <<<"$out" && pass "kubectl get ap: none left" \
    || fail "kubectl get ap after delete: $out"
  K delete pod other --wait=false >/dev/null 2>&1
}

if [ "$MODE" != "--python-only" ]; then run_kubectl_checks; fi
if [ "$MODE" != "--kubectl-only" ]; then
  /usr/bin/python3 -c "import kubernetes" 2>/dev/null || ensure_python_kubernetes
  out="$(/usr/bin/python3 "$HERE/check_python_client.py" --url "$URL" --tls-dir "$TMP/tls" --token "$TOKEN" 2>&1)"
  echo "$out"
  passes=$((passes + $(grep -c '^PASS' <<<"$out")))
  fails=$((fails + $(grep -c '^FAIL' <<<"$out")))
  grep -Eq '^(PASS|FAIL)' <<<"$out" || fails=$((fails + 1))
fi
if [ "$MODE" != "--kubectl-only" ]; then
  # A second fake whose "kubelet" runs each pod's command as a local process.
  python3 "$HERE/fake_apiserver.py" --tls-dir "$TMP/tls" --token "tester=$TOKEN" --kubelet auto --run-pods \
    --grace-scale 0.05 >"$TMP/fake2.out" 2>>"$TMP/fake.err" &
  FAKE2_PID=$!
  for _ in $(seq 50); do [ -s "$TMP/fake2.out" ] && break; sleep 0.1; done
  URL2="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$TMP/fake2.out")"
  mkdir -p "$TMP/kubelet"
  out="$(/usr/bin/python3 "$HERE/check_python_client.py" --url "$URL2" --tls-dir "$TMP/tls" --token "$TOKEN" \
    --kubelet --work-dir "$TMP/kubelet" 2>&1)"
  echo "$out"
  kill "$FAKE2_PID"; wait "$FAKE2_PID" 2>/dev/null
  passes=$((passes + $(grep -c '^PASS' <<<"$out")))
  fails=$((fails + $(grep -c '^FAIL' <<<"$out")))
  grep -Eq '^(PASS|FAIL)' <<<"$out" || fails=$((fails + 1))
fi
if grep -q Traceback "$TMP/fake.err"; then
  fail "the fake logged a traceback:"; cat "$TMP/fake.err"
fi
echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
