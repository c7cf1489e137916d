//! Support for the runtime tests (and `benches/install.rs`, which includes this file alone: it uses nothing
//! else of `support`): a loopback HTTP artifact server (a tiny HTTP/1.1 server on 127.0.0.1 with fault
//! injection), artifact fixtures in the upstream layouts built from the real Debian binaries (containerd,
//! runc, CNI plugins) plus FIXTURE Kubernetes binaries (shell scripts), configs, and the engine run on a
//! sandbox root.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aks_flex_node::host::Host;
use aks_flex_node::model::Phase;
use aks_flex_node::steps::{self, Context, Step, StepReport};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the server does for a path.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Serve only half the body (with the full Content-Length) this many times first.
    pub truncate: u32,
    /// Answer 503 this many times first.
    pub unavailable: u32,
    /// Hold every response this long before answering (to observe concurrent downloads).
    pub delay: std::time::Duration,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    faults: HashMap<String, Faults>,
    hits: HashMap<String, u32>,
    in_flight: u32,
    max_in_flight: u32,
}

/// A loopback artifact server. Paths are `/HOST/PATH` (a mirror layout of the upstream URLs).
#[derive(Clone)]
pub struct ArtifactServer {
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl ArtifactServer {
    pub async fn start() -> ArtifactServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&buf);
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let delay = {
                        let mut s = st.lock().unwrap();
                        s.in_flight += 1;
                        s.max_in_flight = s.max_in_flight.max(s.in_flight);
                        s.faults.get(&path).map(|f| f.delay).unwrap_or_default()
                    };
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let (status, body, truncate) = {
                        let mut s = st.lock().unwrap();
                        s.in_flight -= 1;
                        *s.hits.entry(path.clone()).or_default() += 1;
                        let fault = s.faults.entry(path.clone()).or_default();
                        if fault.unavailable > 0 {
                            fault.unavailable -= 1;
                            ("503 Service Unavailable", b"busy".to_vec(), false)
                        } else {
                            let trunc = if fault.truncate > 0 {
                                fault.truncate -= 1;
                                true
                            } else {
                                false
                            };
                            match s.files.get(&path) {
                                Some(b) => ("200 OK", b.clone(), trunc),
                                None => ("404 Not Found", b"not found".to_vec(), false),
                            }
                        }
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let n = if truncate { body.len() / 2 } else { body.len() };
                    let _ = sock.write_all(&body[..n]).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        ArtifactServer {
            base: format!("http://{addr}"),
            state,
        }
    }

    /// Serve `bytes` as the upstream URL `url` (stored under `/HOST/PATH`).
    pub fn put_url(&self, url: &str, bytes: Vec<u8>) {
        let path = format!("/{}", url.split_once("://").unwrap().1);
        self.state.lock().unwrap().files.insert(path, bytes);
    }

    pub fn remove_url(&self, url: &str) {
        let path = format!("/{}", url.split_once("://").unwrap().1);
        self.state.lock().unwrap().files.remove(&path);
    }

    pub fn fault(&self, url: &str, f: Faults) {
        let path = format!("/{}", url.split_once("://").unwrap().1);
        self.state.lock().unwrap().faults.insert(path, f);
    }

    pub fn hits(&self, url: &str) -> u32 {
        let path = format!("/{}", url.split_once("://").unwrap().1);
        *self.state.lock().unwrap().hits.get(&path).unwrap_or(&0)
    }

    /// The most requests the server was answering at the same time.
    pub fn max_in_flight(&self) -> u32 {
        self.state.lock().unwrap().max_in_flight
    }

    pub fn total_hits(&self) -> u32 {
        self.state.lock().unwrap().hits.values().sum()
    }
}

pub fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A `.tar.gz` with the given entries (name, bytes, mode).
pub fn tar_gz(entries: &[(String, Vec<u8>, u32)]) -> Vec<u8> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    let mut b = tar::Builder::new(enc);
    for (name, bytes, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// The Debian binaries the fixtures are built from; `None` (with the reason) when missing.
pub fn debian_binaries() -> Result<BTreeMap<&'static str, PathBuf>, String> {
    let wanted: [(&str, &[&str]); 7] = [
        ("containerd", &["/usr/bin/containerd"]),
        ("ctr", &["/usr/bin/ctr"]),
        (
            "containerd-shim-runc-v2",
            &["/usr/bin/containerd-shim-runc-v2"],
        ),
        ("runc", &["/usr/sbin/runc", "/usr/bin/runc"]),
        ("bridge", &["/usr/lib/cni/bridge"]),
        ("host-local", &["/usr/lib/cni/host-local"]),
        ("portmap", &["/usr/lib/cni/portmap"]),
    ];
    let mut out = BTreeMap::new();
    for (name, candidates) in wanted {
        let p = candidates
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| format!("{name} is not installed (Debian packages containerd, runc, containernetworking-plugins)"))?;
        out.insert(name, p);
    }
    let lo = PathBuf::from("/usr/lib/cni/loopback");
    if !lo.exists() {
        return Err("/usr/lib/cni/loopback is missing".into());
    }
    out.insert("loopback", lo);
    Ok(out)
}

