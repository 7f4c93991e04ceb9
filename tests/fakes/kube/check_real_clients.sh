#!/usr/bin/env bash
# Checks the FAKE Kubernetes API server with real clients nobody here wrote: Debian's kubectl
# (package kubernetes-client, 1.20) and Debian's python3-kubernetes. Prints PASS/FAIL lines and
# exits non-zero on any failure. Root may install the packages (see ensure_* below).
#   tests/fakes/kube/check_real_clients.sh [--kubectl-only | --python-only]
# Env: KUBECTL=path (a kubectl 1.20 to use instead of Debian's), KEEP=1 (keep the temp dir).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEPLOY="$(cd "$HERE/../../.." && pwd)/deploy/kubernetes"   # the manifests Tidepool ships
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

# Debian's kubectl (debian_kubectl.sh: never Google's, whichever owns /usr/bin/kubectl).
ensure_kubectl() {
  if [ -n "${KUBECTL:-}" ]; then return; fi
  KUBECTL="$("$HERE/debian_kubectl.sh")" || { echo "cannot get kubernetes-client" >&2; exit 2; }
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
python3 "$HERE/fake_apiserver.py" --pod-log-dir "$TMP/pod-logs" --tls-dir "$TMP/tls" --token "tester=$TOKEN" --token-file "$TMP/tokens.csv" \
  --grace-scale 0.05 --bookmark-interval 0.5 >"$TMP/fake.out" 2>"$TMP/fake.err" &
FAKE_PID=$!
# Up to 30 s: python and its TLS set-up start slowly on a loaded machine (CI runs tests two at a time).
for _ in $(seq 300); do [ -s "$TMP/fake.out" ] && break; sleep 0.1; done
URL="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$TMP/fake.out")" \
  || { echo "fake did not start: $(cat "$TMP/fake.err")" >&2; exit 2; }
