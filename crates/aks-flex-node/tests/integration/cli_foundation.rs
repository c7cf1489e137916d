//! The CLI contract and the engine's promises, through the real binary in a sandbox root:
//! bootstrap converges, a second run writes nothing, unbootstrap restores the root exactly.

use std::path::Path;
use std::process::Command;

use crate::support::tree::{snapshot, Stamps, Tree};
use crate::support::{
    bin, config_fixture, is_root, readme_quick_start, require, require_program, run_args, Run, BIN,
};

/// `bootstrap --only SystemConfigured` on a sandbox root.
fn bootstrap_sc(root: &str, cfg: &str) -> Run {
    run_args(&[
        "bootstrap",
        "--only",
        "SystemConfigured",
        "--root",
        root,
        "--config",
        cfg,
    ])
}

fn run_unbootstrap(root: &str, cfg: &str) -> Run {
    run_args(&["unbootstrap", "--root", root, "--config", cfg])
}

/// An `agent --only SystemConfigured` daemon on a sandbox root, with its stderr lines on a channel.
struct Agent {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Agent {
    fn start(root: &Path, heal_interval: Option<&str>) -> Agent {
        use std::io::{BufRead, BufReader};
        let mut cmd = bin();
        cmd.args(["agent", "--only", "SystemConfigured", "--root"])
            .arg(root)
            .arg("--config")
            .arg(config_fixture("seed-example.json"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(secs) = heal_interval {
            cmd.env("AKS_FLEX_NODE_HEAL_INTERVAL", secs);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Agent { child, lines }
    }

    /// Lines up to and including the first one containing `needle`; panics after `secs`.
    fn wait_for(&self, needle: &str, secs: u64) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let mut seen = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Ok(l) = self
                .lines
                .recv_timeout(std::time::Duration::from_millis(100))
            {
                let hit = l.contains(needle);
                seen.push(l);
                if hit {
                    return seen;
                }
            }
        }
        panic!("no {needle:?} within {secs}s; saw:\n{}", seen.join("\n"));
    }

    /// SIGTERM, as systemd stops it; returns the exit code.
    fn stop(mut self) -> Option<i32> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("a child's pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        self.child.wait().unwrap().code()
    }
}

/// A test that fails midway must not leave its agent running (it would outlive the test run).
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a run could change under the root, without the agent's own log (kept on purpose: operators need
/// it after unbootstrap) and /run (the daemon's status file, rewritten after every pass by design).
fn host_state(root: &Path, stamps: Stamps) -> Tree {
    snapshot(root, stamps, &["/var/log/aks-flex-node", "/run"])
}

/// A root that looks like a small Ubuntu machine with swap on.
fn machine() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    for dir in ["etc/sysctl.d", "proc", "var/lib", "var/log"] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    std::fs::write(
        r.join("etc/fstab"),
        "UUID=abc / ext4 defaults 0 1\n/swap.img\tnone\tswap\tsw\t0\t0\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/sysctl.d/10-user.conf"),
        "vm.max_map_count = 262144\n",
    )
    .unwrap();
    std::fs::write(
        r.join("proc/swaps"),
        "Filename\tType\tSize\tUsed\tPriority\n/swap.img file 2097148 0 -2\n",
    )
    .unwrap();
    d
}

