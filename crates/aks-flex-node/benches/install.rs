//! `make bench`: install every runtime component from a loopback artifact server into a temp root (cold),
//! compared in the same run against the floor for the same bytes (`curl` + `sha256sum` + `tar -xzf` of
//! each file, sequentially); then a re-run on the converged root (must write nothing). Prints both figures
//! and the ratio. Targets: cold <= 1.2x the floor, converged re-run <= 50 ms.

#[path = "../tests/runtime_support/mod.rs"]
mod runtime_support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aks_flex_node::host::Host;
use aks_flex_node::steps::{self, Context, Phase};
use runtime_support::*;

fn mtimes(root: &Path) -> BTreeMap<String, (i64, i64, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
            }
            out.insert(
                p.display().to_string(),
                (md.mtime(), md.mtime_nsec(), md.len()),
            );
        }
    }
    out
}

async fn bootstrap(cfg: Arc<aks_flex_node::config::Config>, root: &Path) -> Duration {
    let host = Arc::new(Host::new(root).unwrap());
    let started = Instant::now();
    let ctx = Context::new(cfg, host).unwrap();
    let skip = [Phase::Identity].into_iter().collect();
    let (_r, res) = steps::bootstrap(&ctx, &steps::all_steps(), &skip).await;
    res.unwrap();
    started.elapsed()
}

fn floor(server: &ArtifactServer, urls: &[(String, bool)]) -> Duration {
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    for (i, (url, is_tar)) in urls.iter().enumerate() {
        let path = format!("/{}", url.split_once("://").unwrap().1);
        let file = work.path().join(format!("f{i}"));
        let ok = Command::new("curl")
            .args(["-sfL", "-o"])
            .arg(&file)
            .arg(format!("{}{path}", server.base))
            .status()
            .unwrap()
            .success();
        assert!(ok, "curl {url}");
        assert!(Command::new("sha256sum")
            .arg(&file)
            .output()
            .unwrap()
            .status
            .success());
        if *is_tar {
            let dir = work.path().join(format!("x{i}"));
            std::fs::create_dir(&dir).unwrap();
            assert!(Command::new("tar")
                .arg("-C")
                .arg(&dir)
                .arg("-xzf")
                .arg(&file)
                .status()
                .unwrap()
                .success());
        }
    }
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let fx = match Fixtures::build(true, true) {
        Ok(f) => f,
        Err(reason) => {
            eprintln!("bench skipped: {reason}");
            return;
        }
    };
    let server = ArtifactServer::start().await;
    fx.serve(&server);
    let cfg = Arc::new(load_config(&config_json(
        &server.base,
        &fx,
        serde_json::json!({}),
    )));
    let mut urls = vec![
        (runc_url(), false),
        (containerd_url(), true),
        (cni_url(), true),
        (npd_url(), true),
    ];
    for b in ["kubelet", "kubectl", "kubeadm"] {
        urls.push((kube_url(b), false));
    }
    let bytes: usize = fx.runc.len()
        + fx.containerd_tgz.len()
        + fx.cni_tgz.len()
        + fx.npd_tgz.len()
        + fx.kube.values().map(Vec::len).sum::<usize>();

    let runs = 3;
    let (mut cold, mut fl, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        fl.push(floor(&server, &urls));
        let root = tempfile::tempdir().unwrap();
        cold.push(bootstrap(cfg.clone(), root.path()).await);
        let before = mtimes(root.path());
        warm.push(bootstrap(cfg.clone(), root.path()).await);
        let after = mtimes(root.path());
        let changed: Vec<_> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v) && !k.contains("/var/log/"))
            .map(|(k, _)| k.clone())
            .collect();
        assert!(
            changed.is_empty(),
            "the converged re-run wrote: {changed:?}"
        );
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (c, f, w) = (median(&mut cold), median(&mut fl), median(&mut warm));
    println!(
        "artifacts: {} files, {:.1} MiB",
        urls.len(),
        bytes as f64 / 1048576.0
    );
    println!(
        "floor (curl + sha256sum + tar, sequential): {:>8.1} ms",
        f.as_secs_f64() * 1e3
    );
    println!(
        "aks-flex-node cold install (all steps):     {:>8.1} ms",
        c.as_secs_f64() * 1e3
    );
    println!(
        "ratio cold / floor:                         {:>8.2}x (target <= 1.20x)",
        c.as_secs_f64() / f.as_secs_f64()
    );
    println!(
        "converged re-run (zero writes):             {:>8.1} ms (target <= 50 ms)",
        w.as_secs_f64() * 1e3
    );
}
