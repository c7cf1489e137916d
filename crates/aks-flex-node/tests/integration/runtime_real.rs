//! Real components: Debian's containerd started with OUR rendered config.toml must load the CRI plugin;
//! OUR rendered 10-bridge.conflist executed by the real bridge/host-local/portmap plugins in a network
//! namespace, chained the way the runtime's libcni does (each plugin gets the previous one's result), must
//! give an address from the configured pod range, with hairpin on and the hostPort mapped. Both install their binaries through the agent from the
//! loopback artifact server first. They need root, so they are `#[ignore]`d and run by `make e2e` (as root,
//! after `make deps`); run there without root or without the packages, they fail saying what is missing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aks_flex_node::model::Phase;
use aks_flex_node::steps;

use crate::support::runtime::*;
use crate::support::{is_root, require, require_program};

/// Bootstrap only the installation steps into a sandbox root from the loopback server.
async fn install_runtime(
    step: Box<dyn steps::Step>,
    containerd: bool,
    cni: bool,
    extra: serde_json::Value,
) -> (tempfile::TempDir, ArtifactServer) {
    let fx = Fixtures::build(containerd, cni).unwrap_or_else(|reason| {
        panic!("this test needs the Debian binaries it installs (`make deps` as root): {reason}")
    });
    let server = ArtifactServer::start().await;
    fx.serve(&server);
    let root = tempfile::tempdir().unwrap();
    let ctx = context(&config_json(&server.base, &fx, extra), root.path());
    let (_reports, res) = run_steps(&ctx, &[step], &[Phase::Identity, Phase::Activation]).await;
    res.unwrap();
    (root, server)
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root to start containerd (run by make e2e as root)"]
async fn real_containerd_loads_the_cri_plugin_with_our_config() {
    require(is_root(), "root, to start containerd");
    // Metrics on an ephemeral port so parallel runs never collide.
    let (root, _server) = install_runtime(
        Box::new(steps::containerd::ContainerdInstaller),
        true,
        false,
        serde_json::json!({
            "containerd": {"metricsAddress": "127.0.0.1:0"}
        }),
    )
    .await;
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

/// Runs one plugin of a network list as libcni does: the plugin's own object plus the list's `name` and
/// `cniVersion`, the previous plugin's result as `prevResult`, and the runtime's arguments for the
/// capabilities the plugin declares as `runtimeConfig`.
fn plugin_config(
    list: &serde_json::Value,
    plugin: &serde_json::Value,
    prev: Option<&serde_json::Value>,
    runtime: &serde_json::Value,
) -> serde_json::Value {
    let mut conf = plugin.clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    if let Some(caps) = plugin["capabilities"].as_object() {
        let mut rc = serde_json::Map::new();
        for (cap, on) in caps {
            if on == &serde_json::Value::Bool(true) {
                if let Some(v) = runtime.get(cap) {
                    rc.insert(cap.clone(), v.clone());
                }
            }
        }
        if !rc.is_empty() {
            conf["runtimeConfig"] = rc.into();
        }
    }
    conf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root for network namespaces (run by make e2e as root)"]
async fn real_bridge_and_portmap_chain_gives_an_address_from_the_pod_range() {
    require(is_root(), "root, for network namespaces");
    require_program(&["ip", "-V"], "iproute2");
    // bridge ipMasq and portmap need it.
    require_program(&["iptables", "-V"], "iptables");
    let (root, _server) = install_runtime(
        Box::new(steps::cni::CniSetup),
        false,
        true,
        serde_json::json!({
            "networking": {"podCIDR": "10.250.7.0/24"}
        }),
    )
    .await;
    let r = root.path();
    let id = std::process::id();
    // The plugins run inside `outer` (so cni0, NAT and hostPort rules never touch this machine's
    // namespace) and attach `inner`.
    let outer = Netns(format!("afn-outer-{id}"));
    let inner = Netns(format!("afn-inner-{id}"));
    for n in [&outer.0, &inner.0] {
        let o = ip(&["netns", "add", n]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let list_text = std::fs::read_to_string(r.join("etc/cni/net.d/10-bridge.conflist")).unwrap();
    let mut list: serde_json::Value = serde_json::from_str(&list_text).unwrap();
    assert!(!r.join("etc/cni/net.d/10-bridge.conf").exists());
    // Only host-local's state directory is redirected (it defaults to this machine's /var/lib/cni).
    let data_dir = tempfile::tempdir().unwrap();
    list["plugins"][0]["ipam"]["dataDir"] = data_dir.path().display().to_string().into();
    let plugins = list["plugins"].as_array().unwrap().clone();
    let types: Vec<&str> = plugins
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["bridge", "portmap"]);
    // What the CRI passes for a pod with a hostPort.
    let runtime = serde_json::json!({
        "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]
    });
    let cni_path = r.join("opt/cni/bin");
    let run = |command: &str, conf: &serde_json::Value| {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &outer.0])
            .arg(cni_path.join(conf["type"].as_str().unwrap()))
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
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{} {command} failed: {}{}",
            conf["type"],
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    // ADD in list order, each plugin getting the previous result.
    let mut result: Option<serde_json::Value> = None;
    for p in &plugins {
        let conf = plugin_config(&list, p, result.as_ref(), &runtime);
        result = Some(serde_json::from_slice(&run("ADD", &conf)).unwrap());
    }
    let result = result.unwrap();
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
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
    // Hairpin: the pod's port on cni0 sends traffic back out the port it came in on (a pod reaching
    // itself through its Service VIP).
    let ports = ip(&["-n", &outer.0, "-d", "link", "show", "master", "cni0"]);
    let ports = String::from_utf8_lossy(&ports.stdout).to_string();
    assert!(ports.contains("hairpin on"), "{ports}");
    // portmap: the hostPort is DNATed to the pod.
    let nat = Command::new("ip")
        .args(["netns", "exec", &outer.0, "iptables", "-t", "nat", "-S"])
        .output()
        .unwrap();
    let nat = String::from_utf8_lossy(&nat.stdout).to_string();
    let pod_ip = addr.split('/').next().unwrap();
    assert!(
        nat.contains("--dport 18080") && nat.contains(&format!("{pod_ip}:80")),
        "{nat}"
    );
    // DEL in reverse order, each with the cached result, as libcni does.
    for p in plugins.iter().rev() {
        let conf = plugin_config(&list, p, Some(&result), &runtime);
        run("DEL", &conf);
    }
    let nat = Command::new("ip")
        .args(["netns", "exec", &outer.0, "iptables", "-t", "nat", "-S"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&nat.stdout).contains("--dport 18080"),
        "{}",
        String::from_utf8_lossy(&nat.stdout)
    );
    assert!(Path::new(&cni_path).join("loopback").exists());
}