echo "fake at $URL"
ADMIN() { curl -sf --cacert "$TMP/tls/ca.crt" -X POST "$URL/fake/$1" >/dev/null; }
# ADMINJ METHOD PATH [JSON]: an admin call with a JSON body; prints the answer
ADMINJ() { curl -sf --cacert "$TMP/tls/ca.crt" -X "$1" ${3:+-d "$3"} "$URL/fake/$2"; }

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

  out="$(K apply -f "$DEPLOY/crd.yaml" 2>&1)"
  grep -q 'customresourcedefinition.apiextensions.k8s.io/agentpools.tidepool.dev created' <<<"$out" \
    && pass "kubectl apply deploy/kubernetes/crd.yaml (default client-side validation)" || fail "kubectl apply CRD: $out"
  out="$(K apply -f "$DEPLOY/crd.yaml" 2>&1)"
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
  sed 's/max_agents: 4/max_agents: 8/' "$HERE/testdata/agentpool.yaml" > "$TMP/ap8.yaml"
  out="$(K apply -f "$TMP/ap8.yaml" 2>&1)"
  grep -q 'agentpool.tidepool.dev/gpu configured' <<<"$out" && pass "kubectl apply changed AgentPool: configured" \
    || fail "kubectl apply changed AgentPool: $out"
  out="$(K get ap gpu -o 'jsonpath={.spec.auto_scaler.max_agents} {.metadata.generation}' 2>&1)"
  [ "$out" = "8 2" ] && pass "kubectl apply patched spec (max_agents 8, generation 2)" \
    || fail "after apply: max_agents generation = '$out'"

  out="$(K get ap 2>&1)"
  grep -Eq '^NAME +READY +IDLE +BUSY +STARTING +QUEUED +AGE$' <<<"$out" && grep -Eq '^gpu +[0-9]+s$' <<<"$out" \
    && pass "kubectl get ap without a status: empty columns" || fail "kubectl get ap (no status): $out"
  curl -sf --cacert "$TMP/tls/ca.crt" -H "Authorization: Bearer $TOKEN" -X PATCH \
    -H 'Content-Type: application/merge-patch+json' \
    -d '{"status":{"workers":{"idle":2,"busy":0,"starting":1},"queued":5,"lastError":"quota exceeded",
         "conditions":[{"type":"ScalingUp","status":"True","reason":"Demand","message":"",
                        "lastTransitionTime":"2024-01-01T00:00:00Z"},
                       {"type":"Ready","status":"False","reason":"BackendFailing","message":"",
                        "lastTransitionTime":"2024-01-01T00:00:00Z"}]}}' \
    "$URL/apis/tidepool.dev/v1/namespaces/default/agentpools/gpu/status" >/dev/null
  out="$(K get ap 2>&1)"
  grep -Eq '^NAME +READY +IDLE +BUSY +STARTING +QUEUED +AGE$' <<<"$out" \
    && grep -Eq '^gpu +False +2 +0 +1 +5 +[0-9]+s$' <<<"$out" \
    && pass "kubectl get ap: READY (the Ready condition, a JSONPath filter) IDLE BUSY STARTING QUEUED AGE" \
    || fail "kubectl get ap: $out"
  out="$(K get ap -o wide 2>&1)"
  grep -Eq '^NAME +READY +IDLE +BUSY +STARTING +QUEUED +ERROR +AGE$' <<<"$out" \
    && grep -Eq '^gpu +False +2 +0 +1 +5 +quota exceeded +[0-9]+s$' <<<"$out" \
    && pass "kubectl get ap -o wide: the ERROR column (priority 1)" || fail "kubectl get ap -o wide: $out"
  out="$(K get ap gpu -o yaml 2>&1)"
  grep -q '^kind: AgentPool' <<<"$out" && grep -q 'max_agents: 8' <<<"$out" && grep -q 'queued: 5' <<<"$out" \
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
  grep -q 'No resources found in nope namespace' <<<"$out" \
    && pass "kubectl get pods -n missing namespace: none (a list is not refused)" || fail "missing namespace: $out"
  out="$(K create secret generic s -n nope --from-literal=a=b 2>&1)"
  grep -q 'namespaces "nope" not found' <<<"$out" && pass "kubectl create in a missing namespace: NotFound" \
    || fail "create in missing namespace: $out"

  admission_kubectl_checks
  out="$(K delete -f "$HERE/testdata/agentpool.yaml" 2>&1)"
  grep -q 'agentpool.tidepool.dev "gpu" deleted' <<<"$out" && pass "kubectl delete -f agentpool.yaml" \
    || fail "kubectl delete ap: $out"
  out="$(K get ap 2>&1)"
  grep -q 'No resources found in default namespace.' <<<"$out" && pass "kubectl get ap: none left" \
    || fail "kubectl get ap after delete: $out"
  K delete pod other --wait=false >/dev/null 2>&1
  deploy_kubectl_checks
}

