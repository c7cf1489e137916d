//! node-problem-detector has no upstream checksum file and the agent carries no digest for it. Left at its
//! default (`npd.enabled` unset) with no digest source, NPD is skipped with a warning and the node still
//! bootstraps (the README quick start); an explicit `npd.enabled: true` without one is refused while
//! bootstrap plans its downloads, with one message saying what to set, before anything changes (`plan`
//! shows the blocker); a mirror's `.sha256` next to the tarball and an offline bundle built from it are
//! digest sources.

use std::path::Path;
use std::sync::Arc;

use aks_flex_node::host::Host;
use aks_flex_node::model::Phase;
use aks_flex_node::steps;

use crate::support::runtime::*;
use crate::support::{readme_quick_start, sandbox};

fn without_npd_pin(mut v: serde_json::Value) -> serde_json::Value {
    v["npd"].as_object_mut().unwrap().remove("sha256");
    v
}

fn cli(root: &Path, config: &Path, args: &[&str]) -> std::process::Output {
    sandbox(root, config, args)
        // No mirror is configured here: should anything try to download, it hits a closed local port.
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env_remove("NO_PROXY")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_bootstraps_skipping_npd_with_a_warning_when_no_digest_is_known() {
    let quick: serde_json::Value = serde_json::from_str(&readme_quick_start()).unwrap();
    assert!(
        quick.get("npd").is_none(),
        "the quick start is meant to leave npd at its default: {quick}"
    );
    // An offline bundle with every artifact but NPD (nothing is downloaded in this test): built from the
    // loopback mirror with NPD off.
    let server = ArtifactServer::start().await;
    let fx = Fixtures::tiny();
    fx.serve(&server);
    let build_cfg = load_config(&config_json(
        &server.base,
        &fx,
        serde_json::json!({"npd": {"enabled": false}}),
    ));
    let build_root = tempfile::tempdir().unwrap();
    let bundle = tempfile::tempdir().unwrap();
    aks_flex_node::artifacts::bundle::build(
        &build_cfg,
        Arc::new(Host::new(build_root.path()).unwrap()),
        bundle.path(),
    )
    .await
    .unwrap();

    // The quick start plus only what a sandbox run needs: the fixtures' versions, the cluster endpoint
    // (the identity phase is skipped), a pod CIDR and the bundle as the artifact source.
    let mut v = quick;
    merge(
        &mut v,
        serde_json::json!({
            "kubernetes": { "version": K8S_VERSION },
            "runc": { "version": RUNC_VERSION },
            "containerd": { "version": CONTAINERD_VERSION },
            "cni": { "version": CNI_VERSION },
            "networking": { "podCIDR": "10.244.3.0/24" },
            "node": { "kubelet": {
                "serverURL": "https://flex-cluster.hcp.westus.azmk8s.io:443",
                "caCertData": test_ca_b64(),
            } },
            "bootstrap": { "offlineArtifacts": { "source": bundle.path().display().to_string() } },
        }),
    );
    let cfgdir = tempfile::tempdir().unwrap();
    let config = write_config(cfgdir.path(), &v);
    let root = tempfile::tempdir().unwrap();
    let warning = format!("node-problem-detector skipped: no verified SHA-256 for {NPD_VERSION}");

    // `plan -o json`: NPD plans nothing and carries the warning; the text form prints it.
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
    assert_eq!(npd["actions"], serde_json::json!([]), "{npd}");
    let notes = npd["notes"].to_string();
    assert!(
        notes.contains(&warning)
            && notes.contains("set npd.sha256")
            && notes.contains("npd.enabled: false silences this"),
        "{npd}"
    );
    let out = cli(root.path(), &config, &["plan", "--skip-phase", "identity"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("warning: {warning}")),
        "{stdout}"
    );

    // bootstrap: exit 0, the warning in its log, NPD neither installed nor started.
    let out = cli(
        root.path(),
        &config,
        &["bootstrap", "--skip-phase", "identity"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(&warning), "{stderr}");
    assert!(root.path().join("usr/local/bin/kubelet").exists());
    assert!(!root.path().join("usr/bin/node-problem-detector").exists());
    assert!(!root
        .path()
        .join("etc/systemd/system/node-problem-detector.service")
        .exists());
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.path().join("var/lib/aks-flex-node/sandbox.json")).unwrap(),
    )
    .unwrap();
    let units = record["units"].as_object().unwrap();
    assert!(units.contains_key("kubelet"), "{record}");
    assert!(!units.contains_key("node-problem-detector"), "{record}");
}

#[test]
fn an_explicit_npd_enabled_true_without_npd_sha256_is_refused_before_anything_changes_saying_what_to_set(
) {
    let fx = Fixtures::tiny();
    let mut v = without_npd_pin(config_json("http://unused", &fx, serde_json::json!({})));
    v.as_object_mut().unwrap().remove("artifacts");
    // Asked for explicitly: no digest source is an error, not a skip.
    v["npd"]["enabled"] = serde_json::json!(true);
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
    let air = without_npd_pin(config_json(
        "http://127.0.0.1:9",
        &fx,
        serde_json::json!({"bootstrap": {"offlineArtifacts": {"source": bundle.path().display().to_string()}}}),
    ));
    let root = tempfile::tempdir().unwrap();
    let ctx = context(&air, root.path());
    let hits = server.total_hits();
    let (_r, res) = run_steps(&ctx, &steps::all_steps(), &[Phase::Identity]).await;
    res.unwrap();
    assert_eq!(server.total_hits(), hits);
    assert!(root.path().join("usr/bin/node-problem-detector").exists());
}
