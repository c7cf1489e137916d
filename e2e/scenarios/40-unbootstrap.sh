# shellcheck shell=bash
# Unbootstrap a live node exactly: a Ready node with a running pod -> `unbootstrap --verify --delete-node`
# exits 0; the node's disk is identical to its manifest from before the agent first ran; no process, mount,
# netns, bridge or iptables chain of the node's runtime is left; the Node object is gone; Azure holds no Arc
# machine and only the seeded role assignments; the kubelet's old token no longer gets anything.
scenario_40_unbootstrap_leaves_the_machine_as_it_was() {
  e2e_node_destroy
  e2e_emulator_up
  local seeded
  seeded=$(e2e_azure_counts)
  kadm delete node "$NODE_NAME" --ignore-not-found >/dev/null
  e2e_node_create
  e2e_node_boot
  local before sysctls_before
  before=$(e2e_node_manifest)
  # The node shares the host's kernel: the agent's sysctls must come back to these values.
  sysctls_before=$(e2e_agent_sysctls)
  # Same bootstrap as an operator's, on this node (e2e_bootstrap_node would make a new one).
  node_sh systemctl enable --now aks-flex-node-agent
  e2e_wait 300 "the node Ready" e2e_node_ready || return 1
  e2e_wait 60 "the agent's 'bootstrap completed'" e2e_agent_completed || return 1
  e2e_run_pod || return 1
  local token
  token=$(node_sh aks-flex-node token | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["token"])')

  local out rc=0
  out=$(node_sh aks-flex-node unbootstrap --verify --delete-node --no-color 2>&1) || rc=$?
  # shellcheck disable=SC2001
  echo "$out" | sed 's/^/    unbootstrap: /' >&2
  [ "$rc" -eq 0 ] || { fail "unbootstrap --verify --delete-node exited $rc"; return 1; }
  echo "$out" | grep -q 'verify: nothing the agent installed or caused is left' || { fail "verify did not report a clean machine"; return 1; }

  local after
  after=$(e2e_node_manifest)
  if [ "$after" != "$before" ]; then
    diff <(echo "$before") <(echo "$after") | head -n 40 >&2
    fail "the node's disk differs from before bootstrap"; return 1
  fi
  local sysctls_after
  sysctls_after=$(e2e_agent_sysctls)
  [ "$sysctls_after" = "$sysctls_before" ] || { diff <(echo "$sysctls_before") <(echo "$sysctls_after") >&2; fail "sysctls the agent set were not restored"; return 1; }
  local procs
  procs=$(node_sh sh -c 'ps -eo comm= | grep -E "^(kubelet|containerd|containerd-shim|pause)" || true')
  [ -z "$procs" ] || { fail "runtime processes left: $procs"; return 1; }
  if node_sh sh -c 'grep -E " /(var/lib/kubelet|var/lib/containerd|run/containerd)" /proc/self/mountinfo'; then
    fail "runtime mounts left"; return 1
  fi
  if node_sh sh -c 'ls /run/netns 2>/dev/null | grep -q "^cni-"'; then fail "pod network namespaces left"; return 1; fi
  if ip link show cni0 >/dev/null 2>&1; then fail "the cni0 bridge is left"; return 1; fi
  local chains
  chains=$( (iptables-save; ip6tables-save) 2>/dev/null | grep -E '^:(KUBE-|CNI-)' || true)
  [ -z "$chains" ] || { fail "iptables chains left: $chains"; return 1; }
  if kadm get node "$NODE_NAME" >/dev/null 2>&1; then fail "the Node object is still in the cluster"; return 1; fi
  local now
  now=$(e2e_azure_counts)
  [ "${now%% *}" = 0 ] || { fail "Azure still holds ${now%% *} Arc machine(s)"; return 1; }
  [ "${now#* }" = "${seeded#* }" ] || { fail "role assignments: ${now#* } now, ${seeded#* } seeded"; return 1; }
  # The kubelet's old token: its identity has no role left (the API server caches answers for 10 s).
  local code=
  for _ in $(seq 30); do
    code=$(curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "https://127.0.0.1:$APISERVER_PORT/api/v1/nodes")
    case $code in 401|403) break ;; esac
    sleep 1
  done
  case $code in 401|403) ;; *) fail "the kubelet's old token still gets HTTP $code"; return 1 ;; esac
  e2e_log "unbootstrap: disk identical to before, runtime gone, Node deleted, Azure clean, old token refused ($code)"
}
