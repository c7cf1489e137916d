//! `unbootstrap`: stop the agent for real, optionally delete the Node object, take the node's workload down,
//! undo the journal, and optionally verify that nothing the agent installed or caused is left.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams};

use super::bootstrap::context;
use super::{CliError, CmdResult};
use crate::config::Config;
use crate::engine;
use crate::engine::journal::Original;
use crate::engine::{Journal, UndoOp};
use crate::host::{CommandSpec, Host, HostError, ServiceOp};
use crate::render::kubelet as rk;
use crate::steps::{self, drain, node_ready};

/// The agent's own unit (packaging/aks-flex-node-agent.service).
pub const AGENT_UNIT: &str = "aks-flex-node-agent.service";

pub async fn unbootstrap(
    cfg: Arc<Config>,
    host: Arc<Host>,
    verify: bool,
    delete_node: bool,
) -> CmdResult {
    // A running (or restarting) agent would re-bootstrap what we remove: stop it first, in any state.
    let masked = stop_agent(&host).await.map_err(CliError::failed)?;
    let ctx = context(cfg.clone(), host.clone())?;
    // The stopped daemon's runtime files: its status file and metrics socket.
    let mut problems: Vec<String> = remove_daemon_files(&host, &cfg);
    let journal = ctx.journal_snapshot();
    let bootstrapped = !journal.is_empty();
    let expected_gone = created_paths(&journal);

    let node = &cfg.agent.node_name;
    if delete_node && bootstrapped {
        if let Err(e) = delete_node_object(&host, node).await {
            problems.push(format!(
                "the Node object {node} is left in the cluster: {e}; delete it with `kubectl delete node {node}`"
            ));
        }
    }

    let report = engine::unbootstrap(&ctx, &steps::all_steps()).await;
    if let Some(msg) = &report.nothing_to_do {
        println!("{msg}");
    }
    if masked {
        let unmask = CommandSpec::new("systemctl")
            .args(["unmask", "--runtime", AGENT_UNIT])
            .mutates_host();
        if let Err(e) = host.run_checked(&unmask).await {
            problems.push(format!("unmasking {AGENT_UNIT}: {e}"));
        }
    }
    for s in &report.undone {
        println!("{s:<24} removed");
    }
    for k in &report.kept {
        println!("kept {k}");
    }
    for f in &report.failures {
        eprintln!("could not undo: {f}");
    }
    if bootstrapped && !delete_node {
        println!(
            "The Node object {node} stays in the cluster: delete it with `kubectl delete node {node}` (or unbootstrap with --delete-node)."
        );
    }
    if verify {
        let left = leftovers(&host, &expected_gone, &report.kept).await;
        if left.is_empty() {
            println!("verify: nothing the agent installed or caused is left");
        } else {
            for l in &left {
                eprintln!("left behind: {l}");
            }
            problems.push(format!(
                "verify found {} thing(s) left behind (listed above)",
                left.len()
            ));
        }
    }
    if !report.failures.is_empty() {
        problems.push(format!(
            "unbootstrap left {} item(s) behind (listed above); fix the cause and run it again",
            report.failures.len()
        ));
    }
    for p in &problems {
        eprintln!("error: {p}");
    }
    if problems.is_empty() {
        if bootstrapped {
            tracing::info!("unbootstrap completed");
        }
        Ok(())
    } else {
        Err(CliError::failed(anyhow::anyhow!(
            "unbootstrap did not finish cleanly"
        )))
    }
}

/// Stop and disable the agent's unit in whatever state it is (active, activating, waiting to restart,
/// failed): `systemctl stop` also cancels a pending automatic restart, which an `is-active` check would
/// miss (the unit is `activating`, not `active`, while it waits). Then a runtime mask keeps anything from
/// starting it while unbootstrap runs. The mask comes last: `disable` of a masked unit leaves its
/// `.wants/` link behind (seen with the Debian package's unit in /lib/systemd/system). Returns whether it
/// was masked (unmask afterwards).
async fn stop_agent(host: &Host) -> Result<bool, HostError> {
    // One `systemctl show` says it all (load, active and enablement state).
    let status = host.unit_status(AGENT_UNIT).await?;
    if status.load_state == "not-found" && !status.enabled() {
        return Ok(false); // not installed as a service
    }
    if status.active_state != "inactive" {
        tracing::info!(
            "stopping {AGENT_UNIT} ({}) so it cannot re-bootstrap the node",
            status.describe()
        );
        host.service(ServiceOp::Stop, AGENT_UNIT).await?;
    }
    if status.enabled() {
        host.service(ServiceOp::Disable, AGENT_UNIT).await?;
    }
    let mask = CommandSpec::new("systemctl")
        .args(["mask", "--runtime", AGENT_UNIT])
        .mutates_host();
    let masked = match host.run_checked(&mask).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(
                "could not mask {AGENT_UNIT} for the duration ({e}); it is stopped and disabled"
            );
            false
        }
    };
    Ok(masked)
}

