#!/usr/bin/env bash
# Uninstall aks-flex-node, in the right order:
#   1. stop (and disable) the aks-flex-node-agent service, so it cannot re-bootstrap what is removed;
#   2. run `aks-flex-node unbootstrap`: it undoes the bootstrap (runtime, kubelet, Arc registration, role
#      assignments) from its journal; if it fails, nothing else is removed and the exit code is 1;
#   3. remove exactly what scripts/install.sh recorded in /var/lib/aks-flex-node-install/manifest: a file
#      only while it still has the SHA-256 recorded at install time (a changed file is kept, and said so),
#      a directory only when empty (unless --purge), and a file it replaced is put back.
# What install.sh did not install (the Azure CLI, an Arc agent installed some other way, your config) is
# left alone, and said so.
#
#   curl -fsSL https://raw.githubusercontent.com/aks-flex-node/aks-flex-node/main/scripts/uninstall.sh | sudo bash -s -- --force
#   sudo scripts/uninstall.sh            # asks first
#
# Exit codes: 0 everything recorded was removed (or is a directory still holding your files);
# 1 something could not be removed or was kept because it changed, or unbootstrap failed; 2 usage.
set -euo pipefail

PROG=uninstall.sh
ROOT="${AKS_FLEX_NODE_INSTALL_ROOT:-/}"
BIN_PATH=/usr/local/bin/aks-flex-node
UNIT_NAME=aks-flex-node-agent.service
CONFIG=/etc/aks-flex-node/config.json
JOURNAL=/var/lib/aks-flex-node/journal.json
STATE_DIR=/var/lib/aks-flex-node-install
MANIFEST="$STATE_DIR/manifest"

FORCE=0
PURGE=0
SKIP_UNBOOTSTRAP=0
DRY_RUN=0

usage() {
  cat <<EOF
Usage: $PROG [--force] [--purge] [--config PATH] [--skip-unbootstrap] [--dry-run]

  --force             Do not ask for confirmation
  --purge             Also delete the contents of the directories install.sh created
                      (/etc/aks-flex-node with your config, /var/log/aks-flex-node with the agent's logs)
  --config PATH       The config unbootstrap reads (default $CONFIG)
  --skip-unbootstrap  Do not run unbootstrap: only remove the installed files. The node's runtime, kubelet
                      and Azure resources stay; only for a node you clean up some other way
  --dry-run           Print what would be done; change nothing

Environment: AKS_FLEX_NODE_INSTALL_ROOT (default /): uninstall from under this directory (tests); with a
root other than /, systemctl and apt-get are never run (they are printed instead), and unbootstrap runs
only if <root>$BIN_PATH exists (with --root <root>).
EOF
}

log() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --force | -f | --yes | -y) FORCE=1; shift ;;
    --purge) PURGE=1; shift ;;
    --config) CONFIG="${2:?--config needs a path}"; shift 2 ;;
    --config=*) CONFIG="${1#*=}"; shift ;;
    --skip-unbootstrap) SKIP_UNBOOTSTRAP=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --help | -h) usage; exit 0 ;;
    *) usage >&2; printf 'error: unknown option: %s\n' "$1" >&2; exit 2 ;;
  esac
done

ROOT="${ROOT%/}"
REAL_ROOT=1
if [ -n "$ROOT" ]; then
  REAL_ROOT=0
  [ -d "$ROOT" ] || die "AKS_FLEX_NODE_INSTALL_ROOT=$ROOT is not a directory"
  ROOT="$(cd "$ROOT" && pwd -P)"
  [ "$ROOT" != / ] || { ROOT=""; REAL_ROOT=1; }
fi
r() { printf '%s%s' "$ROOT" "$1"; }

host_cmd() {
  if [ "$DRY_RUN" = 1 ]; then
    log "would run: $*"
  elif [ "$REAL_ROOT" = 0 ]; then
    log "skipped (install root $ROOT is not /): $*"
  else
    log "running: $*"
    "$@"
  fi
}

