//! `NPD_Installer`: node-problem-detector's binary (`/usr/bin/node-problem-detector`), its kernel monitor
//! config and unit; it authenticates with the kubelet's kubeconfig. `npd.enabled: false` skips it.
//! Unlike the original, undo also removes the unit (ServicesEnabled's undo stops and disables it first).

use std::path::{Path, PathBuf};

use super::{file_action, Action, Context, Phase, Step, StepError, StepResult};
use crate::artifacts::{self, install};
use crate::render::npd as render;

pub struct NpdInstaller;

const NAME: &str = "NPD_Installer";

fn wanted() -> Vec<(PathBuf, u32)> {
    vec![
        (render::BIN_PATH.into(), 0o755),
        (render::MONITOR_PATH.into(), 0o644),
    ]
}

/// Refuse at plan time (before anything changes) when nothing can verify the NPD tarball.
fn digest_known(ctx: &Context, spec: &artifacts::ArtifactSpec) -> StepResult<()> {
    artifacts::check_digest_source(spec, ctx.config.bootstrap.offline_artifacts.as_deref())
        .map_err(|e| StepError::failed(e.to_string()))
}

fn installed(ctx: &Context, spec: &artifacts::ArtifactSpec) -> StepResult<bool> {
    install::spec_is_current(ctx, spec, &wanted())
}

#[async_trait::async_trait]
impl Step for NpdInstaller {
    fn name(&self) -> &'static str {
        NAME
    }

    fn phase(&self) -> Phase {
        Phase::Activation
    }

    async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
        if !ctx.config.npd.enabled {
            return Ok(vec![]);
        }
        let host = &ctx.host;
        let spec = artifacts::npd_spec(&ctx.config, artifacts::host_arch());
        let wanted = wanted();
        let mut actions = Vec::new();
        if !installed(ctx, &spec)? {
            let mut action = install::install_action(
                &spec,
                &wanted.iter().map(|w| w.0.clone()).collect::<Vec<_>>(),
            );
            // `plan` shows the blocker; bootstrap refuses in its download preparation (`artifacts`
            // below), before any step has changed anything.
            if let (
                Err(e),
                Action::Custom {
                    summary, detail, ..
                },
            ) = (digest_known(ctx, &spec), &mut action)
            {
                summary.push_str(&format!(" -- BLOCKED: {e}"));
                detail["blocked"] = serde_json::Value::String(e.to_string());
            }
            actions.push(action);
        }
        let ep = super::kubelet::endpoint(ctx)?;
        actions.extend(file_action(
            host,
            Path::new(render::UNIT_PATH),
            0o644,
            render::unit(&ep.server, &ctx.config.agent.node_name),
            false,
        )?);
        Ok(actions)
    }

    async fn artifacts(&self, ctx: &Context) -> StepResult<Vec<artifacts::ArtifactSpec>> {
        if !ctx.config.npd.enabled {
            return Ok(vec![]);
        }
        let spec = artifacts::npd_spec(&ctx.config, artifacts::host_arch());
        if installed(ctx, &spec)? {
            return Ok(vec![]);
        }
        digest_known(ctx, &spec)?;
        Ok(vec![spec])
    }

    async fn apply_custom(
        &self,
        ctx: &Context,
        _kind: &str,
        _detail: &serde_json::Value,
    ) -> StepResult<()> {
        let spec = artifacts::npd_spec(&ctx.config, artifacts::host_arch());
        let (fetched, staged) = install::fetch_tar_gz(ctx, NAME, &spec, |p| match p {
            "bin/node-problem-detector" => Some("node-problem-detector".into()),
            "config/kernel-monitor.json" => Some("kernel-monitor.json".into()),
            _ => None,
        })
        .await?;
        let (bin, mon) = match (
            staged.get("node-problem-detector"),
            staged.get("kernel-monitor.json"),
        ) {
            (Some(b), Some(m)) => (b.to_path_buf(), m.to_path_buf()),
            _ => {
                return Err(StepError::failed(format!(
                    "{} does not contain bin/node-problem-detector and config/kernel-monitor.json",
                    spec.file
                )))
            }
        };
        install::install(
            ctx,
            NAME,
            "npd",
            &spec.version,
            &spec.arch,
            &fetched.sha256,
            &[
                (render::BIN_PATH.into(), bin, 0o755),
                (render::MONITOR_PATH.into(), mon, 0o644),
            ],
        )
        .await?;
        Ok(())
    }

    async fn after_undo(&self, _ctx: &Context) -> StepResult<Vec<Action>> {
        Ok(vec![Action::DaemonReload])
    }
}
