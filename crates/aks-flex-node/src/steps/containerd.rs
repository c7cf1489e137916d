//! `ContainerdInstaller`: containerd's binaries in `/usr/bin` (whatever the release ships: 1.7 has the v1
//! shims, 2.x does not), `/etc/containerd/config.toml` and the original's unit. Running containerd is never
//! killed; ServicesEnabled restarts it when one of its files changed.

use std::path::Path;

use super::install::{self, InstallArtifact, InstallTarget, Unpack};
use super::{file_action, Action, Context, Step, StepResult};
use crate::artifacts;
use crate::model::Phase;
use crate::render::containerd as render;

pub struct ContainerdInstaller;

const NAME: &str = "ContainerdInstaller";
/// Files every containerd release has; the record holds the complete list.
pub const REQUIRED: [&str; 3] = ["containerd", "containerd-shim-runc-v2", "ctr"];
const BIN_DIR: &str = "/usr/bin";

/// Whether this process lacks CAP_SYS_RESOURCE (bit 24 of CapEff): then containerd must restrict the
/// OOM score adjustment or every CRI pod sandbox fails.
pub fn lacks_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) == 0)
}

/// The planned install: every file under the release's `bin/` into `/usr/bin` (0755), [`REQUIRED`] among
/// them.
fn install_of(ctx: &Context) -> InstallArtifact {
    let spec = artifacts::containerd_spec(&ctx.config, artifacts::host_arch());
    let files = REQUIRED
        .iter()
        .map(|b| InstallTarget::new(*b, Path::new(BIN_DIR).join(b), 0o755))
        .collect();
    InstallArtifact::new(
        spec,
        Unpack::TarGz {
            prefix: "bin/".into(),
        },
        files,
    )
    .with_others(BIN_DIR, 0o755)
}

pub fn config_toml(ctx: &Context) -> String {
    let c = &ctx.config.containerd;
    let restrict = lacks_cap_sys_resource();
    render::config_toml(&render::ContainerdSettings {
        version: &c.version,
        pause_image: &c.pause_image,
        metrics_address: &c.metrics_address,
        restrict_oom_score_adj: restrict,
    })
}

#[async_trait::async_trait]
impl Step for ContainerdInstaller {
    fn name(&self) -> &'static str {
        NAME
    }

    fn phase(&self) -> Phase {
        Phase::Installation
    }

    async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
        let host = &ctx.host;
        let mut actions: Vec<Action> = install::unless_current(ctx, install_of(ctx))?
            .map(|a| Action::InstallArtifact(Box::new(a)))
            .into_iter()
            .collect();
        let toml = config_toml(ctx);
        if let Some(a) = file_action(
            host,
            Path::new(render::CONFIG_PATH),
            0o644,
            toml.clone(),
            false,
        )? {
            if toml.contains("restrict_oom_score_adj = true") {
                tracing::info!("this process lacks CAP_SYS_RESOURCE (container, nspawn or restricted VM): setting containerd's restrict_oom_score_adj = true so CRI pods can start");
            }
            actions.push(a);
        }
        actions.extend(file_action(
            host,
            Path::new(render::UNIT_PATH),
            0o644,
            render::unit(),
            false,
        )?);
        Ok(actions)
    }

    async fn artifacts(&self, ctx: &Context) -> StepResult<Vec<artifacts::ArtifactSpec>> {
        Ok(install::unless_current(ctx, install_of(ctx))?
            .map(|a| a.sources)
            .unwrap_or_default())
    }

    async fn after_undo(&self, _ctx: &Context) -> StepResult<Vec<Action>> {
        Ok(vec![Action::DaemonReload])
    }
}