if [ "$REAL_ROOT" = 1 ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
  die "must run as root: use sudo (or --dry-run to see what it would do)"
fi

if [ ! -f "$(r "$MANIFEST")" ]; then
  log "No install manifest at $MANIFEST: nothing here was installed by install.sh, so there is nothing to remove."
  if [ "$REAL_ROOT" = 1 ] && command -v dpkg-query >/dev/null 2>&1 &&
    dpkg-query -W -f='${Status}' aks-flex-node 2>/dev/null | grep -q 'install ok installed'; then
    log "aks-flex-node is installed from its Debian package: run 'sudo aks-flex-node unbootstrap', then 'sudo apt-get remove aks-flex-node'."
  elif [ -e "$(r "$BIN_PATH")" ]; then
    log "$BIN_PATH exists but was installed some other way: run 'sudo aks-flex-node unbootstrap', then remove it yourself."
  fi
  exit 0
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/aks-flex-node-uninstall.XXXXXXXX")"
trap 'rm -rf "$TMP"' EXIT
grep -v '^#' "$(r "$MANIFEST")" | awk -F'\t' 'NF >= 5' >"$TMP/entries" || true

log "This will stop aks-flex-node-agent, run 'aks-flex-node unbootstrap' (the node leaves the cluster and"
log "Azure, and its runtime is removed), then remove what install.sh installed${ROOT:+ under $ROOT}:"
awk -F'\t' '{ printf "  %s%s\n", $4, ($1 == "dir" ? "/" : ($1 == "pkg" ? " (Debian package)" : "")) }' "$TMP/entries"
if [ "$FORCE" = 0 ] && [ "$DRY_RUN" = 0 ]; then
  if ! { exec 3</dev/tty; } 2>/dev/null; then
    die "no terminal to ask on: re-run with --force"
  fi
  printf 'Continue? [y/N] ' >/dev/tty
  answer=""
  read -r answer <&3 || true
  exec 3<&-
  case "$answer" in
    y | Y | yes | YES) ;;
    *) log "Nothing was changed."; exit 1 ;;
  esac
fi

# 1. Stop the agent first: a running agent would re-bootstrap what unbootstrap removes.
if [ "$REAL_ROOT" = 1 ] && [ "$DRY_RUN" = 0 ] && ! command -v systemctl >/dev/null 2>&1; then
  log "no systemctl: no service to stop"
elif [ "$REAL_ROOT" = 1 ] && [ "$DRY_RUN" = 0 ] && [ ! -d /run/systemd/system ]; then
  log "systemd is not running: no service to stop"
else
  host_cmd systemctl stop "$UNIT_NAME" || warn "could not stop $UNIT_NAME (unbootstrap stops it too)"
  host_cmd systemctl disable "$UNIT_NAME" || warn "could not disable $UNIT_NAME"
fi

# 2. Unbootstrap, with the binary install.sh installed, while it is still there.
if [ "$SKIP_UNBOOTSTRAP" = 1 ]; then
  log "unbootstrap skipped (--skip-unbootstrap): the node's runtime and Azure resources are left as they are"
elif [ "$REAL_ROOT" = 0 ] && [ ! -x "$(r "$BIN_PATH")" ]; then
  log "skipped (install root $ROOT is not / and has no $BIN_PATH): aks-flex-node unbootstrap"
elif [ ! -e "$(r "$JOURNAL")" ]; then
  log "no $JOURNAL: this machine was never bootstrapped, nothing to unbootstrap"
