//! Real components: Debian's containerd started with OUR rendered config.toml must load the CRI plugin;
//! OUR rendered 10-bridge.conf executed by the real bridge/host-local plugins in a network namespace must
//! give an address from the configured pod range. Both install their binaries through the agent from the
//! loopback artifact server first. They skip (printing why) only when not root or the packages are missing.

mod runtime_support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aks_flex_node::host::Host;
use aks_flex_node::steps::{self, Context, Phase};
use runtime_support::*;

/// Bootstrap only the installation steps into a sandbox root from the loopback server.
async fn install_runtime(
    step: Box<dyn steps::Step>,
    containerd: bool,
    cni: bool,
    extra: serde_json::Value,
) -> Option<(tempfile::TempDir, ArtifactServer)> {
    let fx = match Fixtures::build(containerd, cni) {
        Ok(f) => f,
        Err(reason) => {
            eprintln!("SKIPPED: {reason}");
            return None;
        }
    };
    let server = ArtifactServer::start().await;
    fx.serve(&server);
    let root = tempfile::tempdir().unwrap();
    let cfg = Arc::new(load_config(&config_json(&server.base, &fx, extra)));
    let host = Arc::new(Host::new(root.path()).unwrap());
    let ctx = Context::new(cfg, host).unwrap();
    let skip = [Phase::Identity, Phase::Activation].into_iter().collect();
    let (_reports, res) = steps::bootstrap(&ctx, &[step], &skip).await;
    res.unwrap();
    Some((root, server))
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_containerd_loads_the_cri_plugin_with_our_config() {
    skip_unless!(is_root(), "needs root to start containerd");
    // Metrics on an ephemeral port so parallel runs never collide.
    let Some((root, _server)) = install_runtime(
        Box::new(steps::containerd::ContainerdInstaller),
        true,
        false,
        serde_json::json!({
            "containerd": {"metricsAddress": "127.0.0.1:0"}
        }),
    )
    .await
    else {
        return;
    };
    let r = root.path();
    let work = tempfile::tempdir().unwrap();
    let sock = work.path().join("containerd.sock");
    // The containerd installed by the agent (Debian's binary, served as an upstream tarball).
    let bin = r.join("usr/bin/containerd");
    let child = Command::new(&bin)
        .arg("--config")
        .arg(r.join("etc/containerd/config.toml"))
        .arg("--root")
        .arg(work.path().join("root"))
        .arg("--state")
        .arg(work.path().join("state"))
        .arg("--address")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(work.path().join("containerd.log")).unwrap())
        .spawn()
        .unwrap();
    let _guard = Kill(child);
    let ctr = r.join("usr/bin/ctr");
    let started = Instant::now();
    let out = loop {
        let out = Command::new(&ctr)
            .arg("--address")
            .arg(&sock)
            .args(["plugins", "ls"])
            .output()
            .unwrap();
        if out.status.success() || started.elapsed() > Duration::from_secs(20) {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(work.path().join("containerd.log")).unwrap_or_default();
    let cri = text.lines().find(|l| {
        l.contains("io.containerd.grpc.v1") && l.split_whitespace().nth(1) == Some("cri")
    });
    assert!(
        cri.is_some_and(|l| l.trim_end().ends_with("ok")),
        "CRI plugin not loaded:\n{text}\n{}\ncontainerd log:\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !log.contains("failed to load plugin io.containerd.grpc.v1.cri"),
        "{log}"
    );
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().unwrap()
}

struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_bridge_and_host_local_give_an_address_from_the_pod_range() {
    skip_unless!(is_root(), "needs root for network namespaces");
    skip_unless!(
        Command::new("ip").arg("-V").output().is_ok(),
        "iproute2 is not installed"
    );
    let Some((root, _server)) = install_runtime(
        Box::new(steps::cni::CniSetup),
        false,
        true,
        serde_json::json!({
            "networking": {"podCIDR": "10.250.7.0/24"}
        }),
    )
    .await
    else {
        return;
    };
    let r = root.path();
    let id = std::process::id();
    // The plugins run inside `outer` (so cni0 and NAT rules never touch this machine's namespace) and
    // attach `inner`.
    let outer = Netns(format!("afn-outer-{id}"));
    let inner = Netns(format!("afn-inner-{id}"));
    for n in [&outer.0, &inner.0] {
        let o = ip(&["netns", "add", n]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let conf_text = std::fs::read_to_string(r.join("etc/cni/net.d/10-bridge.conf")).unwrap();
    let mut conf: serde_json::Value = serde_json::from_str(&conf_text).unwrap();
    // Only host-local's state directory is redirected (it defaults to this machine's /var/lib/cni).
    let data_dir = tempfile::tempdir().unwrap();
    conf["ipam"]["dataDir"] = data_dir.path().display().to_string().into();
    let cni_path = r.join("opt/cni/bin");
    let run = |command: &str| {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &outer.0])
            .arg(cni_path.join("bridge"))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("afn-test-{id}"))
            .env("CNI_NETNS", format!("/var/run/netns/{}", inner.0))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &cni_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("ADD");
    assert!(
        out.status.success(),
        "bridge ADD failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let addr = result["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(
        addr.starts_with("10.250.7.") && addr.ends_with("/24"),
        "{result}"
    );
    assert_eq!(result["ips"][0]["gateway"], "10.250.7.1", "{result}");
    let shown = ip(&["-n", &inner.0, "-4", "addr", "show", "eth0"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(&addr),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
    let out = run("DEL");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(Path::new(&cni_path).join("loopback").exists());
}
