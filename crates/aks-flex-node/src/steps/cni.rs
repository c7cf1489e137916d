//! `CNISetup`: the CNI plugins in `/opt/cni/bin` (our config points there, not at a distro's
//! `/usr/lib/cni`), `/etc/cni/net.d` and `/var/lib/cni`, and `/etc/cni/net.d/10-bridge.conflist` (bridge +
//! portmap) with this node's pod range: `networking.podCIDR`, or a /24 derived from the node name (see
//! `config`); the plan says which. A `10-bridge.conf` (the original's, or this agent's before the
//! conflist) is removed, journaled, since it would shadow the conflist. `cni.mode: none` installs the
//! plugins but writes no config, leaving networking to a cluster CNI (Cilium, Azure CNI).

use std::path::Path;

use super::install::{self, InstallArtifact, InstallTarget, Unpack};
use super::{file_action, Action, Context, Step, StepError, StepResult};
use crate::artifacts;
use crate::config::CniMode;
use crate::model::Phase;
use crate::render::cni as render;

pub struct CniSetup;

const NAME: &str = "CNISetup";
pub const BIN_DIR: &str = "/opt/cni/bin";
pub const REQUIRED: [&str; 4] = ["bridge", "host-local", "loopback", "portmap"];

/// The planned install: every top-level file of the plugins' tarball into [`BIN_DIR`] (0755), [`REQUIRED`]
/// among them.
fn install_of(ctx: &Context) -> InstallArtifact {
    let spec = artifacts::cni_spec(&ctx.config, artifacts::host_arch());
    let files = REQUIRED
        .iter()
        .map(|b| InstallTarget::new(*b, Path::new(BIN_DIR).join(b), 0o755))
        .collect();
    InstallArtifact::new(spec, Unpack::TarGz { prefix: "".into() }, files)
        .with_others(BIN_DIR, 0o755)
}

/// The runtime uses the first network config in `/etc/cni/net.d` by file name: say so when another one
/// sorts before ours (the bridge network would not be used).
fn warn_about_shadowing(host: &crate::host::Host) -> StepResult<()> {
    let ours = Path::new(render::CONFLIST_PATH)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let legacy = Path::new(render::LEGACY_CONF_PATH)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    for name in host.fs.list_dir(Path::new("/etc/cni/net.d"))? {
        let is_config = [".conf", ".conflist", ".json"]
            .iter()
            .any(|e| name.ends_with(e));
        if is_config && name.as_str() < ours && name != legacy {
            tracing::warn!(
                "/etc/cni/net.d/{name} sorts before {ours}: the container runtime uses the first network config by name, so pods would not get the bridge network; remove it or set cni.mode: none"
            );
        }
    }
    Ok(())
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
        let mut actions: Vec<Action> = install::unless_current(ctx, install_of(ctx))?
            .map(|a| Action::InstallArtifact(Box::new(a)))
            .into_iter()
            .collect();
        for d in ["/etc/cni/net.d", "/var/lib/cni"] {
            if !host.fs.exists(Path::new(d))? {
                actions.push(Action::EnsureDir {
                    path: d.into(),
                    mode: 0o755,
                });
            }
        }
        if ctx.config.cni.mode == CniMode::Bridge {
            let range = ctx
                .config
                .networking
                .node_pod_range
                .as_ref()
                .ok_or_else(|| {
                    StepError::failed("no pod range for the bridge network (config not validated?)")
                })?;
            let conf = render::bridge_conflist(&range.cidr)
                .map_err(|e| StepError::failed(format!("networking.podCIDR: {e}")))?;
            if let Some(a) =
                file_action(host, Path::new(render::CONFLIST_PATH), 0o644, conf, false)?
            {
                actions
                    .push(a.with_note(format!("pod range {} from {}", range.cidr, range.source)));
            }
            let legacy = Path::new(render::LEGACY_CONF_PATH);
            if host.fs.entry(legacy)?.is_some() {
                actions.push(Action::RemoveFile {
                    path: legacy.into(),
                });
            }
            warn_about_shadowing(host)?;
        }
        Ok(actions)
    }

    async fn artifacts(&self, ctx: &Context) -> StepResult<Vec<artifacts::ArtifactSpec>> {
        Ok(install::unless_current(ctx, install_of(ctx))?
            .map(|a| a.sources)
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::host::Host;

    fn context(root: &Path, networking: serde_json::Value) -> Context {
        let cfg = crate::engine::test_config(serde_json::json!({
            "agent": {"nodeName": "flex-node-7"},
            "networking": networking
        }));
        Context::new(cfg, Arc::new(Host::new(root).unwrap())).unwrap()
    }

    fn summaries(actions: &[Action]) -> Vec<String> {
        actions.iter().map(Action::summary).collect()
    }

    #[tokio::test]
    async fn plan_says_which_pod_range_and_where_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let derived = crate::config::parse::derived_pod_range("flex-node-7").to_string();
        let ctx = context(dir.path(), serde_json::json!({}));
        let s = summaries(&CniSetup.plan(&ctx).await.unwrap());
        let line = s
            .iter()
            .find(|l| l.contains("10-bridge.conflist"))
            .expect("conflist write");
        assert!(line.contains(&format!("pod range {derived}")), "{line}");
        assert!(
            line.contains("derived from the node name \"flex-node-7\""),
            "{line}"
        );

        let ctx = context(dir.path(), serde_json::json!({"podCIDR": "10.250.1.0/24"}));
        let s = summaries(&CniSetup.plan(&ctx).await.unwrap());
        assert!(
            s.iter()
                .any(|l| l.contains("pod range 10.250.1.0/24 from networking.podCIDR")),
            "{s:?}"
        );
    }

    #[tokio::test]
    async fn the_legacy_single_plugin_conf_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("etc/cni/net.d/10-bridge.conf");
        std::fs::create_dir_all(legacy.parent().unwrap()).unwrap();
        std::fs::write(&legacy, "{}").unwrap();
        let ctx = context(dir.path(), serde_json::json!({}));
        let actions = CniSetup.plan(&ctx).await.unwrap();
        assert!(
            actions.iter().any(|a| matches!(a, Action::RemoveFile { path } if path == Path::new(render::LEGACY_CONF_PATH))),
            "{:?}",
            summaries(&actions)
        );
    }
}
