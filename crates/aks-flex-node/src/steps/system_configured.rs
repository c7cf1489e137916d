//! `SystemConfigured`: kernel modules (loaded now and at boot), sysctls (file and live values) and swap
//! (off now and in fstab). Undo restores every file it changed, turns swap back on if it turned it off,
//! and writes back the live value every sysctl had before the agent first changed it (recorded in the
//! journal just before the first `sysctl -p`).
//!
//! A module is loaded with `modprobe` only when what it provides is not available yet: a module that is
//! loaded or built into the kernel (no `/sys/module/<m>`, but `/proc/sys/net/bridge` for `br_netfilter`,
//! `overlay` in `/proc/filesystems`, or a `modules.builtin` entry) needs nothing, so such a host
//! converges and a minimal image without `kmod` works. A module that does need loading on a host
//! without `modprobe` is an error naming the module and the fix, before anything is changed.
//!
//! The `modules-load.d` file is written either way: on a host with loadable modules it is what loads
//! them again at boot, and for a built-in module systemd-modules-load (which uses libkmod, not the
//! `modprobe` program) only notes that it is built in.

use std::path::Path;

use super::{Action, Context, Step, StepError, StepResult};
use crate::engine::effects::{SWAPON, SYSCTL_PRIOR};
use crate::host::{CommandSpec, Effect};
use crate::model::Phase;
use crate::render::system::{self, MODULES, MODULES_PATH, SYSCTLS, SYSCTL_PATH};

pub struct SystemConfigured;

const NAME: &str = "SystemConfigured";
/// Undo record: `{"values": {key: prior live value, or null when the key did not exist}}`.

