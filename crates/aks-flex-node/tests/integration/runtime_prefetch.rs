//! Parallel downloads: before the installer steps run, bootstrap fetches every artifact they need
//! concurrently (bounded) into the digest cache; the steps then install from the cache, so each file is
//! downloaded once. A failed download stops bootstrap before any step has changed the root, and a
//! converged node makes no request at all.

use std::time::Duration;

use aks_flex_node::artifacts::install::CONCURRENCY;
use aks_flex_node::model::Phase;
use aks_flex_node::steps::{self, StepReport};

use crate::support::runtime::*;

fn artifact_urls() -> Vec<String> {
    let mut v = vec![runc_url(), containerd_url(), cni_url(), npd_url()];
    v.extend(["kubelet", "kubectl", "kubeadm"].map(kube_url));
    v
}

async fn bootstrap(
    server: &ArtifactServer,
    fx: &Fixtures,
    root: &std::path::Path,
) -> (Vec<StepReport>, Result<(), String>) {
    let ctx = context(
        &config_json(
            &server.base,
            fx,
            // kubeadm too, so the Kubernetes step alone has three downloads.
            serde_json::json!({"kubernetes": {"installKubeadm": true}}),
        ),
        root,
    );
    run_steps(&ctx, &steps::all_steps(), &[Phase::Identity]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_fetched_concurrently_once_each_then_installed_from_the_cache() {
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    fx.serve(&server);
    // Every artifact answers after a delay, so downloads that overlap are seen by the server.
    for u in artifact_urls() {
        server.fault(
            &u,
            Faults {
                delay: Duration::from_millis(250),
                ..Default::default()
            },
        );
    }
    let root = tempfile::tempdir().unwrap();
    let (_r, res) = bootstrap(&server, &fx, root.path()).await;
    res.unwrap();
    // Seven artifacts across five steps: the first CONCURRENCY overlap (one step alone fetches at
    // most three, the Kubernetes binaries), and never more than that.
    let max = server.max_in_flight();
    assert_eq!(
        max, CONCURRENCY as u32,
        "downloads in flight at once: {max}"
    );
    for u in artifact_urls() {
        assert_eq!(server.hits(&u), 1, "{u} was not downloaded exactly once");
    }
    assert_eq!(
        std::fs::read(root.path().join("usr/local/bin/kubeadm")).unwrap(),
        fx.kube["kubeadm"]
    );

    // Converged: no request at all.
    let hits = server.total_hits();
    let (_r, res) = bootstrap(&server, &fx, root.path()).await;
    res.unwrap();
    assert_eq!(server.total_hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_download_stops_bootstrap_before_any_step_changes_the_root() {
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    fx.serve(&server);
    server.remove_url(&cni_url());
    let root = tempfile::tempdir().unwrap();
    let (reports, res) = bootstrap(&server, &fx, root.path()).await;
    let err = res.unwrap_err();
    assert!(
        err.contains("CNISetup") && err.contains("HTTP 404") && err.contains("cni 1.5.1"),
        "{err}"
    );
    assert_eq!(reports.len(), 1, "only the failing step is reported");
    assert_eq!(reports[0].name, "CNISetup");
    // Nothing was installed or configured: only the agent's state and the download cache exist.
    for p in ["usr/bin/runc", "etc/sysctl.d", "usr/local/bin/kubelet"] {
        assert!(!root.path().join(p).exists(), "{p} was created");
    }
    // The other artifacts are in the cache for the next attempt.
    let cached = std::fs::read_dir(root.path().join("var/cache/aks-flex-node/sha256"))
        .unwrap()
        .count();
    assert_eq!(cached, 6);
}