pub const K8S_VERSION: &str = "1.30.4";
pub const RUNC_VERSION: &str = "1.1.12";
pub const CONTAINERD_VERSION: &str = "1.7.20";
pub const CNI_VERSION: &str = "1.5.1";
pub const NPD_VERSION: &str = "v1.35.1";

/// A FIXTURE Kubernetes binary: a shell script that prints `Kubernetes v<version>` for `--version`.
pub fn fixture_kube_binary(name: &str, version: &str) -> Vec<u8> {
    format!(
        "#!/bin/sh\n# FIXTURE {name} for aks-flex-node tests; not a real Kubernetes binary.\nif [ \"$1\" = \"--version\" ]; then echo \"Kubernetes v{version}\"; exit 0; fi\necho \"fixture {name}\"\n"
    )
    .into_bytes()
}

/// Everything the runtime needs, in upstream layout, served by `server`.
pub struct Fixtures {
    pub runc: Vec<u8>,
    pub containerd_tgz: Vec<u8>,
    pub cni_tgz: Vec<u8>,
    pub npd_tgz: Vec<u8>,
    pub kube: BTreeMap<String, Vec<u8>>,
}

pub fn arch() -> &'static str {
    aks_flex_node::artifacts::host_arch()
}

pub fn runc_url() -> String {
    format!(
        "https://github.com/opencontainers/runc/releases/download/v{RUNC_VERSION}/runc.{}",
        arch()
    )
}
pub fn containerd_url() -> String {
    format!("https://github.com/containerd/containerd/releases/download/v{CONTAINERD_VERSION}/containerd-{CONTAINERD_VERSION}-linux-{}.tar.gz", arch())
}
pub fn cni_url() -> String {
    format!("https://github.com/containernetworking/plugins/releases/download/v{CNI_VERSION}/cni-plugins-linux-{}-v{CNI_VERSION}.tgz", arch())
}
pub fn npd_url() -> String {
    format!("https://github.com/kubernetes/node-problem-detector/releases/download/{NPD_VERSION}/node-problem-detector-{NPD_VERSION}-linux_{}.tar.gz", arch())
}
pub fn kube_url(b: &str) -> String {
    format!(
        "https://dl.k8s.io/release/v{K8S_VERSION}/bin/linux/{}/{b}",
        arch()
    )
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

impl Fixtures {
    /// Built from the Debian binaries (containerd + runc and/or the CNI plugins; tiny fixtures for the
    /// rest, to keep the debug-build hashing cheap). Err(reason) when they are not installed.
    pub fn build(containerd: bool, cni: bool) -> Result<Fixtures, String> {
        let bins = debian_binaries()?;
        let mut f = Self::tiny();
        if containerd {
            f.runc = read(&bins["runc"]);
            f.containerd_tgz = tar_gz(&[
                ("bin/containerd".into(), read(&bins["containerd"]), 0o755),
                ("bin/ctr".into(), read(&bins["ctr"]), 0o755),
                (
                    "bin/containerd-shim-runc-v2".into(),
                    read(&bins["containerd-shim-runc-v2"]),
                    0o755,
                ),
            ]);
        }
        if cni {
            f.cni_tgz = tar_gz(&[
                ("./bridge".into(), read(&bins["bridge"]), 0o755),
                ("./host-local".into(), read(&bins["host-local"]), 0o755),
                ("./loopback".into(), read(&bins["loopback"]), 0o755),
                ("./portmap".into(), read(&bins["portmap"]), 0o755),
            ]);
        }
        Ok(f)
    }

    /// Small synthetic fixtures (no Debian binaries needed) for the download-path tests.
    pub fn tiny() -> Fixtures {
        let runc = b"#!/bin/sh\necho runc fixture\n".to_vec();
        let containerd_tgz = tar_gz(&[
            (
                "bin/containerd".into(),
                b"containerd fixture".to_vec(),
                0o755,
            ),
            ("bin/ctr".into(), b"ctr fixture".to_vec(), 0o755),
            (
                "bin/containerd-shim-runc-v2".into(),
                b"shim fixture".to_vec(),
                0o755,
            ),
        ]);
        let cni_tgz = tar_gz(&[
            ("./bridge".into(), b"bridge".to_vec(), 0o755),
            ("./host-local".into(), b"host-local".to_vec(), 0o755),
            ("./loopback".into(), b"loopback".to_vec(), 0o755),
            ("./portmap".into(), b"portmap".to_vec(), 0o755),
        ]);
        Self::with(runc, containerd_tgz, cni_tgz)
    }

    fn with(runc: Vec<u8>, containerd_tgz: Vec<u8>, cni_tgz: Vec<u8>) -> Fixtures {
        let npd_tgz = tar_gz(&[
            (
                "bin/node-problem-detector".into(),
                b"#!/bin/sh\n# FIXTURE node-problem-detector\necho npd\n".to_vec(),
                0o755,
            ),
            (
                "config/kernel-monitor.json".into(),
                br#"{"plugin":"kmsg","source":"kernel-monitor","rules":[]}"#.to_vec(),
                0o644,
            ),
        ]);
        let kube = ["kubelet", "kubectl", "kubeadm"]
            .iter()
            .map(|b| (b.to_string(), fixture_kube_binary(b, K8S_VERSION)))
            .collect();
        Fixtures {
            runc,
            containerd_tgz,
            cni_tgz,
            npd_tgz,
            kube,
        }
    }

    /// Serve every artifact with its upstream checksum file (NPD publishes none: its digest is pinned
    /// in the config by [`config_json`]).
    pub fn serve(&self, s: &ArtifactServer) {
        let a = arch();
        s.put_url(&runc_url(), self.runc.clone());
        s.put_url(
            &format!("https://github.com/opencontainers/runc/releases/download/v{RUNC_VERSION}/runc.sha256sum"),
            format!("{}  runc.arm64\n{}  runc.{a}\n", "0".repeat(64), sha256(&self.runc)).into_bytes(),
        );
        s.put_url(&containerd_url(), self.containerd_tgz.clone());
        s.put_url(
            &format!("{}.sha256sum", containerd_url()),
            format!(
                "{}  containerd-{CONTAINERD_VERSION}-linux-{a}.tar.gz\n",
                sha256(&self.containerd_tgz)
            )
            .into_bytes(),
        );
        s.put_url(&cni_url(), self.cni_tgz.clone());
        s.put_url(
            &format!("{}.sha256", cni_url()),
            format!(
                "{}  cni-plugins-linux-{a}-v{CNI_VERSION}.tgz\n",
                sha256(&self.cni_tgz)
            )
            .into_bytes(),
        );
        s.put_url(&npd_url(), self.npd_tgz.clone());
        for (b, bytes) in &self.kube {
            s.put_url(&kube_url(b), bytes.clone());
            s.put_url(
                &format!("{}.sha256", kube_url(b)),
                sha256(bytes).into_bytes(),
            );
        }
    }
}

/// A valid config using `mirror` for every artifact, with test-friendly settings merged from `extra`.
pub fn config_json(
    mirror: &str,
    fixtures: &Fixtures,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "azure": {
            "subscriptionId": "8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8",
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "targetCluster": {
                "resourceId": "/subscriptions/8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8/resourceGroups/flex-rg/providers/Microsoft.ContainerService/managedClusters/flex-cluster",
                "location": "westus"
            }
        },
        "agent": { "nodeName": "flex-node-1" },
        "kubernetes": { "version": K8S_VERSION },
        "runc": { "version": RUNC_VERSION },
        "containerd": { "version": CONTAINERD_VERSION },
        "cni": { "version": CNI_VERSION },
        "npd": { "version": NPD_VERSION, "sha256": sha256(&fixtures.npd_tgz) },
        "networking": { "podCIDR": "10.244.3.0/24" },
        "node": { "kubelet": {
            "serverURL": "https://flex-cluster.hcp.westus.azmk8s.io:443",
            "caCertData": test_ca_b64(),
        } },
        "artifacts": { "mirror": mirror }
    });
    merge(&mut v, extra);
    v
}

