//! Artifact and config variants the default path does not exercise: the original's
//! `kubernetes.urlTemplate` tarball (kubernetes-node-linux-ARCH.tar.gz, verified binary by binary against
//! the configured `kubernetes.sha256` pins) and containerd 2.x (tarball without v1 shims, config
//! version 3), all served by the loopback artifact server through the mirror setting.

use std::path::Path;

use aks_flex_node::model::Phase;
use aks_flex_node::steps::{self, Step};

use crate::support::runtime::*;

/// The original's template (the default in its docs); fetched as `<mirror>/acs-mirror.azureedge.net/...`.
const TEMPLATE: &str =
    "https://acs-mirror.azureedge.net/kubernetes/v%s/binaries/kubernetes-node-linux-%s.tar.gz";

fn node_tarball_url() -> String {
    TEMPLATE
        .replacen("%s", K8S_VERSION, 1)
        .replacen("%s", arch(), 1)
}

/// A kubernetes-node tarball in the upstream layout (plus an entry the agent must ignore).
fn node_tarball(fx: &Fixtures, kubelet: &[u8]) -> Vec<u8> {
    tar_gz(&[
        (
            "kubernetes/node/bin/kubelet".into(),
            kubelet.to_vec(),
            0o755,
        ),
        (
            "kubernetes/node/bin/kubectl".into(),
            fx.kube["kubectl"].clone(),
            0o755,
        ),
        (
            "kubernetes/node/bin/kubeadm".into(),
            fx.kube["kubeadm"].clone(),
            0o755,
        ),
        (
            "kubernetes/node/bin/kube-proxy".into(),
            b"not installed".to_vec(),
            0o755,
        ),
    ])
}

fn pins(fx: &Fixtures) -> serde_json::Value {
    serde_json::json!({
        "kubelet": sha256(&fx.kube["kubelet"]),
        "kubectl": sha256(&fx.kube["kubectl"]),
        "kubeadm": sha256(&fx.kube["kubeadm"]),
    })
}

async fn run_step(
    step: Box<dyn Step>,
    server: &ArtifactServer,
    fx: &Fixtures,
    root: &Path,
    extra: serde_json::Value,
) -> Result<(), String> {
    let ctx = context(&config_json(&server.base, fx, extra), root);
    let (_r, res) = run_steps(&ctx, &[step], &[Phase::Identity, Phase::Activation]).await;
    res
}

