//! `NPD_Installer`: node-problem-detector's binary (`/usr/bin/node-problem-detector`), its kernel monitor
//! config and unit; it authenticates with the kubelet's kubeconfig. `npd.enabled: false` skips it; so does
//! an unset `npd.enabled` when nothing can verify the tarball (with a warning: see [`npd_wanted`]).
//! Unlike the original, undo also removes the unit (ServicesEnabled's undo stops and disables it first).

use std::path::{Path, PathBuf};

use super::{file_action, Action, Context, Step, StepError, StepResult};
use crate::artifacts::{self, install};
use crate::model::Phase;
use crate::render::npd as render;

pub struct NpdInstaller;

pub use artifacts::NpdDecision;

/// Whether NPD is installed and started: the one decision this step and `ServicesEnabled` share.
pub fn npd_wanted(ctx: &Context) -> NpdDecision {
    artifacts::npd_decision(&ctx.config, artifacts::host_arch())
}

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

    fn notes(&self, ctx: &Context) -> Vec<String> {
        match npd_wanted(ctx) {
            NpdDecision::Skipped { warning } => vec![warning],
            _ => Vec::new(),
        }
    }

    async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
        if npd_wanted(ctx) != NpdDecision::Wanted {
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
        if npd_wanted(ctx) != NpdDecision::Wanted {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(npd: serde_json::Value, extra: serde_json::Value) -> crate::config::Config {
        let mut v = serde_json::json!({
            "azure": {
                "subscriptionId": "00000000-0000-0000-0000-000000000000",
                "tenantId": "11111111-1111-1111-1111-111111111111",
                "targetCluster": {
                    "resourceId": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c",
                    "location": "westus"
                }
            },
            "kubernetes": { "version": "1.30.6" },
            "npd": npd,
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        let env = |_: &str| None;
        let opts = crate::config::LoadOptions {
            hostname: "n1".into(),
            env: &env,
        };
        crate::config::load_str(&v.to_string(), "test", &opts)
            .unwrap()
            .config
    }

    fn decide(npd: serde_json::Value, extra: serde_json::Value) -> NpdDecision {
        artifacts::npd_decision(&cfg(npd, extra), "amd64")
    }

    #[test]
    fn unset_without_a_digest_source_is_skipped_with_a_warning_saying_how_to_enable_it() {
        let NpdDecision::Skipped { warning } = decide(serde_json::json!({}), serde_json::json!({}))
        else {
            panic!("expected a skip");
        };
        assert!(
            warning.starts_with("node-problem-detector skipped: no verified SHA-256 for v1.35.1")
                && warning.contains("set npd.sha256")
                && warning.contains("npd.enabled: false silences this"),
            "{warning}"
        );
    }

    #[test]
    fn a_digest_source_or_an_explicit_choice_decides() {
        let pin = "a".repeat(64);
        let none = serde_json::json!({});
        assert_eq!(
            decide(serde_json::json!({"sha256": pin}), none.clone()),
            NpdDecision::Wanted
        );
        assert_eq!(
            decide(
                serde_json::json!({}),
                serde_json::json!({"artifacts": {"mirror": "http://127.0.0.1:9"}})
            ),
            NpdDecision::Wanted
        );
        // Explicit true: wanted, so the missing digest is refused rather than skipped.
        assert_eq!(
            decide(serde_json::json!({"enabled": true}), none.clone()),
            NpdDecision::Wanted
        );
        assert_eq!(
            decide(serde_json::json!({"enabled": false, "sha256": pin}), none),
            NpdDecision::Disabled
        );
    }
}