pub fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

pub fn load_config(v: &serde_json::Value) -> aks_flex_node::config::Config {
    let env = |_: &str| None;
    let opts = aks_flex_node::config::LoadOptions {
        hostname: "flex-node-1".into(),
        env: &env,
    };
    match aks_flex_node::config::load_str(&v.to_string(), "test", &opts) {
        Ok(l) => l.config,
        Err(e) => panic!("test config invalid: {e}"),
    }
}

pub fn write_config(dir: &Path, v: &serde_json::Value) -> PathBuf {
    let p = dir.join("config.json");
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(v.to_string().as_bytes()).unwrap();
    p
}

/// A self-signed test CA certificate (no key kept): test data only.
pub const TEST_CA_PEM: &str = include_str!("../../fixtures/runtime/test-ca.pem");

pub fn test_ca_b64() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(TEST_CA_PEM)
}

/// An engine context on the sandbox root `root` for `config` (as [`config_json`] makes it).
pub fn context(config: &serde_json::Value, root: &Path) -> Context {
    let cfg = Arc::new(load_config(config));
    Context::new(cfg, Arc::new(Host::new(root).unwrap())).unwrap()
}

/// Converges `steps` as bootstrap does, with the phases `skip` skipped; the error as text.
pub async fn run_steps(
    ctx: &Context,
    steps: &[Box<dyn Step>],
    skip: &[Phase],
) -> (Vec<StepReport>, Result<(), String>) {
    let skip: BTreeSet<Phase> = skip.iter().copied().collect();
    let (reports, res) = steps::bootstrap(ctx, steps, &skip).await;
    (reports, res.map_err(|e| e.to_string()))
}