fn kube_step() -> Box<dyn Step> {
    Box::new(steps::kube_binaries::KubeBinariesInstaller)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_template_tarball_installs_the_three_pinned_binaries_and_then_converges() {
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    server.put_url(&node_tarball_url(), node_tarball(&fx, &fx.kube["kubelet"]));
    let root = tempfile::tempdir().unwrap();
    let extra = serde_json::json!({"kubernetes": {"urlTemplate": TEMPLATE, "sha256": pins(&fx), "installKubeadm": true}});
    run_step(kube_step(), &server, &fx, root.path(), extra.clone())
        .await
        .unwrap();
    for b in ["kubelet", "kubectl", "kubeadm"] {
        let p = root.path().join("usr/local/bin").join(b);
        assert_eq!(std::fs::read(&p).unwrap(), fx.kube[b], "{b}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o755
        );
    }
    assert!(!root.path().join("usr/local/bin/kube-proxy").exists());
    assert_eq!(server.hits(&node_tarball_url()), 1);
    // The per-binary URLs were never asked for.
    assert_eq!(server.hits(&kube_url("kubelet")), 0);

    // Converged: nothing fetched again.
    let hits = server.total_hits();
    run_step(kube_step(), &server, &fx, root.path(), extra)
        .await
        .unwrap();
    assert_eq!(server.total_hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_template_tarball_with_a_binary_not_matching_its_pin_installs_nothing() {
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    let evil = fixture_kube_binary("kubelet", K8S_VERSION)
        .into_iter()
        .chain(b"# tampered\n".iter().copied())
        .collect::<Vec<u8>>();
    server.put_url(&node_tarball_url(), node_tarball(&fx, &evil));
    let root = tempfile::tempdir().unwrap();
    let extra = serde_json::json!({"kubernetes": {"urlTemplate": TEMPLATE, "sha256": pins(&fx)}});
    let err = run_step(kube_step(), &server, &fx, root.path(), extra)
        .await
        .unwrap_err();
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(err.contains("kubelet"), "{err}");
    assert!(err.contains(&sha256(&fx.kube["kubelet"])), "{err}");
    assert!(err.contains(&sha256(&evil)), "{err}");
    for b in ["kubelet", "kubectl", "kubeadm"] {
        assert!(!root.path().join("usr/local/bin").join(b).exists(), "{b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_template_without_pins_is_refused_before_any_download() {
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    server.put_url(&node_tarball_url(), node_tarball(&fx, &fx.kube["kubelet"]));
    let root = tempfile::tempdir().unwrap();
    let extra = serde_json::json!({"kubernetes": {"urlTemplate": TEMPLATE,
        "sha256": {"kubelet": sha256(&fx.kube["kubelet"])}}});
    let err = run_step(kube_step(), &server, &fx, root.path(), extra)
        .await
        .unwrap_err();
    assert!(err.contains("kubernetes.sha256.kubectl"), "{err}");
    assert_eq!(server.total_hits(), 0);
}

/// kubeadm is off by default: neither downloaded nor installed. A node where an earlier run installed it
/// (installKubeadm on, or the previous agent version) loses it once the setting is off, and then converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeadm_is_optional_off_by_default_and_removed_when_turned_off() {
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    fx.serve(&server);
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("usr/local/bin");

    run_step(
        kube_step(),
        &server,
        &fx,
        root.path(),
        serde_json::json!({}),
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(bin.join("kubelet")).unwrap(),
        fx.kube["kubelet"]
    );
    assert_eq!(
        std::fs::read(bin.join("kubectl")).unwrap(),
        fx.kube["kubectl"]
    );
    assert!(!bin.join("kubeadm").exists());
    assert_eq!(server.hits(&kube_url("kubeadm")), 0);

    // Turned on: installed.
    let on = serde_json::json!({"kubernetes": {"installKubeadm": true}});
    run_step(kube_step(), &server, &fx, root.path(), on)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(bin.join("kubeadm")).unwrap(),
        fx.kube["kubeadm"]
    );

    // Turned off again: the agent's own kubeadm is removed, nothing is downloaded.
    let hits = server.total_hits();
    run_step(
        kube_step(),
        &server,
        &fx,
        root.path(),
        serde_json::json!({}),
    )
    .await
    .unwrap();
    assert!(!bin.join("kubeadm").exists());
    assert!(bin.join("kubelet").exists() && bin.join("kubectl").exists());
    assert_eq!(server.total_hits(), hits);

    // Converged.
    let ctx = context(
        &config_json(&server.base, &fx, serde_json::json!({})),
        root.path(),
    );
    let plan = steps::plan(&ctx, &[kube_step()], &Default::default())
        .await
        .unwrap();
    assert!(plan.converged, "{:?}", plan.steps[0].actions);
}

/// A table path followed by more keys.
fn cat<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    [a, b].concat()
}

const CONTAINERD2: &str = "2.0.5";

fn containerd2_url() -> String {
    format!("https://github.com/containerd/containerd/releases/download/v{CONTAINERD2}/containerd-{CONTAINERD2}-linux-{}.tar.gz", arch())
}

/// containerd 2.x: the release tarball has no v1 shims; the agent installs what it ships and renders
/// config version 3.
///
/// Debian 12's containerd is 1.6, which cannot validate a version 3 file: it starts with one but silently
/// ignores the `io.containerd.cri.v1.*` sections (its CRI keeps the default sandbox image). So this test
/// only checks that the file parses as TOML and has exactly the tables and keys containerd 2.x reads
/// (`io.containerd.cri.v1.images` / `io.containerd.cri.v1.runtime`, as in `containerd config default` of
/// 2.0); loading it into a real containerd 2.x is left to the end-to-end environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_2_installs_without_v1_shims_and_renders_a_version_3_config() {
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    let tgz = tar_gz(&[
        (
            "bin/containerd".into(),
            b"containerd 2 fixture".to_vec(),
            0o755,
        ),
        (
            "bin/containerd-shim-runc-v2".into(),
            b"shim".to_vec(),
            0o755,
        ),
        ("bin/containerd-stress".into(), b"stress".to_vec(), 0o755),
        ("bin/ctr".into(), b"ctr".to_vec(), 0o755),
    ]);
    server.put_url(&containerd2_url(), tgz.clone());
    server.put_url(
        &format!("{}.sha256sum", containerd2_url()),
        format!(
            "{}  containerd-{CONTAINERD2}-linux-{}.tar.gz\n",
            sha256(&tgz),
            arch()
        )
        .into_bytes(),
    );
    let root = tempfile::tempdir().unwrap();
    let extra = serde_json::json!({"containerd": {"version": CONTAINERD2}});
    run_step(
        Box::new(steps::containerd::ContainerdInstaller),
        &server,
        &fx,
        root.path(),
        extra,
    )
    .await
    .unwrap();
    let bin = root.path().join("usr/bin");
    for b in [
        "containerd",
        "containerd-shim-runc-v2",
        "containerd-stress",
        "ctr",
    ] {
        assert!(bin.join(b).exists(), "{b}");
    }
    assert!(!bin.join("containerd-shim").exists());
    assert!(!bin.join("containerd-shim-runc-v1").exists());

    let text = std::fs::read_to_string(root.path().join("etc/containerd/config.toml")).unwrap();
    let doc: toml_edit::DocumentMut = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
    let get = |path: &[&str]| -> toml_edit::Item {
        let mut item = doc.as_item().clone();
        for k in path {
            item = item
                .get(k)
                .unwrap_or_else(|| panic!("missing {path:?} in:\n{text}"))
                .clone();
        }
        item
    };
    let s = |path: &[&str]| get(path).as_str().map(str::to_string);
    assert_eq!(get(&["version"]).as_integer(), Some(3));
    let images = ["plugins", "io.containerd.cri.v1.images"];
    let runtime = ["plugins", "io.containerd.cri.v1.runtime"];
    assert_eq!(
        s(&cat(&images, &["pinned_images", "sandbox"])).as_deref(),
        Some("mcr.microsoft.com/oss/kubernetes/pause:3.6")
    );
    assert_eq!(
        s(&cat(&images, &["registry", "config_path"])).as_deref(),
        Some("/etc/containerd/certs.d")
    );
    let runc = cat(&runtime, &["containerd", "runtimes", "runc"]);
    assert_eq!(
        s(&cat(&runtime, &["containerd", "default_runtime_name"])).as_deref(),
        Some("runc")
    );
    assert_eq!(
        s(&cat(&runc, &["runtime_type"])).as_deref(),
        Some("io.containerd.runc.v2")
    );
    assert_eq!(
        get(&cat(&runc, &["options", "SystemdCgroup"])).as_bool(),
        Some(true)
    );
    assert_eq!(
        s(&cat(&runc, &["options", "BinaryName"])).as_deref(),
        Some("/usr/bin/runc")
    );
    assert_eq!(
        s(&cat(&runtime, &["cni", "bin_dir"])).as_deref(),
        Some("/opt/cni/bin")
    );
    assert_eq!(
        s(&cat(&runtime, &["cni", "conf_dir"])).as_deref(),
        Some("/etc/cni/net.d")
    );
    assert_eq!(
        s(&["metrics", "address"]).as_deref(),
        Some("127.0.0.1:1338")
    );
    // The 1.x (v2) CRI table and its sandbox_image key must not appear in a v3 file.
    let plugins = get(&["plugins"]);
    let tables: Vec<String> = plugins
        .as_table_like()
        .unwrap()
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(
        tables,
        [
            "io.containerd.cri.v1.images",
            "io.containerd.cri.v1.runtime"
        ],
        "{text}"
    );
    assert!(!text.contains("sandbox_image"), "{text}");
}
