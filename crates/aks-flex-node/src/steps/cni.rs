//! `CNISetup`: the CNI plugins in `/opt/cni/bin` (our config points there, not at a distro's
//! `/usr/lib/cni`), `/etc/cni/net.d` and `/var/lib/cni`, and `/etc/cni/net.d/10-bridge.conf` with this
//! node's pod range (`networking.podCIDR`). `cni.mode: none` installs the plugins but writes no config,
//! leaving networking to a cluster CNI (Cilium, Azure CNI).

use std::path::{Path, PathBuf};

use super::{file_action, Action, Context, Phase, Step, StepError, StepResult};
use crate::artifacts::{self, install};
use crate::config::CniMode;
use crate::render::cni as render;

pub struct CniSetup;

const NAME: &str = "CNISetup";
pub const BIN_DIR: &str = "/opt/cni/bin";
pub const REQUIRED: [&str; 3] = ["bridge", "host-local", "loopback"];

fn wanted() -> Vec<(PathBuf, u32)> {
    REQUIRED
        .iter()
        .map(|b| (Path::new(BIN_DIR).join(b), 0o755))
        .collect()
}

fn installed(ctx: &Context, spec: &artifacts::ArtifactSpec) -> StepResult<bool> {
    install::spec_is_current(ctx, spec, &wanted())
}

#[async_trait::async_trait]
impl Step for CniSetup {
    fn name(&self) -> &'static str {
        NAME
    }

    fn phase(&self) -> Phase {
        Phase::Installation
    }

    async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
        let host = &ctx.host;
        let spec = artifacts::cni_spec(&ctx.config, artifacts::host_arch());
        let wanted = wanted();
        let mut actions = Vec::new();
        if !installed(ctx, &spec)? {
            actions.push(install::install_action(
                &spec,
                &wanted.iter().map(|w| w.0.clone()).collect::<Vec<_>>(),
            ));
        }
        for d in ["/etc/cni/net.d", "/var/lib/cni"] {
            if !host.fs.exists(Path::new(d))? {
                actions.push(Action::EnsureDir {
                    path: d.into(),
                    mode: 0o755,
                });
            }
        }
        if ctx.config.cni.mode == CniMode::Bridge {
            let cidr = match &ctx.config.networking.pod_cidr {
                Some(c) => c.clone(),
                None => {
                    tracing::warn!("networking.podCIDR is not set: using {} like the original, which gives every node the same range; set a per-node range", render::DEFAULT_POD_CIDR);
                    render::DEFAULT_POD_CIDR.to_string()
                }
            };
            let conf = render::bridge_conf(&cidr)
                .map_err(|e| StepError::failed(format!("networking.podCIDR: {e}")))?;
            actions.extend(file_action(
                host,
                Path::new(render::CONF_PATH),
                0o644,
                conf,
                false,
            )?);
        }
        Ok(actions)
    }

    async fn artifacts(&self, ctx: &Context) -> StepResult<Vec<artifacts::ArtifactSpec>> {
        let spec = artifacts::cni_spec(&ctx.config, artifacts::host_arch());
        Ok(install::unless_installed(installed(ctx, &spec)?, spec))
    }

    async fn apply_custom(
        &self,
        ctx: &Context,
        _kind: &str,
        _detail: &serde_json::Value,
    ) -> StepResult<()> {
        let spec = artifacts::cni_spec(&ctx.config, artifacts::host_arch());
        let (fetched, staged) = install::fetch_tar_gz(ctx, NAME, &spec, |p| {
            (!p.is_empty() && !p.contains('/')).then(|| p.to_string())
        })
        .await?;
        install::install_staged_into(
            ctx,
            NAME,
            &spec,
            &fetched.sha256,
            &staged,
            Path::new(BIN_DIR),
            0o755,
            &REQUIRED,
        )
        .await?;
        Ok(())
    }
}
