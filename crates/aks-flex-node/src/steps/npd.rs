//! `NPD_Installer`: node-problem-detector's binary (`/usr/bin/node-problem-detector`), its kernel monitor
//! config and unit; it authenticates with the kubelet's kubeconfig. `npd.enabled: false` skips it; so does
//! an unset `npd.enabled` when nothing can verify the tarball (with a warning: see [`npd_wanted`]).
//! Unlike the original, undo also removes the unit (ServicesEnabled's undo stops and disables it first).

use std::path::Path;

use super::install::{self, InstallArtifact, InstallTarget, Unpack};
use super::{file_action, Action, Context, Step, StepError, StepResult};
use crate::artifacts;
use crate::model::Phase;
use crate::render::npd as render;

pub struct NpdInstaller;

pub use artifacts::NpdDecision;

/// Whether NPD is installed and started: the one decision this step and `ServicesEnabled` share.
pub fn npd_wanted(ctx: &Context) -> NpdDecision {
    artifacts::npd_decision(&ctx.config, artifacts::host_arch())
}

const NAME: &str = "NPD_Installer";

/// The planned install: the binary and the kernel monitor's config from the release tarball.
fn install_of(ctx: &Context) -> InstallArtifact {
    let spec = artifacts::npd_spec(&ctx.config, artifacts::host_arch());
    InstallArtifact::new(
        spec,
        Unpack::TarGzEntries {
            entries: vec![
                (
                    "bin/node-problem-detector".into(),
                    "node-problem-detector".into(),
                ),
                (
                    "config/kernel-monitor.json".into(),
                    "kernel-monitor.json".into(),
                ),
            ],
        },
        vec![
            InstallTarget::new("node-problem-detector", render::BIN_PATH, 0o755),
            InstallTarget::new("kernel-monitor.json", render::MONITOR_PATH, 0o644),
        ],
    )
}

/// Refuse at plan time (before anything changes) when nothing can verify the NPD tarball.
fn digest_known(ctx: &Context, spec: &artifacts::ArtifactSpec) -> StepResult<()> {
    artifacts::check_digest_source(spec, ctx.config.bootstrap.offline_artifacts.as_deref())
        .map_err(|e| StepError::failed(e.to_string()))
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
        let mut actions = Vec::new();
        if let Some(mut install) = install::unless_current(ctx, install_of(ctx))? {
            // `plan` shows the blocker; bootstrap refuses in its download preparation (`artifacts`
            // below), before any step has changed anything.
            if let Err(e) = digest_known(ctx, &install.sources[0]) {
                install.blocked = Some(e.to_string());
            }
            actions.push(Action::InstallArtifact(Box::new(install)));
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
        let Some(install) = install::unless_current(ctx, install_of(ctx))? else {
            return Ok(vec![]);
        };
        digest_known(ctx, &install.sources[0])?;
        Ok(install.sources)
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