else
  [ -x "$(r "$BIN_PATH")" ] ||
    die "$JOURNAL says this node is bootstrapped but $BIN_PATH is missing: reinstall it (install.sh) and run this again; nothing was removed"
  [ -f "$(r "$CONFIG")" ] ||
    die "unbootstrap needs the config the node was bootstrapped with, and $CONFIG is missing: put it back (or pass --config PATH) and run this again; nothing was removed"
  cmd=("$(r "$BIN_PATH")" unbootstrap --config "$(r "$CONFIG")")
  [ "$REAL_ROOT" = 1 ] || cmd+=(--root "$ROOT")
  if [ "$DRY_RUN" = 1 ]; then
    log "would run: ${cmd[*]}"
  else
    log "running: ${cmd[*]}"
    if ! "${cmd[@]}"; then
      die "aks-flex-node unbootstrap failed (see above): fix the cause and run this again; nothing was removed, so the tool is still there to finish the job"
    fi
  fi
fi

# 3. Remove what the manifest lists, files first, in reverse order of installation.
FAILED=0
KEPT_CHANGED=0
UNIT_REMOVED=0
: >"$TMP/left"
sha_of() { sha256sum "$1" | awk '{print $1}'; }

tac "$TMP/entries" | awk -F'\t' '$1 == "file"' >"$TMP/files"
tac "$TMP/entries" | awk -F'\t' '$1 == "dir"' >"$TMP/dirs"
awk -F'\t' '$1 == "pkg"' "$TMP/entries" >"$TMP/pkgs"

while IFS=$'\t' read -r _kind _mode sha path backup; do
  real="$(r "$path")"
  if [ ! -e "$real" ] && [ ! -L "$real" ]; then
    log "already gone: $path"
  elif [ -L "$real" ] || [ ! -f "$real" ] || [ "$(sha_of "$real")" != "$sha" ]; then
    warn "kept $path: it changed since install.sh installed it (sha256 no longer $sha); remove it yourself if it is not needed"
    KEPT_CHANGED=1
    printf 'file\t%s\t%s\t%s\t%s\n' "$_mode" "$sha" "$path" "$backup" >>"$TMP/left"
    continue
  elif [ "$DRY_RUN" = 1 ]; then
    log "would remove $path"
  elif rm -f "$real"; then
    log "removed $path"
    case "$path" in */"$UNIT_NAME") UNIT_REMOVED=1 ;; esac
  else
    warn "could not remove $path"
    FAILED=1
    printf 'file\t%s\t%s\t%s\t%s\n' "$_mode" "$sha" "$path" "$backup" >>"$TMP/left"
    continue
  fi
  if [ "$backup" != - ]; then
    if [ ! -f "$(r "$backup")" ]; then
      warn "the file $path replaced was saved as $backup, which is gone: it cannot be put back"
    elif [ "$DRY_RUN" = 1 ]; then
      log "would put back the original $path from $backup"
    elif mv -f "$(r "$backup")" "$real"; then
      log "put back the original $path (saved by install.sh before it replaced it)"
    else
      warn "could not put back $path from $backup"
      FAILED=1
    fi
  fi
done <"$TMP/files"

while IFS=$'\t' read -r _kind _mode _sha path _backup; do
  real="$(r "$path")"
  if [ ! -d "$real" ]; then
    log "already gone: $path/"
  elif [ "$PURGE" = 1 ]; then
    if [ "$DRY_RUN" = 1 ]; then
      log "would remove $path/ and everything in it (--purge)"
    elif rm -rf "$real"; then
      log "removed $path/ and everything in it (--purge)"
    else
      warn "could not remove $path/"
      FAILED=1
      printf 'dir\t%s\t-\t%s\t-\n' "$_mode" "$path" >>"$TMP/left"
    fi
  elif [ -n "$(find "$real" -mindepth 1 -maxdepth 1 -print -quit)" ]; then
    # Not a failure: the directory now holds your files (config, logs), so it is yours; no longer tracked.
    log "kept $path/: it holds files install.sh did not put there ($(find "$real" -mindepth 1 -maxdepth 1 -printf '%f ' | head -c 200)); --purge removes them"
  elif [ "$DRY_RUN" = 1 ]; then
    log "would remove $path/"
  elif rmdir "$real"; then
    log "removed $path/"
  else
    warn "could not remove $path/"
    FAILED=1
    printf 'dir\t%s\t-\t%s\t-\n' "$_mode" "$path" >>"$TMP/left"
  fi
