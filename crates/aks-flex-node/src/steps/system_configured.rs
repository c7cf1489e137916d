//! `SystemConfigured`: kernel modules (loaded now and at boot), sysctls (file and live values) and swap
//! (off now and in fstab). Undo restores every file it changed, turns swap back on if it turned it off,
//! and reloads sysctl files (live values set by the removed file stay until reboot).

use std::path::Path;

use super::{Action, Context, Phase, Step, StepResult};
use crate::host::{CommandSpec, Effect};
use crate::render::system::{self, MODULES, MODULES_PATH, SYSCTLS, SYSCTL_PATH};

pub struct SystemConfigured;

const NAME: &str = "SystemConfigured";

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
            if !host.module_loaded(m)? {
                actions.push(Action::run(
                    &["modprobe", m],
                    "load kernel module",
                    Effect::MutatesHost,
                ));
            }
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
            actions.push(Action::run(
                &["sysctl", "-p", SYSCTL_PATH],
                "apply kernel settings",
                Effect::MutatesHost,
            ));
        }
        if !host.active_swaps()?.is_empty() {
            actions.push(Action::Custom {
                kind: "swapoff".into(),
                summary: "turn swap off now: swapoff -a".into(),
                detail: serde_json::json!({ "argv": ["swapoff", "-a"] }),
            });
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

    async fn apply_custom(
        &self,
        ctx: &Context,
        kind: &str,
        _detail: &serde_json::Value,
    ) -> StepResult<()> {
        match kind {
            "swapoff" => {
                // Journal first: if swapoff half-works and we crash, undo still turns swap back on.
                ctx.record_undo(
                    NAME,
                    "swapon",
                    serde_json::json!({ "argv": ["swapon", "-a"] }),
                )?;
                ctx.host
                    .run_checked(&CommandSpec::new("swapoff").arg("-a").mutates_host())
                    .await?;
                Ok(())
            }
            other => Err(super::StepError::failed(format!("unknown action {other}"))),
        }
    }

    async fn undo_custom(
        &self,
        ctx: &Context,
        kind: &str,
        _data: &serde_json::Value,
    ) -> StepResult<()> {
        match kind {
            "swapon" => {
                ctx.host
                    .run_checked(&CommandSpec::new("swapon").arg("-a").mutates_host())
                    .await?;
                Ok(())
            }
            other => Err(super::StepError::failed(format!(
                "unknown undo record {other}"
            ))),
        }
    }

    async fn after_undo(&self, _ctx: &Context) -> StepResult<Vec<Action>> {
        Ok(vec![Action::run(
            &["sysctl", "--system"],
            "reload kernel settings",
            Effect::MutatesHost,
        )])
    }
}