#[async_trait::async_trait]
impl Step for SystemConfigured {
    fn name(&self) -> &'static str {
        NAME
    }

    fn phase(&self) -> Phase {
        Phase::Installation
    }

    async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
        let host = &ctx.host;
        let mut actions = Vec::new();
        actions.extend(super::file_action(
            host,
            Path::new(MODULES_PATH),
            0o644,
            system::modules_load_conf(),
            false,
        )?);
        for m in MODULES {
            if host.module_available(m)? {
                continue;
            }
            if host.find_program("modprobe")?.is_none() {
                return Err(StepError::failed(format!(
                    "kernel module {m} is not loaded or built into this kernel, and modprobe is not installed to load it; install kmod (apt-get install kmod, or dnf/zypper install kmod), or load {m} another way, then re-run"
                )));
            }
            actions.push(Action::run(
                &["modprobe", m],
                "load kernel module",
                Effect::MutatesHost,
            ));
        }
        actions.extend(super::file_action(
            host,
            Path::new(SYSCTL_PATH),
            0o644,
            system::sysctl_conf(),
            false,
        )?);
        let mut live_differs = false;
        for (k, v) in SYSCTLS {
            if host.sysctl_value(k)?.as_deref() != Some(v) {
                live_differs = true;
            }
        }
        if live_differs {
            // Not a plain run: the live values it replaces are journaled first.
            actions.push(Action::ApplySysctls {
                file: SYSCTL_PATH.into(),
                keys: SYSCTLS.iter().map(|(k, _)| k.to_string()).collect(),
            });
        }
        if !host.active_swaps()?.is_empty() {
            actions.push(Action::SwapOff);
        }
        let fstab = Path::new("/etc/fstab");
        if let Some(text) = host.fs.read_to_string(fstab)? {
            if let Some(new) = system::fstab_without_swap(&text) {
                let mode = match host.fs.entry(fstab)? {
                    Some(crate::host::Entry::File { mode, .. }) => mode,
                    _ => 0o644,
                };
                actions.push(Action::write(fstab, mode, new));
            }
        }
        Ok(actions)
    }

    async fn undo_custom(
        &self,
        ctx: &Context,
        kind: &str,
        data: &serde_json::Value,
    ) -> StepResult<()> {
        match kind {
            SWAPON => {
                ctx.host
                    .run_checked(&CommandSpec::new("swapon").arg("-a").mutates_host())
                    .await?;
                Ok(())
            }
            SYSCTL_PRIOR => {
                // Each recorded value is written back as it was. A key that did not exist then (a
                // bridge-nf key before br_netfilter was loaded) has nothing to go back to. No
                // `sysctl --system` afterwards: the agent only ever applied its own file, whose keys are
                // all restored here, and reloading every sysctl.d file would also overwrite values an
                // administrator had set at runtime before bootstrap.
                let mut failed = Vec::new();
                let values = data["values"].as_object().cloned().unwrap_or_default();
                for (k, v) in values {
                    let Some(v) = v.as_str() else { continue };
                    let spec = CommandSpec::new("sysctl")
                        .args(["-w".to_string(), format!("{k}={v}")])
                        .mutates_host();
                    if let Err(e) = ctx.host.run_checked(&spec).await {
                        failed.push(format!("restoring {k}={v}: {e}"));
                    }
                }
                if failed.is_empty() {
                    Ok(())
                } else {
                    Err(StepError::failed(failed.join("; ")))
                }
            }
            other => Err(super::StepError::failed(format!(
                "unknown undo record {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::engine::{self, Context, UndoOp};
    use crate::host::Host;

    fn config() -> Arc<crate::config::Config> {
        engine::test_config(serde_json::json!({}))
    }

    fn put(root: &Path, p: &str, content: &str) {
        let full = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }

    async fn run(root: &Path) -> (Context, Result<(), String>) {
        let ctx = Context::new(config(), Arc::new(Host::new(root).unwrap())).unwrap();
        let (_r, res) =
            engine::bootstrap(&ctx, &[Box::new(SystemConfigured)], &BTreeSet::new()).await;
        (ctx, res.map_err(|e| e.to_string()))
    }

    async fn plan(root: &Path) -> Vec<Action> {
        let ctx = Context::new(config(), Arc::new(Host::new(root).unwrap())).unwrap();
        SystemConfigured.plan(&ctx).await.unwrap()
    }

    /// A minimal image without kmod. The sandbox record persists once the state directory exists.
    fn without_modprobe(root: &Path) {
        std::fs::create_dir_all(root.join("var/lib/aks-flex-node")).unwrap();
        Host::new(root)
            .unwrap()
            .sandbox_mark_absent("modprobe")
            .unwrap();
    }

    fn commands(root: &Path) -> Vec<String> {
        Host::new(root)
            .unwrap()
            .sandbox_record()
            .unwrap()
            .unwrap()
            .commands
    }

    /// The kernel of the real-node test: overlay and br_netfilter built in, no /sys/module entries, no
    /// /lib/modules, no modprobe. One run converges without modprobe; the next plan is empty.
    #[tokio::test]
    async fn built_in_modules_converge_in_one_run_without_modprobe() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("proc/sys/net/bridge")).unwrap();
        put(
            root,
            "/proc/filesystems",
            "nodev\tsysfs\nnodev\toverlay\n\text4\n",
        );
        without_modprobe(root);
        let (_ctx, res) = run(root).await;
        res.unwrap();
        let cmds = commands(root);
        assert!(!cmds.iter().any(|c| c.starts_with("modprobe")), "{cmds:?}");
        assert!(root.join("etc/modules-load.d/aks-flex-node.conf").exists());
        let again = plan(root).await;
        assert!(
            again.is_empty(),
            "{:?}",
            again.iter().map(Action::summary).collect::<Vec<_>>()
        );
        let (_ctx, res) = run(root).await;
        res.unwrap();
        assert_eq!(commands(root), cmds, "a converged run ran commands");
    }

    #[tokio::test]
    async fn modules_listed_in_modules_builtin_need_no_modprobe() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "/proc/sys/kernel/osrelease", "6.1.0-27-amd64\n");
        put(
            root,
            "/lib/modules/6.1.0-27-amd64/modules.builtin",
            "kernel/fs/overlayfs/overlay.ko\nkernel/net/bridge/br_netfilter.ko\n",
        );
        let actions = plan(root).await;
        assert!(
            !actions.iter().any(|a| a.summary().contains("modprobe")),
            "{:?}",
            actions.iter().map(Action::summary).collect::<Vec<_>>()
        );
    }

    /// Loadable modules not loaded yet: modprobe runs once, then the host is converged.
    #[tokio::test]
    async fn loadable_modules_are_loaded_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (_ctx, res) = run(root).await;
        res.unwrap();
        let cmds = commands(root);
        assert!(cmds.contains(&"modprobe overlay".to_string()), "{cmds:?}");
        assert!(
            cmds.contains(&"modprobe br_netfilter".to_string()),
            "{cmds:?}"
        );
        assert!(plan(root).await.is_empty());
    }

    /// A kernel with ip_forward off and the default swappiness: bootstrap sets both, a drift repair
    /// re-applies without recording the drifted value, and unbootstrap writes back exactly 0 and 60.
    #[tokio::test]
    async fn unbootstrap_restores_each_sysctl_to_its_value_before_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "/proc/sys/net/ipv4/ip_forward", "0\n");
        put(root, "/proc/sys/vm/swappiness", "60\n");
        put(root, "/proc/sys/kernel/panic", "0\n");
        let (ctx, res) = run(root).await;
        res.unwrap();
        let live = |ctx: &Context, k: &str| ctx.host.sysctl_value(k).unwrap();
        assert_eq!(live(&ctx, "net.ipv4.ip_forward").as_deref(), Some("1"));
        assert_eq!(live(&ctx, "vm.swappiness").as_deref(), Some("0"));
        drop(ctx);

        // Someone changes a value at runtime; the next run puts the agent's value back.
        Host::new(root)
            .unwrap()
            .run(
                &CommandSpec::new("sysctl")
                    .args(["-w", "vm.swappiness=30"])
                    .mutates_host(),
            )
            .await
            .unwrap();
        let (ctx, res) = run(root).await;
        res.unwrap();
        assert_eq!(live(&ctx, "vm.swappiness").as_deref(), Some("0"));
        let records = ctx
            .journal_snapshot()
            .undo
            .iter()
            .filter(|e| matches!(&e.op, UndoOp::Custom { kind, .. } if kind == SYSCTL_PRIOR))
            .count();
        assert_eq!(
            records, 1,
            "the drift repair recorded the prior values again"
        );
        drop(ctx);

        let ctx = Context::new(config(), Arc::new(Host::new(root).unwrap())).unwrap();
        let report = engine::unbootstrap(&ctx, &[Box::new(SystemConfigured)]).await;
        assert!(report.failures.is_empty(), "{report:?}");
        // The sandbox record file is gone with the agent's state; the host still holds the kernel.
        assert_eq!(live(&ctx, "net.ipv4.ip_forward").as_deref(), Some("0"));
        assert_eq!(live(&ctx, "vm.swappiness").as_deref(), Some("60"));
        assert_eq!(live(&ctx, "kernel.panic").as_deref(), Some("0"));
        let cmds = ctx.host.sandbox_record().unwrap().unwrap().commands;
        assert!(
            cmds.contains(&"sysctl -w net.ipv4.ip_forward=0".to_string())
                && cmds.contains(&"sysctl -w vm.swappiness=60".to_string()),
            "{cmds:?}"
        );
        assert!(!cmds.iter().any(|c| c == "sysctl --system"), "{cmds:?}");
    }

    #[tokio::test]
    async fn a_module_to_load_without_modprobe_is_a_clear_error_before_any_change() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // overlay is built in, br_netfilter is a loadable module that is not loaded.
        put(root, "/proc/filesystems", "nodev\toverlay\n");
        without_modprobe(root);
        let ctx = Context::new(config(), Arc::new(Host::new(root).unwrap())).unwrap();
        let err = SystemConfigured.plan(&ctx).await.unwrap_err().to_string();
        assert!(err.contains("br_netfilter"), "{err}");
        assert!(err.contains("install kmod"), "{err}");
        assert!(!err.contains("overlay"), "{err}");
        let (_ctx, res) = run(root).await;
        assert!(res.is_err());
        assert!(!root.join("etc/modules-load.d/aks-flex-node.conf").exists());
    }
}