/// Remove what the daemon keeps under /run while it runs (it is stopped by now); problems are returned.
fn remove_daemon_files(host: &Host, cfg: &Config) -> Vec<String> {
    let mut paths = vec![PathBuf::from(crate::agent::status::STATUS_PATH)];
    if let Some(crate::config::MetricsAddress::Unix(p)) = &cfg.agent.metrics_address {
        paths.push(p.clone());
    }
    let mut problems: Vec<String> = paths
        .iter()
        .filter_map(|p| {
            host.fs
                .remove_file(p)
                .err()
                .map(|e| format!("removing {}: {e}", p.display()))
        })
        .collect();
    // Its directory too, once empty (the token cache, if any, is removed with the identity phase).
    if let Err(e) = host.fs.remove_dir_if_empty(Path::new("/run/aks-flex-node")) {
        problems.push(format!("removing /run/aks-flex-node: {e}"));
    }
    problems
}

/// Delete the Node object with the kubelet's own credential, while the identity still exists. The kubelet
/// is stopped first, or it would register the node again.
async fn delete_node_object(host: &Host, node: &str) -> Result<(), String> {
    if host.is_sandbox() {
        println!("sandbox root: no cluster, so no Node object to delete");
        return Ok(());
    }
    let Some(kubeconfig) = host
        .fs
        .read_to_string(Path::new(rk::KUBECONFIG_PATH))
        .map_err(|e| e.to_string())?
    else {
        return Err(format!(
            "{} is missing, so there is no credential to delete it with",
            rk::KUBECONFIG_PATH
        ));
    };
    if host
        .unit_state("kubelet")
        .await
        .map(|s| s.active)
        .unwrap_or(false)
    {
        host.service(ServiceOp::Stop, "kubelet")
            .await
            .map_err(|e| format!("stopping the kubelet first: {e}"))?;
    }
    let client = node_ready::kubelet_client(&kubeconfig).await?;
    let nodes: Api<Node> = Api::all(client);
    match nodes.delete(node, &DeleteParams::default()).await {
        Ok(_) => {
            println!("deleted the Node object {node} from the cluster");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {
            println!("the Node object {node} was already gone");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Paths bootstrap created (absent before it), including the runtime directories the services created.
pub fn created_paths(journal: &Journal) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in &journal.undo {
        match &e.op {
            UndoOp::RestorePath {
                path,
                original: Original::Absent,
            } => v.push(path.clone()),
            UndoOp::RemoveDir { path } => v.push(path.clone()),
            UndoOp::Custom { data, .. } => {
                if let Ok(absent) = serde_json::from_value::<Vec<PathBuf>>(data["absent"].clone()) {
                    v.extend(absent);
                }
            }
            _ => {}
        }
    }
    v.push(PathBuf::from(crate::host::STATE_DIR));
    v.sort();
    v.dedup();
    v
}

/// What is still there of what bootstrap installed or caused.
async fn leftovers(host: &Host, expected_gone: &[PathBuf], kept: &[String]) -> Vec<String> {
    let mut left = Vec::new();
    for p in expected_gone {
        let shown = p.display().to_string();
        if kept.iter().any(|k| k.starts_with(&shown)) {
            continue; // reported as kept: something else put files there
        }
        if matches!(host.fs.entry(p), Ok(Some(_))) {
            left.push(format!("{shown} (created by bootstrap)"));
        }
    }
    if let Ok(st) = host.unit_state(AGENT_UNIT).await {
        if st.enabled || st.active {
            left.push(format!(
                "{AGENT_UNIT} is still {}",
                if st.active { "active" } else { "enabled" }
            ));
        }
    }
    for unit in ["kubelet", "containerd", "node-problem-detector"] {
        if let Ok(st) = host.unit_status(unit).await {
            if st.active_state == "active" || st.active_state == "activating" {
                left.push(format!("unit {unit} is {}", st.describe()));
            }
        }
    }
    left.extend(drain::runtime_leftovers(host).await);
    left
}
