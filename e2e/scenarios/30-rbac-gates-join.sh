# shellcheck shell=bash
# Scenario 3: Azure RBAC really gates the join. The node's identity gets only roles without Kubernetes data
# actions (Reader, AKS Cluster Admin Role: ARM-side only), so the API server's SubjectAccessReview webhook
# gives no opinion, RBAC denies, the node cannot register, and `bootstrap` fails saying why.
scenario_30_rbac_gates_the_join() {
  e2e_node_destroy
  e2e_emulator_up
  kadm delete node "$NODE_NAME" --ignore-not-found >/dev/null
  e2e_node_create '["Reader", "Azure Kubernetes Service Cluster Admin Role"]'
  e2e_node_boot
  local out rc=0
  out=$(node_sh env AKS_FLEX_NODE_NODE_READY_TIMEOUT=40 aks-flex-node bootstrap --config /etc/aks-flex-node/config.json --no-color 2>&1) || rc=$?
  [ "$rc" -eq 1 ] || { echo "$out" >&2; fail "bootstrap exited $rc, expected 1"; return 1; }
  echo "$out" | grep -q 'bootstrap completed' && { echo "$out" >&2; fail "bootstrap said completed"; return 1; }
  echo "$out" | grep -q 'NodeReady' || { echo "$out" >&2; fail "the failure does not name the NodeReady step"; return 1; }
  echo "$out" | grep -Eq '403|[Ff]orbidden' || { echo "$out" >&2; fail "the failure does not say the API server refused the node"; return 1; }
  echo "$out" | grep -q 'azure.arc.roles' || { echo "$out" >&2; fail "the failure does not point at the role assignments"; return 1; }
  if kadm get node "$NODE_NAME" >/dev/null 2>&1; then fail "the node registered without a Kubernetes role"; return 1; fi
  grep -q '"decision":"no_opinion"' "$E2E_WORK/requests.jsonl" || fail "the webhook was never asked (or allowed everything)" || return 1
  e2e_log "without a Kubernetes data-action role: not registered, and bootstrap said: $(echo "$out" | grep -m1 -E 'could not be seen|never registered')"
}
