# shellcheck shell=bash
# Scenario 1: a fresh node, as an operator starts it: `systemctl enable --now aks-flex-node-agent` ->
# the node is Ready on the real API server (through the AKS Entra webhooks: the node's Arc identity and its
# role assignment), and a pod runs on it with an IP from the node's range.
scenario_10_fresh_node() {
  e2e_bootstrap_node || return 1
  e2e_figure "systemctl start aks-flex-node-agent -> node Ready: ${E2E_READY_SECS} s (warm artifact bundle; includes Arc registration, role assignments, install, kubelet start and registration)"
  local arm allowed
  arm=$(python3 -c 'import json,sys
n=0
for l in open(sys.argv[1]):
    e=json.loads(l)
    if e["path"].startswith("/subscriptions") or e["path"].startswith("/providers"): n+=1
print(n)' "$E2E_WORK/requests.jsonl")
  allowed=$(grep -c '"decision":"allowed"' "$E2E_WORK/requests.jsonl" || true)
  [ "$allowed" -gt 0 ] || fail "the API server never asked the SubjectAccessReview webhook (so Azure RBAC did not gate the join)" || return 1
  e2e_figure "ARM requests during bootstrap: $arm"
  e2e_run_pod || return 1
}
