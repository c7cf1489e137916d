# shellcheck shell=bash
# Scenario 1: a fresh node, as an operator starts it: `systemctl enable --now aks-flex-node-agent` ->
# the node is Ready on the real API server (through the AKS Entra webhooks: the node's Arc identity and its
# role assignment), and a pod runs on it with an IP from the node's range.
scenario_10_fresh_node() {
  e2e_emulator_up
  kadm delete node "$NODE_NAME" --ignore-not-found >/dev/null
  e2e_node_create
  e2e_node_boot
  local t0=$SECONDS
  node_sh systemctl enable --now aks-flex-node-agent
  local end=$((SECONDS + 300))
  until e2e_node_ready; do
    [ $SECONDS -lt $end ] || fail "the node was not Ready 300 s after the agent started" || return 1
    if [ "$(node_sh systemctl show -p ActiveState --value aks-flex-node-agent)" = failed ]; then
      fail "the agent unit failed"; return 1
    fi
    sleep 1
  done
  local ready=$((SECONDS - t0))
  e2e_log "node $NODE_NAME Ready ${ready}s after systemctl start aks-flex-node-agent"
  # The agent reports completion only once it saw Ready itself (its NodeReady step).
  e2e_wait 60 "the agent's 'bootstrap completed'" e2e_agent_completed || return 1
  for u in containerd kubelet aks-flex-node-agent; do
    [ "$(node_sh systemctl is-active "$u")" = active ] || fail "$u is not active" || return 1
  done
  local arm
  arm=$(python3 -c 'import json,sys
n=0
for l in open(sys.argv[1]):
    e=json.loads(l)
    if e["path"].startswith("/subscriptions") or e["path"].startswith("/providers"): n+=1
print(n)' "$E2E_WORK/requests.jsonl")
  local allowed
  allowed=$(grep -c '"decision":"allowed"' "$E2E_WORK/requests.jsonl" || true)
  [ "$allowed" -gt 0 ] || fail "the API server never asked the SubjectAccessReview webhook (so Azure RBAC did not gate the join)" || return 1
  e2e_figure "systemctl start aks-flex-node-agent -> node Ready: ${ready} s (warm artifact bundle; includes Arc registration, role assignments, install, kubelet start and registration)"
  e2e_figure "ARM requests during bootstrap: $arm"

  # A pod with the locally built pause image (no registry): sandbox + container through CRI, runc and CNI.
  node_sh ctr -n k8s.io images import /opt/pause-image.tar >/dev/null
  kadm apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: e2e-pause, namespace: default}
spec:
  nodeName: $NODE_NAME
  automountServiceAccountToken: false
  containers:
  - name: pause
    image: $E2E_PAUSE_IMAGE
    imagePullPolicy: Never
YAML
  e2e_wait 120 "pod e2e-pause Running" sh -c "[ \"\$($K8S_BIN/kubectl --kubeconfig $E2E_WORK/pki/admin.kubeconfig get pod e2e-pause -o jsonpath='{.status.phase}')\" = Running ]" || return 1
  local ip
  ip=$(kadm get pod e2e-pause -o jsonpath='{.status.podIP}')
  python3 -c 'import ipaddress,sys; sys.exit(0 if ipaddress.ip_address(sys.argv[1]) in ipaddress.ip_network(sys.argv[2]) else 1)' "$ip" "$POD_CIDR" ||
    fail "pod IP $ip is not in the node's range $POD_CIDR" || return 1
  e2e_log "pod e2e-pause Running with IP $ip (node range $POD_CIDR)"
}