done <"$TMP/dirs"

while IFS=$'\t' read -r _kind _mode _sha pkg _backup; do
  if [ "$pkg" = azcmagent ] && [ "$REAL_ROOT" = 1 ] && [ "$DRY_RUN" = 0 ] && command -v azcmagent >/dev/null 2>&1; then
    # unbootstrap already disconnected it; this only clears what is left locally.
    azcmagent disconnect --force-local-only >/dev/null 2>&1 || true
  fi
  if host_cmd apt-get remove -y "$pkg"; then
    [ "$REAL_ROOT" = 0 ] || [ "$DRY_RUN" = 1 ] || log "removed the Debian package $pkg (install.sh --with-arc-agent installed it)"
    [ "$REAL_ROOT" = 1 ] || printf 'pkg\t-\t-\t%s\t-\n' "$pkg" >>"$TMP/left"
  else
    warn "could not remove the Debian package $pkg"
    FAILED=1
    printf 'pkg\t-\t-\t%s\t-\n' "$pkg" >>"$TMP/left"
  fi
done <"$TMP/pkgs"

if [ "$UNIT_REMOVED" = 1 ]; then
  host_cmd systemctl daemon-reload || warn "systemctl daemon-reload failed"
fi

# The manifest: gone with the rest, or rewritten to list what is left (a re-run then retries just that).
if [ "$DRY_RUN" = 1 ]; then
  log "would remove $MANIFEST once everything it lists is gone"
elif [ -s "$TMP/left" ]; then
  {
    printf '# aks-flex-node install manifest v1: what is left after uninstall.sh\n'
    printf '# kind\tmode\tsha256\tpath\tbackup\n'
    cat "$TMP/left"
  } >"$(r "$MANIFEST").new"
  mv -f "$(r "$MANIFEST").new" "$(r "$MANIFEST")"
  log "kept $MANIFEST: it lists what is left"
else
  rm -f "$(r "$MANIFEST")"
  log "removed $MANIFEST"
  # The backup tree's empty directories (the files in it were put back above).
  if [ -d "$(r "$STATE_DIR/backup")" ]; then
    find "$(r "$STATE_DIR/backup")" -depth -type d -empty -delete 2>/dev/null || true
  fi
  if [ -d "$(r "$STATE_DIR/backup")" ]; then
    warn "kept $STATE_DIR/backup: it still holds files"
  elif rmdir "$(r "$STATE_DIR")" 2>/dev/null; then
    log "removed $STATE_DIR/"
  fi
fi

# What was not ours.
left_alone=()
if [ "$REAL_ROOT" = 1 ] && command -v az >/dev/null 2>&1; then
  left_alone+=("the Azure CLI (az)")
fi
if ! grep -q '^pkg	-	-	azcmagent	' "$TMP/entries"; then
  for p in /usr/bin/azcmagent /opt/azcmagent/bin/azcmagent; do
    if [ -x "$(r "$p")" ]; then
      left_alone+=("the Azure Arc agent (azcmagent): remove it with 'sudo apt-get remove azcmagent' if nothing else uses it")
      break
    fi
  done
fi
if [ -e "$(r /var/lib/aks-flex-node)" ]; then
  left_alone+=("/var/lib/aks-flex-node (the agent's own state, which unbootstrap manages)")
fi
for item in "${left_alone[@]+"${left_alone[@]}"}"; do
  log "left alone (not installed by install.sh): $item"
done

if [ "$FAILED" = 1 ] || [ "$KEPT_CHANGED" = 1 ]; then
  printf 'error: uninstall did not remove everything install.sh installed (see above); what is left is listed in %s\n' "$MANIFEST" >&2
  exit 1
fi
if [ "$DRY_RUN" = 1 ]; then
  log "dry run: nothing was changed"
else
  log "aks-flex-node is uninstalled."
fi
