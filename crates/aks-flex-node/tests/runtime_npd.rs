//! node-problem-detector has no upstream checksum file and the agent carries no digest for it: a config
//! without `npd.sha256` is refused while bootstrap plans its downloads, with one message saying what to
//! set, before anything changes (`plan` shows the blocker); a mirror's `.sha256` next to the tarball and an offline bundle built from it are digest sources.

mod runtime_support;

use std::path::Path;
use std::sync::Arc;

use aks_flex_node::host::Host;
use aks_flex_node::steps::{self, Context, Phase};
use runtime_support::*;

fn without_npd_pin(mut v: serde_json::Value) -> serde_json::Value {
    v["npd"].as_object_mut().unwrap().remove("sha256");
    v
}

fn cli(root: &Path, config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_aks-flex-node"))
        .args(args)
        .arg("--root")
        .arg(root)
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        // No mirror is configured here: should anything try to download, it hits a closed local port.
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env_remove("NO_PROXY")
        .output()
        .unwrap()
}

#[test]
fn a_default_config_without_npd_sha256_is_refused_before_anything_changes_saying_what_to_set() {
    let fx = Fixtures::tiny();
    let mut v = without_npd_pin(config_json("http://unused", &fx, serde_json::json!({})));
    v.as_object_mut().unwrap().remove("artifacts");
    let cfgdir = tempfile::tempdir().unwrap();
    let config = write_config(cfgdir.path(), &v);
    let root = tempfile::tempdir().unwrap();
    let file = format!(
        "node-problem-detector-{NPD_VERSION}-linux_{}.tar.gz",
        arch()
    );

    // `plan` (a preview) still lists every step and shows the blocker on the NPD install.
    let out = cli(
        root.path(),
        &config,
        &["plan", "--skip-phase", "identity", "-o", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let npd = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "NPD_Installer")
        .unwrap();
    let summary = npd["actions"][0]["summary"].as_str().unwrap();
    assert!(
        summary.contains("BLOCKED")
            && summary.contains(&format!("set npd.sha256 to the sha256 of {file}"))
            && summary.contains("npd.enabled: false"),
        "{summary}"
    );

    // bootstrap refuses while planning its downloads, before anything is written.
    let out = cli(
        root.path(),
        &config,
        &["bootstrap", "--skip-phase", "identity"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("bootstrap failed at step NPD_Installer")
            && stderr.contains(&format!("set npd.sha256 to the sha256 of {file}"))
            && stderr.contains("npd.enabled: false"),
        "{stderr}"
    );
    let written: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    // Only the agent's own log (var/log/aks-flex-node) exists: no state, no cache, nothing installed.
    assert_eq!(written, ["var"], "{stderr}");
    let var: Vec<_> = std::fs::read_dir(root.path().join("var"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(var, ["log"], "{stderr}");

    // npd.enabled: false is the other way out.
    let mut v2 = v.clone();
    v2["npd"]["enabled"] = serde_json::json!(false);
    let config = write_config(cfgdir.path(), &v2);
    let out = cli(root.path(), &config, &["plan", "--skip-phase", "identity"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_sha256_file_then_a_bundle_built_from_it_verify_npd_without_a_pin() {
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    fx.serve(&server);
    server.put_url(
        &format!("{}.sha256", npd_url()),
        format!(
            "{}  node-problem-detector-{NPD_VERSION}-linux_{}.tar.gz\n",
            sha256(&fx.npd_tgz),
            arch()
        )
        .into_bytes(),
    );
    let cfg = load_config(&without_npd_pin(config_json(
        &server.base,
        &fx,
        serde_json::json!({}),
    )));
    let build_root = tempfile::tempdir().unwrap();
    let bundle = tempfile::tempdir().unwrap();
    let manifest = aks_flex_node::artifacts::bundle::build(
        &cfg,
        Arc::new(Host::new(build_root.path()).unwrap()),
        bundle.path(),
    )
    .await
    .unwrap();
    let npd = manifest
        .artifacts
        .iter()
        .find(|a| a.component == "npd")
        .unwrap();
    assert_eq!(npd.sha256, sha256(&fx.npd_tgz));

    // Air-gapped (the mirror is a closed port) and still no npd.sha256: the bundle's manifest verifies it.
    let air = load_config(&without_npd_pin(config_json(
        "http://127.0.0.1:9",
        &fx,
        serde_json::json!({"bootstrap": {"offlineArtifacts": {"source": bundle.path().display().to_string()}}}),
    )));
    let root = tempfile::tempdir().unwrap();
    let ctx = Context::new(Arc::new(air), Arc::new(Host::new(root.path()).unwrap())).unwrap();
    let skip = [Phase::Identity].into_iter().collect();
    let hits = server.total_hits();
    let (_r, res) = steps::bootstrap(&ctx, &steps::all_steps(), &skip).await;
    res.unwrap();
    assert_eq!(server.total_hits(), hits);
    assert!(root.path().join("usr/bin/node-problem-detector").exists());
}
