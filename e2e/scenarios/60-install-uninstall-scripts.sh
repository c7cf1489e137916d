# shellcheck shell=bash
# The operator's path: `scripts/install.sh --binary` into a fresh node (the config, written first, is the
# operator's), `systemctl enable --now aks-flex-node-agent` -> Ready, then `scripts/uninstall.sh --force`
# (it stops the agent and runs unbootstrap itself) -> the node's disk matches its manifest from before the
# install, and Azure holds no Arc machine.
scenario_60_install_and_uninstall_scripts() {
  e2e_node_destroy
  e2e_emulator_up
  kadm delete node "$NODE_NAME" --ignore-not-found >/dev/null
  E2E_NO_AGENT=1 e2e_node_create
  local kit=$NODE_DIR/opt/e2e-install
  mkdir -p "$kit"
  install -m 0755 "$E2E_TOP/scripts/install.sh" "$E2E_TOP/scripts/uninstall.sh" "$AGENT_BIN" "$kit/"
  install -m 0644 "$E2E_TOP/packaging/aks-flex-node-agent.service" "$kit/"
  e2e_node_boot
  local before
  before=$(e2e_node_manifest)

  local install=(bash /opt/e2e-install/install.sh --binary /opt/e2e-install/aks-flex-node
                 --unit /opt/e2e-install/aks-flex-node-agent.service --yes)
  node_sh "${install[@]}" >&2 || { fail "install.sh --binary failed"; return 1; }
  node_sh aks-flex-node version >/dev/null || { fail "aks-flex-node version does not run after install"; return 1; }
  local installed
  installed=$(e2e_node_manifest)
  node_sh "${install[@]}" >&2 || { fail "a second install.sh failed"; return 1; }
  [ "$(e2e_node_manifest)" = "$installed" ] || { diff <(echo "$installed") <(e2e_node_manifest) | head -n 20 >&2; fail "a second install.sh changed the node"; return 1; }

  node_sh systemctl enable --now aks-flex-node-agent
  e2e_wait 300 "the node Ready" e2e_node_ready || return 1
  e2e_wait 60 "the agent's 'bootstrap completed'" e2e_agent_completed || return 1
  e2e_log "installed by install.sh: node Ready"

  node_sh bash /opt/e2e-install/uninstall.sh --force >&2 || { fail "uninstall.sh --force failed"; return 1; }
  local after
  after=$(e2e_node_manifest)
  if [ "$after" != "$before" ]; then
    diff <(echo "$before") <(echo "$after") | head -n 40 >&2
    fail "the node's disk differs from before install.sh"; return 1
  fi
  local now
  now=$(e2e_azure_counts)
  [ "${now%% *}" = 0 ] || { fail "Azure still holds ${now%% *} Arc machine(s)"; return 1; }
  e2e_log "uninstall.sh --force: disk identical to before install.sh, Azure clean"
}
