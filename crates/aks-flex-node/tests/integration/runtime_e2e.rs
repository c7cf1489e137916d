//! End to end in a sandbox root: `bootstrap --skip-phase identity` installs and configures every runtime
//! component from the loopback artifact server (mirror), a second run writes nothing, and `unbootstrap`
//! restores the root exactly (including the original agent's leftovers and pre-existing files).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::support::runtime::*;
use crate::support::tree::{diff, snapshot, Stamps, Tree};
use crate::support::{put, sandbox, BIN};

/// Every entry under `root` but the agent's own log (written by the logging layer on every run: not host
/// state).
fn tree(root: &Path, stamps: Stamps) -> Tree {
    snapshot(root, stamps, &["/var/log"])
}

async fn cli(root: &Path, config: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::from(sandbox(root, config, args))
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_converges_reruns_write_nothing_and_unbootstrap_restores_the_root() {
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    fx.serve(&server);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // What was on the machine before: an old runc, the original agent's leftovers, an unrelated file.
    put(r, "/usr/bin/runc", b"old runc", 0o755);
    put(
        r,
        "/var/lib/kubelet/token.sh",
        b"#!/bin/bash\n# old\n",
        0o755,
    );
    put(r, "/etc/kubernetes/kubeconfig", b"old kubeconfig", 0o600);
    put(r, "/etc/hostname", b"flex-node-1\n", 0o644);
    // The single-plugin bridge config of the original agent (and of this one before the conflist): it
    // sorts before 10-bridge.conflist and would shadow it, so bootstrap removes it and unbootstrap puts it back.
    put(
        r,
        "/etc/cni/net.d/10-bridge.conf",
        br#"{"cniVersion":"0.3.1","name":"bridge","type":"bridge"}"#,
        0o644,
    );
    std::fs::create_dir_all(r.join("var/cache")).unwrap();
    let before = tree(r, Stamps::No);

    let cfgdir = tempfile::tempdir().unwrap();
    let config = write_config(
        cfgdir.path(),
        &config_json(&server.base, &fx, serde_json::json!({})),
    );

    let out = cli(r, &config, &["bootstrap", "--skip-phase", "identity"]).await;
    assert!(
        out.status.success(),
        "bootstrap failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &str| std::fs::read(r.join(p.trim_start_matches('/'))).unwrap();
    let mode = |p: &str| {
        std::fs::metadata(r.join(p.trim_start_matches('/')))
            .unwrap()
            .mode()
            & 0o7777
    };
    assert_eq!(read("/usr/bin/runc"), fx.runc);
    assert_eq!(mode("/usr/bin/runc"), 0o755);
    for b in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        assert_eq!(mode(&format!("/usr/bin/{b}")), 0o755);
    }
    for b in ["kubelet", "kubectl"] {
        assert_eq!(read(&format!("/usr/local/bin/{b}")), fx.kube[b]);
    }
    // kubeadm is never run by the agent and is not installed unless kubernetes.installKubeadm asks.
    assert!(!r.join("usr/local/bin/kubeadm").exists());
    assert_eq!(server.hits(&kube_url("kubeadm")), 0);
    for b in ["bridge", "host-local", "loopback", "portmap"] {
        assert_eq!(mode(&format!("/opt/cni/bin/{b}")), 0o755);
    }
    let conf = String::from_utf8(read("/etc/cni/net.d/10-bridge.conflist")).unwrap();
    assert!(
        conf.contains("10.244.3.0/24") && conf.contains("10.244.3.1") && conf.contains("portmap"),
        "{conf}"
    );
    assert!(!r.join("etc/cni/net.d/10-bridge.conf").exists());
    let toml = String::from_utf8(read("/etc/containerd/config.toml")).unwrap();
    assert!(toml.contains("sandbox_image = \"mcr.microsoft.com/oss/kubernetes/pause:3.6\""));
    assert!(toml.contains("address = \"127.0.0.1:1338\""));
    assert_eq!(mode("/var/lib/kubelet/kubeconfig"), 0o600);
    let kc = String::from_utf8(read("/var/lib/kubelet/kubeconfig")).unwrap();
    // The exec credential runs the agent binary that wrote it (symlinks resolved).
    let agent = std::fs::canonicalize(BIN).unwrap();
    assert!(
        kc.contains(&format!("command: \"{}\"\n", agent.display()))
            && kc.contains("client.authentication.k8s.io/v1\n"),
        "{kc}"
    );
    assert!(String::from_utf8(read("/etc/default/kubelet"))
        .unwrap()
        .contains("--pod-infra-container-image=mcr.microsoft.com/oss/kubernetes/pause:3.6"));
    assert_eq!(read("/etc/kubernetes/certs/ca.crt"), TEST_CA_PEM.as_bytes());
    assert!(!r.join("var/lib/kubelet/token.sh").exists());
    assert!(!r.join("etc/kubernetes/kubeconfig").exists());
    assert!(r.join("usr/bin/node-problem-detector").exists());
    assert!(r
        .join("etc/node-problem-detector/kernel-monitor.json")
        .exists());
    let rec: serde_json::Value =
        serde_json::from_slice(&read("/var/lib/aks-flex-node/sandbox.json")).unwrap();
    for unit in ["containerd", "kubelet", "node-problem-detector"] {
        assert_eq!(rec["units"][unit]["enabled"], true, "{unit}: {rec}");
        assert_eq!(rec["units"][unit]["active"], true, "{unit}: {rec}");
        assert_eq!(rec["units"][unit]["restarts"], 0, "{unit}: {rec}");
    }
    assert!(rec["daemonReloads"].as_u64().unwrap() >= 1);
    let hits_after_first = server.total_hits();

    // Second run: converged, nothing written (mtimes included), nothing downloaded.
    let converged = tree(r, Stamps::All);
    let out = cli(r, &config, &["bootstrap", "--skip-phase", "identity"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = diff(&converged, &tree(r, Stamps::All));
    assert!(
        d.is_empty(),
        "the second bootstrap changed the root: {d:#?}"
    );
    assert_eq!(server.total_hits(), hits_after_first);

    // A changed kubelet setting rewrites its file and restarts only the kubelet (and NPD does not).
    let config2 = write_config(
        cfgdir.path(),
        &config_json(
            &server.base,
            &fx,
            serde_json::json!({"node": {"maxPods": 50}}),
        ),
    );
    let out = cli(r, &config2, &["bootstrap", "--skip-phase", "identity"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: serde_json::Value =
        serde_json::from_slice(&read("/var/lib/aks-flex-node/sandbox.json")).unwrap();
    assert_eq!(rec["units"]["kubelet"]["restarts"], 1, "{rec}");
    assert_eq!(rec["units"]["containerd"]["restarts"], 0, "{rec}");
    assert_eq!(server.total_hits(), hits_after_first);

    let out = cli(r, &config2, &["unbootstrap"]).await;
    assert!(
        out.status.success(),
        "unbootstrap failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let d = diff(&before, &tree(r, Stamps::No));
    assert!(
        d.is_empty(),
        "unbootstrap did not restore the root exactly: {d:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_bundle_then_air_gapped_bootstrap_from_it() {
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    fx.serve(&server);
    let cfgdir = tempfile::tempdir().unwrap();
    let build_root = tempfile::tempdir().unwrap();
    let bundle = tempfile::tempdir().unwrap();
    let config = write_config(
        cfgdir.path(),
        &config_json(&server.base, &fx, serde_json::json!({})),
    );
    let out = cli(
        build_root.path(),
        &config,
        &[
            "artifacts",
            "bundle",
            "--output",
            bundle.path().to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.path().join("manifest.json")).unwrap())
            .unwrap();
    // runc, containerd, CNI, NPD, kubelet, kubectl (kubeadm only with kubernetes.installKubeadm).
    assert_eq!(
        manifest["artifacts"].as_array().unwrap().len(),
        6,
        "{manifest}"
    );
    let hits = server.total_hits();

    // Install with the mirror pointing at a closed port: only the bundle can serve.
    let air_gapped = config_json(
        "http://127.0.0.1:9",
        &fx,
        serde_json::json!({"bootstrap": {"offlineArtifacts": {"source": format!("file://{}", bundle.path().display())}}}),
    );
    let config = write_config(cfgdir.path(), &air_gapped);
    let root = tempfile::tempdir().unwrap();
    let out = cli(
        root.path(),
        &config,
        &["bootstrap", "--skip-phase", "identity"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(root.path().join("usr/local/bin/kubelet")).unwrap(),
        fx.kube["kubelet"]
    );
    assert_eq!(server.total_hits(), hits);
}

/// Datagrams sent to a test `NOTIFY_SOCKET` (what systemd would receive), collected in the background.
struct NotifySocket {
    path: std::path::PathBuf,
    got: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                g.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        NotifySocket { path, got }
    }

    fn messages(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    /// Wait (up to `secs`) for a message containing `needle`.
    async fn wait_for(&self, needle: &str, secs: u64) -> String {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(m) = self.messages().into_iter().find(|m| m.contains(needle)) {
                return m;
            }
            assert!(
                std::time::Instant::now() < end,
                "no notify message with {needle:?} in {secs}s; got {:?}",
                self.messages()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

fn agent(root: &Path, config: &Path, notify: &NotifySocket) -> tokio::process::Child {
    tokio::process::Command::from(sandbox(
        root,
        config,
        &["agent", "--skip-phase", "identity"],
    ))
    .env("NOTIFY_SOCKET", &notify.path)
    .env("AKS_FLEX_NODE_STATUS_INTERVAL", "1")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .unwrap()
}

/// The daemon does not exit when its first bootstrap fails: it tells systemd it is up (READY=1, so
/// `systemctl start` returns) with a status saying what failed, retries after its backoff, converges once
/// the cause is gone, keeps the status file, and stops cleanly on SIGTERM (STOPPING=1, exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_retries_a_failed_bootstrap_reports_it_and_stops_cleanly() {
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    fx.serve(&server);
    // The mirror answers 503 to the first five requests for runc: the first pass fails after its
    // download retries, the next one succeeds.
    server.fault(
        &runc_url(),
        Faults {
            unavailable: 5,
            ..Faults::default()
        },
    );
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let cfgdir = tempfile::tempdir().unwrap();
    let config = write_config(
        cfgdir.path(),
        &config_json(&server.base, &fx, serde_json::json!({})),
    );
    let notify = NotifySocket::bind(cfgdir.path());
    let mut child = agent(r, &config, &notify);

    let first = notify.wait_for("READY=1", 60).await;
    assert!(
        first.contains("STATUS=bootstrap failed (1 in a row), retrying in ")
            && first.contains("s: bootstrap failed at step Runc_Installer"),
        "{first:?}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the agent exited after a failed pass"
    );
    let status_file = r.join("run/aks-flex-node/status.json");
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap();
    assert_eq!(st["daemon"]["state"], "retrying", "{st}");
    assert!(
        st["daemon"]["lastError"].as_str().unwrap().contains("runc"),
        "{st}"
    );
    assert!(st["daemon"]["nextRetry"].is_string(), "{st}");

    notify.wait_for("STATUS=running", 60).await;
    assert_eq!(
        notify
            .messages()
            .iter()
            .filter(|m| m.contains("READY=1"))
            .count(),
        1,
        "READY=1 is sent once: {:?}",
        notify.messages()
    );
    assert_eq!(std::fs::read(r.join("usr/bin/runc")).unwrap(), fx.runc);
    // The status file follows (it is rewritten after each pass).
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let st = loop {
        let st: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap();
        if st["daemon"]["state"] == "running" || std::time::Instant::now() > end {
            break st;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(st["daemon"]["state"], "running", "{st}");
    assert!(st["daemon"]["lastError"].is_null(), "{st}");
    assert!(st["daemon"]["lastPass"].is_string(), "{st}");

    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the agent did not stop within 30 s of SIGTERM")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    notify.wait_for("STOPPING=1", 5).await;

    // Unbootstrap takes the stopped daemon's status file with it.
    let out = cli(r, &config, &["unbootstrap"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !status_file.exists(),
        "unbootstrap left {}",
        status_file.display()
    );
}

/// A configuration error no retry can fix ends the daemon with exit 2 (the unit's
/// RestartPreventExitStatus) and says so in the systemd status line, instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_exits_2_on_a_configuration_error_found_while_bootstrapping() {
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    fx.serve(&server);
    let root = tempfile::tempdir().unwrap();
    let cfgdir = tempfile::tempdir().unwrap();
    let mut cfg = config_json(&server.base, &fx, serde_json::json!({}));
    // Identity skipped and no API server given: nothing can ever tell the kubelet where the cluster is.
    cfg.as_object_mut().unwrap().remove("node");
    let config = write_config(cfgdir.path(), &cfg);
    let notify = NotifySocket::bind(cfgdir.path());
    let child = agent(root.path(), &config, &notify);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the agent kept running on a configuration error")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the cluster's API server is unknown"), "{err}");
    assert!(err.contains("configuration problem"), "{err}");
    let m = notify
        .wait_for("STATUS=stopped: configuration error", 5)
        .await;
    assert!(!m.contains("READY=1"), "{m:?}");
}

/// Crash consistency: killed (SIGKILL) once at every action boundary of a bootstrap - right after the
/// journal marks the action pending, and right after the action before the journal marks it done - and
/// re-run each time, bootstrap still converges to the same files as an uninterrupted one, a further run
/// changes nothing, and unbootstrap restores the root exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_killed_at_every_action_boundary_still_converges_and_unbootstraps_exactly() {
    use std::os::unix::process::ExitStatusExt;
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    fx.serve(&server);
    let cfgdir = tempfile::tempdir().unwrap();
    let config = write_config(
        cfgdir.path(),
        &config_json(&server.base, &fx, serde_json::json!({})),
    );
    let setup = |r: &Path| {
        put(r, "/usr/bin/runc", b"old runc", 0o755);
        put(r, "/etc/hostname", b"flex-node-1\n", 0o644);
        std::fs::create_dir_all(r.join("var/cache")).unwrap();
    };
    // Host state only: the journal's own log and the agent's log differ between the two runs by design.
    let host_state = |r: &Path| {
        let mut t = tree(r, Stamps::No);
        t.retain(|k, _| !k.starts_with("/var/lib/aks-flex-node"));
        t
    };

    let clean = tempfile::tempdir().unwrap();
    setup(clean.path());
    let out = cli(
        clean.path(),
        &config,
        &["bootstrap", "--skip-phase", "identity"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    setup(r);
    let before = tree(r, Stamps::No);
    let crash_file = cfgdir.path().join("crash-points");
    let mut kills = 0;
    loop {
        let out = tokio::process::Command::from(sandbox(
            r,
            &config,
            &["bootstrap", "--skip-phase", "identity"],
        ))
        .env("AKS_FLEX_NODE_TEST_CRASH_FILE", &crash_file)
        .output()
        .await
        .unwrap();
        if out.status.success() {
            break;
        }
        assert_eq!(
            out.status.signal(),
            Some(9),
            "a run failed other than by the injected kill after {kills} kills:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        kills += 1;
        assert!(kills < 400, "no convergence after {kills} kills");
    }
    let points = std::fs::read_to_string(&crash_file).unwrap();
    assert_eq!(points.lines().count(), kills);
    assert!(kills >= 20, "too few action boundaries crossed: {points}");
    eprintln!("killed {kills} times");
    for want in ["| before", "| after", "Runc_Installer", "ServicesEnabled"] {
        assert!(
            points.contains(want),
            "no crash point with {want:?}: {points}"
        );
    }
    let d = diff(&host_state(clean.path()), &host_state(r));
    assert!(
        d.is_empty(),
        "the crashed bootstrap differs from a clean one: {d:#?}"
    );
    let converged = tree(r, Stamps::All);
    let out = cli(r, &config, &["bootstrap", "--skip-phase", "identity"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        diff(&converged, &tree(r, Stamps::All)).is_empty(),
        "a run after convergence wrote files"
    );

    let out = cli(r, &config, &["unbootstrap"]).await;
    assert!(
        out.status.success(),
        "unbootstrap after {kills} crashes failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let d = diff(&before, &tree(r, Stamps::No));
    assert!(
        d.is_empty(),
        "unbootstrap after crashes did not restore the root: {d:#?}"
    );
}

/// The journal is bounded by what the agent manages, not by uptime: however many times the daemon repairs
/// the same drift, the journal stops growing once each step's log is full, and it keeps one undo record
/// per managed object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_stops_growing_however_many_repairs_the_daemon_makes() {
    use aks_flex_node::agent::daemon::repairs;
    use aks_flex_node::steps::{self, journal::LOG_PER_STEP, Phase};

    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    fx.serve(&server);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let ctx = context(&config_json(&server.base, &fx, serde_json::json!({})), r);
    let all = steps::all_steps();
    let host_pass = [Phase::Identity];
    let (_, res) = run_steps(&ctx, &all, &host_pass).await;
    res.unwrap();
    let journal_path = r.join("var/lib/aks-flex-node/journal.json");
    let undo_len = || ctx.journal_snapshot().undo.len();
    let undo_after_bootstrap = undo_len();

    let passes = 2 * LOG_PER_STEP + 8;
    let mut sizes = Vec::new();
    for i in 0..passes {
        // Drift: someone deletes our sysctl file and edits containerd's config.
        std::fs::remove_file(r.join("etc/sysctl.d/999-sysctl-aks.conf")).unwrap();
        std::fs::write(
            r.join("etc/containerd/config.toml"),
            format!("# drift {i}\n"),
        )
        .unwrap();
        let (reports, res) = run_steps(&ctx, &all, &host_pass).await;
        res.unwrap();
        let fixed: Vec<&str> = repairs(&reports).iter().map(|(s, _)| *s).collect();
        assert!(
            fixed.contains(&"SystemConfigured") && fixed.contains(&"ContainerdInstaller"),
            "pass {i} repaired {fixed:?}"
        );
        sizes.push(std::fs::metadata(&journal_path).unwrap().len());
    }
    assert_eq!(undo_len(), undo_after_bootstrap, "undo records per repair");
    // Once every step's log holds LOG_PER_STEP entries, only sequence numbers' digits can change the size.
    let full = sizes[LOG_PER_STEP + 4];
    let last = *sizes.last().unwrap();
    assert!(
        last <= full + 64,
        "the journal grew from {full} to {last} bytes over {} more repairs",
        passes - LOG_PER_STEP - 5
    );
    assert!(
        sizes[0] < full,
        "the log did grow while filling (the test saw repairs logged)"
    );
}