# RBAC denials (/fake/forbid), a pods ResourceQuota (/fake/quota) and pod validation, as kubectl
# prints the API server's answers; /fake/pods-ever.
admission_kubectl_checks() {
  local out want
  ADMINJ POST forbid '{"user":"tester","verb":"create","resource":"pods","namespace":"default"}' >/dev/null
  out="$(K run denied --image=busybox --restart=Never 2>&1)"
  want='Error from server (Forbidden): pods is forbidden: User "tester" cannot create resource "pods" in API group "" in the namespace "default"'
  grep -qxF "$want" <<<"$out" && pass "forbid create pods: kubectl run says Forbidden in RBAC's words" \
    || fail "forbid create pods: $out"
  out="$(K --context fake-cert run cert-pod --image=busybox --restart=Never 2>&1)"
  grep -q 'pod/cert-pod created' <<<"$out" && pass "a rule for user tester does not deny cert-user" \
    || fail "forbid for another user: $out"
  ADMINJ POST forbid '{"verb":"list","resource":"pods"}' >/dev/null
  out="$(K get pods 2>&1)"
  want='Error from server (Forbidden): pods is forbidden: User "tester" cannot list resource "pods" in API group "" in the namespace "default"'
  grep -qxF "$want" <<<"$out" && pass "forbid list pods: kubectl get pods Forbidden" || fail "forbid list: $out"
  out="$(K get pods --all-namespaces 2>&1)"
  want='Error from server (Forbidden): pods is forbidden: User "tester" cannot list resource "pods" in API group "" at the cluster scope'
  grep -qxF "$want" <<<"$out" && pass "forbid list pods: --all-namespaces 'at the cluster scope'" \
    || fail "forbid list all namespaces: $out"
  ADMINJ POST forbid '{"verb":"get","resource":"pods"}' >/dev/null
  out="$(K get pod other 2>&1)"
  want='Error from server (Forbidden): pods "other" is forbidden: User "tester" cannot get resource "pods" in API group "" in the namespace "default"'
  grep -qxF "$want" <<<"$out" && pass "forbid get pods: the pod's name in the message" || fail "forbid get: $out"
  out="$(ADMINJ GET forbid | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["rules"]))')"
  [ "$out" = 3 ] && pass "GET /fake/forbid: 3 rules" || fail "GET /fake/forbid: $out"
  ADMINJ DELETE forbid >/dev/null
  out="$(K get pods -o name 2>&1)"
  grep -qx 'pod/other' <<<"$out" && pass "DELETE /fake/forbid: kubectl get pods allowed again" \
    || fail "after DELETE /fake/forbid: $out"
  K delete pod cert-pod --wait=false >/dev/null 2>&1

  K create namespace quota-ns >/dev/null 2>&1
  ADMINJ POST quota '{"namespace":"quota-ns","pods":1,"name":"pod-quota"}' >/dev/null
  out="$(K run q1 -n quota-ns --image=busybox --restart=Never 2>&1)"
  grep -q 'pod/q1 created' <<<"$out" || fail "quota 1: first pod: $out"
  out="$(K run q2 -n quota-ns --image=busybox --restart=Never 2>&1)"
  want='Error from server (Forbidden): pods "q2" is forbidden: exceeded quota: pod-quota, requested: pods=1, used: pods=1, limited: pods=1'
  grep -qxF "$want" <<<"$out" && pass "quota pods=1: the second pod is Forbidden 'exceeded quota'" \
    || fail "quota: $out"
  ADMIN "pods/quota-ns/q1/phase?phase=Succeeded"
  out="$(K run q2 -n quota-ns --image=busybox --restart=Never 2>&1)"
  grep -q 'pod/q2 created' <<<"$out" && pass "quota: a Succeeded pod does not count" || fail "quota after q1 ended: $out"
  ADMINJ DELETE "quota?namespace=quota-ns" >/dev/null
  out="$(K run q3 -n quota-ns --image=busybox --restart=Never 2>&1)"
  grep -q 'pod/q3 created' <<<"$out" && pass "DELETE /fake/quota: no limit" || fail "quota cleared: $out"
  K delete namespace quota-ns >/dev/null 2>&1

  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\nspec:\n  containers: [{name: agent}]\n' \
    > "$TMP/noimage.yaml"
  out="$(K create -f "$TMP/noimage.yaml" 2>&1)"
  grep -qxF 'The Pod "noimage" is invalid: spec.containers[0].image: Required value' <<<"$out" \
    && pass "a container without an image: kubectl says The Pod is invalid" || fail "no image: $out"
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: nocontainers}\nspec: {}\n' > "$TMP/nocontainers.yaml"
  out="$(K apply -f "$TMP/nocontainers.yaml" 2>&1)"
  grep -qxF 'The Pod "nocontainers" is invalid: spec.containers: Required value' <<<"$out" \
    && pass "no containers (kubectl apply): spec.containers: Required value" || fail "no containers: $out"
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec:\n  containers: [{image: busybox}]\n' \
    > "$TMP/badname.yaml"
  out="$(K create -f "$TMP/badname.yaml" 2>&1)"
  want="* metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
  grep -qxF 'The Pod "Bad_Name" is invalid: ' <<<"$out" && grep -qxF "$want" <<<"$out" \
    && grep -qxF '* spec.containers[0].name: Required value' <<<"$out" \
    && pass "a bad name and a nameless container: one line per cause (details.causes)" || fail "bad name: $out"

  out="$(ADMINJ GET pods-ever | python3 -c '
import json, sys
print(" ".join(sorted("%s/%s:%s" % (p["namespace"], p["name"], p["deleted"]) for p in json.load(sys.stdin))))')"
  [ "$out" = "default/cert-pod:True default/other:False default/worker-1:True quota-ns/q1:True quota-ns/q2:True quota-ns/q3:True" ] \
    && pass "GET /fake/pods-ever: every pod created, deleted or not (none of the refused ones)" \
    || fail "pods-ever: $out"
}

