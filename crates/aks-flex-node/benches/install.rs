//! `make bench`: install every runtime component from a loopback artifact server into a temp root (cold),
//! compared in the same run against the floor for the same bytes (`curl` + `sha256sum` + `tar -xzf` of
//! each file, sequentially); then a re-run on the converged root (must write nothing). Prints both figures
//! and the ratio. Targets: cold <= 1.2x the floor, converged re-run <= 50 ms.
//!
//! Then the daemon's figures on that converged root: a heal pass as the daemon runs it (same context,
//! identity phase skipped; zero writes; target <= 5 ms), the status computation (target <= 20 ms), and
//! the release `agent` process itself: resident memory and CPU while idle on the production schedule,
//! and resident memory after many heal passes (target <= 10 MiB, CPU <= 0.1 %).

// The runtime tests' support (the artifact server, fixtures, configs); the bench uses part of it.
#[path = "../tests/integration/support/runtime.rs"]
#[allow(dead_code)]
mod runtime_support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aks_flex_node::engine;
use aks_flex_node::engine::{Context, Phase};
use aks_flex_node::host::Host;
use aks_flex_node::steps::{self};
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

/// Files under `root` created or changed since `before` was taken, the agent's log aside.
fn written_since(before: &BTreeMap<String, (i64, i64, u64)>, root: &Path) -> Vec<String> {
    mtimes(root)
        .into_iter()
        .filter(|(k, v)| before.get(k) != Some(v) && !k.contains("/var/log/"))
        .map(|(k, _)| k)
        .collect()
}

async fn bootstrap(cfg: Arc<aks_flex_node::config::Config>, root: &Path) -> Duration {
    let host = Arc::new(Host::new(root).unwrap());
    let started = Instant::now();
    let ctx = Context::new(cfg, host).unwrap();
    let skip = [Phase::Identity].into_iter().collect();
    let (_r, res) = engine::bootstrap(&ctx, &steps::all_steps(), &skip).await;
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
        let changed = written_since(&before, root.path());
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

    daemon_figures(cfg.clone(), &server, &fx).await;
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A heal pass and a status computation on a converged root, in process, as the daemon runs them.
async fn daemon_figures(
    cfg: Arc<aks_flex_node::config::Config>,
    server: &ArtifactServer,
    fx: &Fixtures,
) {
    let root = tempfile::tempdir().unwrap();
    bootstrap(cfg.clone(), root.path()).await;
    let host = Arc::new(Host::new(root.path()).unwrap());
    let ctx = Context::new(cfg.clone(), host).unwrap();
    let all = steps::all_steps();
    let host_pass = [Phase::Identity].into_iter().collect();
    let (_, res) = engine::bootstrap(&ctx, &all, &host_pass).await;
    res.unwrap();
    let before = mtimes(root.path());
    let mut heal = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let (_, res) = engine::bootstrap(&ctx, &all, &host_pass).await;
        res.unwrap();
        heal.push(t.elapsed());
    }
    let written = written_since(&before, root.path());
    assert!(
        written.is_empty(),
        "converged heal passes wrote: {written:?}"
    );
    println!(
        "converged heal pass (daemon's host pass):   {:>8.2} ms median of 50, 0 writes (target <= 5 ms)",
        median(heal).as_secs_f64() * 1e3
    );

    let mut status = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let st = aks_flex_node::agent::status::collect(&ctx, None).await;
        status.push(t.elapsed());
        assert!(!st.steps.is_empty(), "status saw no steps");
    }
    let first = status[0];
    println!(
        "status computation (the daemon's, each minute): {:>5.2} ms median of 20 (target <= 20 ms); the first in a process {:.1} ms (runs each tool's --version)",
        median(status).as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3
    );

    agent_process_figures(server, fx).await;
}

/// Resident memory (KiB) of a process: total, anonymous, file-backed.
fn rss_kib(pid: u32) -> (u64, u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime); `rest` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The release agent bootstrapping a temp root (identity skipped), then idle on the production schedule,
/// then after many heal passes.
async fn agent_process_figures(server: &ArtifactServer, fx: &Fixtures) {
    use tokio::io::AsyncBufReadExt;
    let idle_secs = 30u64;
    let fast_passes = 60u64;
    let cfgdir = tempfile::tempdir().unwrap();
    let config = write_config(
        cfgdir.path(),
        &config_json(&server.base, fx, serde_json::json!({})),
    );
    for (label, heal, wait) in [
        ("idle, production schedule", None, idle_secs),
        ("after heal passes every 1 s", Some("1"), fast_passes),
    ] {
        let root = tempfile::tempdir().unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aks-flex-node"));
        cmd.args(["agent", "--skip-phase", "identity", "--root"])
            .arg(root.path())
            .arg("--config")
            .arg(&config)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(h) = heal {
            cmd.env("AKS_FLEX_NODE_HEAL_INTERVAL", h);
        }
        let mut child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let started = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await {
                Ok(Ok(Some(l))) if l.contains("running as daemon") => break,
                Ok(Ok(Some(_))) => {}
                other => panic!("the agent did not bootstrap: {other:?}"),
            }
        }
        let bootstrapped = started.elapsed();
        // Keep draining its log so it never blocks on a full pipe.
        let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let peak_after_bootstrap = rss_kib(pid).0;
        let ticks0 = cpu_ticks(pid);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let ticks = cpu_ticks(pid) - ticks0;
        let hz: f64 = String::from_utf8(
            Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
        let cpu = ticks as f64 / hz / t0.elapsed().as_secs_f64() * 100.0;
        let (rss, anon, file) = rss_kib(pid);
        println!(
            "agent RSS {label} ({wait} s after bootstrap in {:.1} s): {:.1} MiB (anon {:.1}, file {:.1}; {:.1} MiB right after bootstrap), CPU {cpu:.2} % (targets <= 10 MiB, <= 0.1 % idle)",
            bootstrapped.as_secs_f64(),
            rss as f64 / 1024.0,
            anon as f64 / 1024.0,
            file as f64 / 1024.0,
            peak_after_bootstrap as f64 / 1024.0,
        );
        child.start_kill().unwrap();
        let _ = child.wait().await;
        drain.abort();
    }
}