#[test]
fn version_prints_the_originals_four_lines_without_a_config() {
    let r = run_args(&["version", "--config", "/nonexistent.json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], "AKS Flex Node Agent");
    assert!(lines[1].starts_with("Version: "));
    assert!(lines[2].starts_with("Git Commit: "));
    assert!(lines[3].starts_with("Build Time: "));
    let j = run_args(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert!(v["version"].is_string() && v["gitCommit"].is_string());
}

#[test]
fn missing_config_is_a_usage_error_naming_the_file() {
    let r = run_args(&["plan", "--config", "/nonexistent/config.json"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("/nonexistent/config.json"),
        "{}",
        r.stderr
    );
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(
        run_args(&["bootstrap", "--skip-phase", "everything"]).code,
        2
    );
    assert_eq!(run_args(&["no-such-command"]).code, 2);
}

#[test]
fn schema_and_completions_need_no_config() {
    let r = run_args(&["config", "schema", "--config", "/nonexistent.json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v["properties"]["azure"].is_object(), "{v}");
    let c = run_args(&["completions", "bash"]);
    assert_eq!(c.code, 0);
    assert!(c.stdout.contains("aks-flex-node"));
}

#[test]
fn bootstrap_is_idempotent_and_unbootstrap_restores_the_root_exactly() {
    let m = machine();
    let root = m.path().to_str().unwrap();
    let cfg = config_fixture("seed-example.json");
    let cfg = cfg.to_str().unwrap();
    let before = host_state(m.path(), Stamps::No);

    let first = bootstrap_sc(root, cfg);
    assert_eq!(
        first.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        first.stdout, first.stderr
    );
    assert!(
        first.stdout.contains("SystemConfigured"),
        "{}",
        first.stdout
    );
    let fstab = std::fs::read_to_string(m.path().join("etc/fstab")).unwrap();
    assert!(fstab.contains("# disabled by aks-flex-node"), "{fstab}");
    assert!(m.path().join("etc/sysctl.d/999-sysctl-aks.conf").exists());
    assert!(m.path().join("var/lib/aks-flex-node/journal.json").exists());

    // Second run: an empty plan and not a single write (inode and mtime of every file unchanged).
    let converged = host_state(m.path(), Stamps::Files);
    let second = bootstrap_sc(root, cfg);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(
        converged,
        host_state(m.path(), Stamps::Files),
        "second bootstrap wrote something"
    );
    let plan = run_args(&[
        "plan",
        "-o",
        "json",
        "--only",
        "SystemConfigured",
        "--root",
        root,
        "--config",
        cfg,
    ]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(v["converged"], true, "{v}");

    let undo = run_unbootstrap(root, cfg);
    assert_eq!(
        undo.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        undo.stdout, undo.stderr
    );
    let after = host_state(m.path(), Stamps::No);
    assert_eq!(before, after, "unbootstrap did not restore the root");
}

#[test]
fn unbootstrap_of_a_machine_never_bootstrapped_says_so_and_exits_0() {
    let m = machine();
    let root = m.path().to_str().unwrap();
    let cfg = config_fixture("seed-example.json");
    let before = host_state(m.path(), Stamps::Files);
    let undo = run_unbootstrap(root, cfg.to_str().unwrap());
    assert_eq!(undo.code, 0, "{}", undo.stderr);
    let journal = m
        .path()
        .canonicalize()
        .unwrap()
        .join("var/lib/aks-flex-node/journal.json");
    assert!(
        undo.stdout.contains(&format!(
            "nothing to undo: this machine was not bootstrapped by aks-flex-node (no journal at {})",
            journal.display()
        )),
        "{}",
        undo.stdout
    );
    assert_eq!(
        before,
        host_state(m.path(), Stamps::Files),
        "unbootstrap changed the root"
    );
}

#[test]
fn plan_json_has_the_documented_shape_and_changes_nothing() {
    let m = machine();
    let root = m.path().to_str().unwrap();
    let cfg = config_fixture("seed-example.json");
    let before = host_state(m.path(), Stamps::Files);
    let r = run_args(&[
        "plan",
        "-o",
        "json",
        "--only",
        "SystemConfigured",
        "--root",
        root,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        before,
        host_state(m.path(), Stamps::Files),
        "plan wrote to the root"
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["apiVersion"], "aks-flex-node/v2");
    assert_eq!(v["kind"], "Plan");
    assert_eq!(v["converged"], false);
    let steps = v["steps"].as_array().unwrap();
    let sc = steps
        .iter()
        .find(|s| s["name"] == "SystemConfigured")
        .unwrap();
    assert_eq!(sc["phase"], "installation");
    assert_eq!(sc["status"], "changes");
    let actions = sc["actions"].as_array().unwrap();
    let sysctl = actions
        .iter()
        .find(|a| a["path"] == "/etc/sysctl.d/999-sysctl-aks.conf")
        .unwrap();
    assert_eq!(sysctl["type"], "writeFile");
    assert_eq!(sysctl["mode"], "0644");
    assert_eq!(sysctl["change"], "create");
    assert!(sysctl["diff"]
        .as_str()
        .unwrap()
        .contains("+net.ipv4.ip_forward = 1"));
    assert!(actions.iter().any(|a| a["type"] == "swapOff"));
    // A skipped phase is listed as skipped, with no actions.
    let r = run_args(&[
        "plan",
        "-o",
        "json",
        "--skip-phase",
        "installation",
        "--only",
        "SystemConfigured",
        "--root",
        root,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["steps"][0]["status"], "skipped");
    assert_eq!(v["converged"], true);
}

#[test]
fn only_rejects_unknown_steps() {
    let cfg = config_fixture("seed-example.json");
    let r = run_args(&[
        "plan",
        "--only",
        "NoSuchStep",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("SystemConfigured"), "{}", r.stderr);
}

#[test]
fn interrupted_bootstrap_resumes_and_still_undoes_exactly() {
    let m = machine();
    let root = m.path().to_str().unwrap();
    let cfg = config_fixture("seed-example.json");
    let cfg = cfg.to_str().unwrap();
    let before = host_state(m.path(), Stamps::No);
    // Simulate a crash after the first write: run once, then damage the result as a half-finished
    // run would leave it (sysctl file missing), and re-run.
    assert_eq!(bootstrap_sc(root, cfg).code, 0);
    std::fs::remove_file(m.path().join("etc/sysctl.d/999-sysctl-aks.conf")).unwrap();
    let again = bootstrap_sc(root, cfg);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("applied"), "{}", again.stdout);
    assert!(m.path().join("etc/sysctl.d/999-sysctl-aks.conf").exists());
    assert_eq!(run_unbootstrap(root, cfg).code, 0);
    assert_eq!(before, host_state(m.path(), Stamps::No));
}

#[test]
fn a_users_changed_file_is_restored_from_backup_on_unbootstrap() {
    let m = machine();
    let root = m.path().to_str().unwrap();
    let cfg = config_fixture("seed-example.json");
    let cfg = cfg.to_str().unwrap();
    // The user already had a file at our path; we overwrite it and must give it back.
    std::fs::write(
        m.path().join("etc/sysctl.d/999-sysctl-aks.conf"),
        "# the user's own\nnet.ipv4.ip_forward = 0\n",
    )
    .unwrap();
    let before = host_state(m.path(), Stamps::No);
    assert_eq!(bootstrap_sc(root, cfg).code, 0);
    assert_ne!(before, host_state(m.path(), Stamps::No));
    assert_eq!(run_unbootstrap(root, cfg).code, 0);
    assert_eq!(before, host_state(m.path(), Stamps::No));
}

#[test]
fn agent_stops_cleanly_on_sigterm_with_exit_0() {
    let m = machine();
    let agent = Agent::start(m.path(), None);
    // Wait until it is in daemon mode (bootstrap done), then ask it to stop as systemd would.
    agent.wait_for("running as daemon", 20);
    assert_eq!(agent.stop(), Some(0));
    assert!(m.path().join("etc/sysctl.d/999-sysctl-aks.conf").exists());
}

#[test]
#[ignore = "needs root to drop to an unprivileged user (run by make e2e as root)"]
fn changing_the_real_machine_requires_root() {
    // Run as `nobody` against the real root: must refuse up front (exit 2), before touching anything.
    require(is_root(), "root, to drop to an unprivileged user");
    require_program(&["setpriv", "--version"], "util-linux");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::copy(config_fixture("seed-example.json"), &cfg).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    for cmd in ["bootstrap", "unbootstrap", "agent"] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(BIN)
            .args([cmd, "--config"])
            .arg(&cfg)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        assert!(stderr.contains("must run as root"), "{cmd}: {stderr}");
    }
}

#[test]
fn the_daemon_repairs_drift_and_leaves_a_healthy_node_alone() {
    let m = machine();
    let agent = Agent::start(m.path(), Some("1"));
    agent.wait_for("running as daemon", 20);
    let sysctl = m.path().join("etc/sysctl.d/999-sysctl-aks.conf");
    let healthy = host_state(m.path(), Stamps::Files);
    // Two heal passes on a healthy node: nothing is rewritten.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(
        healthy,
        host_state(m.path(), Stamps::Files),
        "the daemon rewrote a healthy node"
    );
    // Drift: someone deletes our sysctl file. The next pass puts it back.
    std::fs::remove_file(&sysctl).unwrap();
    let lines = agent.wait_for("repaired drift", 30);
    assert!(
        lines.iter().any(|l| l.contains("SystemConfigured")),
        "{lines:?}"
    );
    assert!(sysctl.exists());
    assert_eq!(agent.stop(), Some(0));
}

#[test]
fn a_bad_heal_interval_is_a_usage_error() {
    let m = machine();
    let cfg = config_fixture("seed-example.json");
    let out = bin()
        .args(["agent", "--only", "SystemConfigured", "--root"])
        .arg(m.path())
        .arg("--config")
        .arg(&cfg)
        .env("AKS_FLEX_NODE_HEAL_INTERVAL", "2m")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AKS_FLEX_NODE_HEAL_INTERVAL"));
}

#[test]
fn the_readme_quick_start_config_is_valid() {
    let json = readme_quick_start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, json).unwrap();
    let r = run_args(&["config", "validate", "--config", cfg.to_str().unwrap()]);
    assert_eq!(
        r.code, 0,
        "README quick-start config rejected:\n{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("WARN"),
        "README quick-start config has warnings:\n{}",
        r.stderr
    );
}

#[test]
fn unbootstrap_while_the_daemon_runs_never_corrupts_the_journal() {
    use std::time::{Duration, Instant};
    let m = machine();
    let root = m.path().to_str().unwrap();
    let cfg = config_fixture("seed-example.json");
    let cfg = cfg.to_str().unwrap();
    let before = host_state(m.path(), Stamps::No);
    let agent = Agent::start(m.path(), Some("1"));
    agent.wait_for("running as daemon", 20);
    let journal = m.path().join("var/lib/aks-flex-node/journal.json");
    // Someone runs unbootstrap while the daemon is between passes (retry if a pass holds the lock).
    let unbootstrap = || {
        for _ in 0..50 {
            let r = run_unbootstrap(root, cfg);
            if r.code == 0 {
                return;
            }
            assert!(
                r.stderr.contains("another aks-flex-node is running"),
                "{}",
                r.stderr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("unbootstrap never got the lock");
    };
    unbootstrap();
    // The daemon's next pass re-bootstraps from the journal on disk, not from its stale memory.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !journal.exists() {
        assert!(Instant::now() < deadline, "the daemon did not re-converge");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agent.stop(), Some(0));
    // Every undo record still points at a real backup: the final unbootstrap restores the root exactly.
    unbootstrap();
    assert_eq!(before, host_state(m.path(), Stamps::No));
}
