//! Artifact fetching against a loopback HTTP server: happy path, checksum mismatch, 404, truncated
//! download, transient 503, cache hit, offline bundle, mirror mapping, pins winning over checksum files.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::support::runtime::*;
use aks_flex_node::artifacts::{self, ArtifactError, Fetcher, FetcherOptions};
use aks_flex_node::host::Host;

fn opts(mirror: &str) -> FetcherOptions {
    FetcherOptions {
        mirror: Some(format!("{mirror}/")),
        offline: None,
        retries: 2,
        backoff: Duration::from_millis(5),
        timeout: Duration::from_secs(10),
    }
}

fn no_hook() -> impl Fn(&Path) -> Result<(), ArtifactError> + Send + Sync {
    |_p: &Path| Ok(())
}

async fn setup() -> (tempfile::TempDir, Arc<Host>, ArtifactServer, Fixtures) {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(Host::new(dir.path()).unwrap());
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    fx.serve(&server);
    (dir, host, server, fx)
}

fn cfg(server: &ArtifactServer, fx: &Fixtures) -> aks_flex_node::config::Config {
    load_config(&config_json(&server.base, fx, serde_json::json!({})))
}

#[tokio::test]
async fn happy_path_verifies_against_the_upstream_checksum_file_through_the_mirror() {
    let (dir, host, server, fx) = setup().await;
    let cfg = cfg(&server, &fx);
    let spec = artifacts::runc_spec(&cfg, arch());
    let f = Fetcher::new(host, opts(&server.base)).unwrap();
    let got = f.fetch(&spec, &no_hook()).await.unwrap();
    assert_eq!(got.sha256, sha256(&fx.runc));
    assert!(!got.from_cache);
    assert_eq!(
        got.path,
        Path::new("/var/cache/aks-flex-node/sha256").join(&got.sha256)
    );
    assert_eq!(std::fs::read(&got.real_path).unwrap(), fx.runc);
    assert!(got
        .real_path
        .starts_with(dir.path().canonicalize().unwrap()));
    assert_eq!(server.hits(&runc_url()), 1);
    // No temporary file is left behind.
    let tmp = dir.path().join("var/cache/aks-flex-node/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[tokio::test]
async fn checksum_mismatch_names_component_url_expected_and_actual_and_keeps_nothing() {
    let (dir, host, server, fx) = setup().await;
    server.put_url(&containerd_url(), b"tampered bytes".to_vec());
    let cfg = cfg(&server, &fx);
    let spec = artifacts::containerd_spec(&cfg, arch());
    let f = Fetcher::new(host, opts(&server.base)).unwrap();
    let err = f.fetch(&spec, &no_hook()).await.unwrap_err().to_string();
    assert!(err.contains("containerd 1.7.20"), "{err}");
    assert!(err.contains(&sha256(&fx.containerd_tgz)), "{err}");
    assert!(err.contains(&sha256(b"tampered bytes")), "{err}");
    assert!(
        err.contains("127.0.0.1") && err.contains("github.com/containerd"),
        "{err}"
    );
    let cache = dir.path().join("var/cache/aks-flex-node/sha256");
    assert_eq!(std::fs::read_dir(cache).unwrap().count(), 0);
}

#[tokio::test]
async fn a_404_says_which_version_and_arch_is_missing_without_retrying() {
    let (_dir, host, server, fx) = setup().await;
    let cfg = load_config(&config_json(
        &server.base,
        &fx,
        serde_json::json!({"cni": {"version": "9.9.9"}}),
    ));
    let spec = artifacts::cni_spec(&cfg, arch());
    let f = Fetcher::new(host, opts(&server.base)).unwrap();
    let err = f.fetch(&spec, &no_hook()).await.unwrap_err();
    assert!(matches!(err, ArtifactError::NotFound { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("cni 9.9.9") && text.contains(arch()),
        "{text}"
    );
    assert_eq!(server.hits(&format!("{}.sha256", spec.url)), 1);
}

#[tokio::test]
async fn truncated_and_unavailable_downloads_are_retried_then_succeed() {
    let (_dir, host, server, fx) = setup().await;
    server.fault(
        &containerd_url(),
        Faults {
            truncate: 1,
            unavailable: 1,
            ..Default::default()
        },
    );
    let cfg = cfg(&server, &fx);
    let spec = artifacts::containerd_spec(&cfg, arch());
    let f = Fetcher::new(host, opts(&server.base)).unwrap();
    let got = f.fetch(&spec, &no_hook()).await.unwrap();
    assert_eq!(got.sha256, sha256(&fx.containerd_tgz));
    assert_eq!(server.hits(&containerd_url()), 3);
}

#[tokio::test]
async fn persistent_truncation_fails_after_the_retries_with_the_reason() {
    let (_dir, host, server, fx) = setup().await;
    server.fault(
        &containerd_url(),
        Faults {
            truncate: 100,
            ..Default::default()
        },
    );
    let cfg = cfg(&server, &fx);
    let spec = artifacts::containerd_spec(&cfg, arch());
    let f = Fetcher::new(host, opts(&server.base)).unwrap();
    let err = f.fetch(&spec, &no_hook()).await.unwrap_err().to_string();
    assert!(err.contains("3 attempt(s)"), "{err}");
    assert_eq!(server.hits(&containerd_url()), 3);
}

#[tokio::test]
async fn cache_hit_downloads_nothing_and_a_corrupt_cache_entry_is_refetched() {
    let (_dir, host, server, fx) = setup().await;
    let cfg = cfg(&server, &fx);
    let spec = artifacts::containerd_spec(&cfg, arch());
    let f = Fetcher::new(host, opts(&server.base)).unwrap();
    let first = f.fetch(&spec, &no_hook()).await.unwrap();
    let again = f.fetch(&spec, &no_hook()).await.unwrap();
    assert!(again.from_cache);
    assert_eq!(server.hits(&containerd_url()), 1);
    std::fs::write(&first.real_path, b"bit rot").unwrap();
    let third = f.fetch(&spec, &no_hook()).await.unwrap();
    assert!(!third.from_cache);
    assert_eq!(std::fs::read(&third.real_path).unwrap(), fx.containerd_tgz);
    assert_eq!(server.hits(&containerd_url()), 2);
}

#[tokio::test]
async fn a_configured_pin_wins_over_the_checksum_file() {
    let (_dir, host, server, fx) = setup().await;
    let cfg = load_config(&config_json(
        &server.base,
        &fx,
        serde_json::json!({"runc": {"sha256": "ab".repeat(32)}}),
    ));
    let spec = artifacts::runc_spec(&cfg, arch());
    let f = Fetcher::new(host, opts(&server.base)).unwrap();
    let err = f.fetch(&spec, &no_hook()).await.unwrap_err().to_string();
    assert!(err.contains(&"ab".repeat(32)), "{err}");
    // The checksum file was never consulted.
    assert_eq!(
        server.hits(&format!(
            "https://github.com/opencontainers/runc/releases/download/v{RUNC_VERSION}/runc.sha256sum"
        )),
        0
    );
}

#[tokio::test]
async fn npd_without_a_pin_or_mirror_checksum_is_refused_naming_what_to_set() {
    let (_dir, host, server, fx) = setup().await;
    let mut v = config_json(&server.base, &fx, serde_json::json!({}));
    v["npd"].as_object_mut().unwrap().remove("sha256");
    let cfg = load_config(&v);
    let spec = artifacts::npd_spec(&cfg, arch());
    let f = Fetcher::new(host.clone(), opts(&server.base)).unwrap();
    let err = f.fetch(&spec, &no_hook()).await.unwrap_err().to_string();
    let file = format!(
        "node-problem-detector-{NPD_VERSION}-linux_{}.tar.gz",
        arch()
    );
    assert!(
        err.contains("set npd.sha256 to the sha256 of")
            && err.contains(&file)
            && err.contains("npd.enabled: false")
            && err.contains(&format!("the mirror has no {file}.sha256")),
        "{err}"
    );
    // Only the mirror's (absent) checksum file was asked for, never the tarball.
    assert_eq!(server.hits(&format!("{}.sha256", npd_url())), 1);
    assert_eq!(server.hits(&npd_url()), 0);

    // Without a mirror there is no digest source at all: refused without any request.
    v["artifacts"].as_object_mut().unwrap().remove("mirror");
    let cfg = load_config(&v);
    let spec = artifacts::npd_spec(&cfg, arch());
    assert!(artifacts::check_digest_source(&spec, None)
        .unwrap_err()
        .to_string()
        .contains("set npd.sha256"));
    let before = server.total_hits();
    let err = f.fetch(&spec, &no_hook()).await.unwrap_err().to_string();
    assert!(err.contains("set npd.sha256"), "{err}");
    assert_eq!(server.total_hits(), before);
}

#[tokio::test]
async fn npd_is_verified_against_a_sha256_file_next_to_it_on_the_mirror() {
    let (_dir, host, server, fx) = setup().await;
    let mut v = config_json(&server.base, &fx, serde_json::json!({}));
    v["npd"].as_object_mut().unwrap().remove("sha256");
    let cfg = load_config(&v);
    let spec = artifacts::npd_spec(&cfg, arch());
    let f = Fetcher::new(host, opts(&server.base)).unwrap();
    server.put_url(
        &format!("{}.sha256", npd_url()),
        sha256(&fx.npd_tgz).into_bytes(),
    );
    let got = f.fetch(&spec, &no_hook()).await.unwrap();
    assert_eq!(got.sha256, sha256(&fx.npd_tgz));
    // A wrong digest there is a mismatch, like any checksum file.
    server.put_url(
        &format!("{}.sha256", npd_url()),
        "cd".repeat(32).into_bytes(),
    );
    std::fs::remove_file(&got.real_path).unwrap();
    let err = f.fetch(&spec, &no_hook()).await.unwrap_err().to_string();
    assert!(
        err.contains("sha256 mismatch") && err.contains(&"cd".repeat(32)),
        "{err}"
    );
}

#[tokio::test]
async fn offline_bundle_is_used_without_network_and_verified() {
    let (_dir, host, server, fx) = setup().await;
    let bundle = tempfile::tempdir().unwrap();
    let file = format!("runc.{}", arch());
    std::fs::write(bundle.path().join(&file), &fx.runc).unwrap();
    let manifest = serde_json::json!({
        "apiVersion": "aks-flex-node/v1", "kind": "ArtifactBundle",
        "artifacts": [{"component": "runc", "version": RUNC_VERSION, "arch": arch(), "file": file, "sha256": sha256(&fx.runc)}]
    });
    std::fs::write(bundle.path().join("manifest.json"), manifest.to_string()).unwrap();
    let cfg = cfg(&server, &fx);
    let spec = artifacts::runc_spec(&cfg, arch());
    let mut o = opts("http://127.0.0.1:9"); // nothing listens there: the bundle must suffice
    o.offline = Some(format!("file://{}", bundle.path().display()));
    let f = Fetcher::new(host.clone(), o.clone()).unwrap();
    let got = f.fetch(&spec, &no_hook()).await.unwrap();
    assert_eq!(got.sha256, sha256(&fx.runc));
    assert_eq!(server.total_hits(), 0);

    // A tampered bundle file is rejected against its manifest digest.
    std::fs::write(bundle.path().join(&file), b"evil").unwrap();
    std::fs::remove_file(&got.real_path).unwrap();
    let f = Fetcher::new(host, o).unwrap();
    let err = f.fetch(&spec, &no_hook()).await.unwrap_err().to_string();
    assert!(err.contains("sha256 mismatch"), "{err}");
}

#[tokio::test]
async fn fetch_all_runs_in_parallel_and_keeps_order() {
    let (_dir, host, server, fx) = setup().await;
    let cfg = cfg(&server, &fx);
    let specs = match artifacts::kube_source(&cfg, arch()).unwrap() {
        artifacts::KubeSource::Binaries(b) => b,
        other => panic!("{other:?}"),
    };
    let f = Fetcher::new(host, opts(&server.base)).unwrap();
    let got = f.fetch_all(&specs, &no_hook()).await.unwrap();
    let names: Vec<_> = got.iter().map(|g| g.sha256.clone()).collect();
    // kubeadm is only fetched with kubernetes.installKubeadm (off by default).
    assert_eq!(
        names,
        ["kubelet", "kubectl"]
            .iter()
            .map(|b| sha256(&fx.kube[*b]))
            .collect::<Vec<_>>()
    );
}