# deploy/kubernetes/: the manifests Tidepool ships. The CRD exists (applied above), so one apply of
# the folder makes the rest; kubectl get ap shows a status written with python3-kubernetes.
deploy_kubectl_checks() {
  local out want missing=""
  out="$(K apply -f "$DEPLOY/" 2>&1)"
  for want in 'customresourcedefinition.apiextensions.k8s.io/agentpools.tidepool.dev unchanged' \
      'agentpool.tidepool.dev/cpu created' 'serviceaccount/tidepool-server created' \
      'role.rbac.authorization.k8s.io/tidepool-server created' \
      'rolebinding.rbac.authorization.k8s.io/tidepool-server created' 'configmap/tidepool-server-config created' \
      'persistentvolumeclaim/tidepool-data created' 'deployment.apps/tidepool-server created' \
      'service/tidepool-server created'; do
    grep -qxF "$want" <<<"$out" || missing="$missing [$want]"
  done
  [ -z "$missing" ] && [ "$(wc -l <<<"$out")" = 9 ] \
    && pass "kubectl apply -f deploy/kubernetes/: the four files' 9 objects" || fail "apply deploy/kubernetes:$missing $out"
  out="$(K get deployment tidepool-server -o 'jsonpath={.spec.template.spec.serviceAccountName} {.spec.template.spec.containers[0].args}' 2>&1)"
  grep -q '^tidepool-server .*--k8s-pools' <<<"$out" && pass "the server's Deployment: its ServiceAccount and --k8s-pools" \
    || fail "deployment: $out"
  out="$(K get ap cpu 2>&1)"
  grep -Eq '^cpu +[0-9]+s$' <<<"$out" && pass "kubectl get ap cpu: no status yet" || fail "get ap cpu: $out"
  ensure_python_kubernetes
  /usr/bin/python3 "$HERE/check_python_client.py" --url "$URL" --tls-dir "$TMP/tls" --token "$TOKEN" \
      --patch-agentpool-status default/cpu >"$TMP/patch.out" 2>&1 \
    && pass "python3-kubernetes patch_namespaced_custom_object_status on the example AgentPool" \
    || fail "patch status: $(cat "$TMP/patch.out")"
  out="$(K get ap cpu 2>&1)"
  grep -Eq '^NAME +READY +IDLE +BUSY +STARTING +QUEUED +AGE$' <<<"$out" && grep -Eq '^cpu +True +2 +3 +1 +4 +[0-9]+s$' <<<"$out" \
    && pass "kubectl get ap cpu: the status written by python3-kubernetes (READY True, IDLE 2, BUSY 3)" \
    || fail "kubectl get ap cpu after the status patch: $out"
  out="$(K get ap cpu -o wide 2>&1)"
  grep -Eq '^cpu +True +2 +3 +1 +4 +create tp-cpu-x: quota exceeded +[0-9]+s$' <<<"$out" \
    && pass "kubectl get ap cpu -o wide: ERROR" || fail "kubectl get ap cpu -o wide: $out"
  out="$(K apply -f "$DEPLOY/" 2>&1)"
  [ "$(grep -c ' unchanged$' <<<"$out")" = 9 ] && [ "$(wc -l <<<"$out")" = 9 ] \
    && grep -Eq '^cpu +True +2 +3 +1 +4 ' <<<"$(K get ap cpu 2>&1)" \
    && pass "kubectl apply -f deploy/kubernetes/ again: all 9 unchanged, the status kept" || fail "apply again: $out"
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
  python3 "$HERE/fake_apiserver.py" --pod-log-dir "$TMP/pod-logs-2" --tls-dir "$TMP/tls" --token "tester=$TOKEN" --kubelet auto --run-pods \
    --grace-scale 0.05 >"$TMP/fake2.out" 2>>"$TMP/fake.err" &
  FAKE2_PID=$!
  for _ in $(seq 300); do [ -s "$TMP/fake2.out" ] && break; sleep 0.1; done
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
