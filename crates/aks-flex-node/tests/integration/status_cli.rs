//! `aks-flex-node status` through the real binary on sandbox roots: exit codes, text and JSON output,
//! the published schema. The API server is a loopback fake; nothing touches the real /etc, /var, /run or
//! systemd.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aks_flex_node::host::{Host, ServiceOp};
use aks_flex_node::steps::Journal;

use crate::support::{run_args, Run};

fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A config naming the node `edge-1` and a fake azcmagent at `azcmagent`.
fn config(dir: &Path, azcmagent: &Path) -> PathBuf {
    let path = dir.join("config.json");
    let cfg = serde_json::json!({
        "azure": {
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "arc": {"azcmagentPath": azcmagent.display().to_string(), "machineName": "edge-1"},
            "targetCluster": {
                "resourceId": "/subscriptions/8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c",
                "location": "westus"
            }
        },
        "kubernetes": {"version": "1.30.4"},
        "agent": {"nodeName": "edge-1", "logDir": dir.join("log").display().to_string()}
    });
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

/// A loopback API server where node `edge-1` is Ready, for the token `node-token` only.
async fn fake_api() -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/version",
            get(|| async {
                axum::Json(serde_json::json!({
                    "major": "1", "minor": "30", "gitVersion": "v1.30.6", "gitCommit": "x",
                    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22",
                    "compiler": "gc", "platform": "linux/amd64"
                }))
            }),
        )
        .route(
            "/api/v1/nodes/edge-1",
            get(|h: HeaderMap| async move {
                if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer node-token") {
                    return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 401,
                        "message": "Unauthorized", "reason": "Unauthorized"
                    })));
                }
                (StatusCode::OK, axum::Json(serde_json::json!({
                    "apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-1"},
                    "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}
                })))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Make the sandbox root look like a bootstrapped node talking to `server`.
async fn bootstrapped(root: &Path, server: &str) {
    std::fs::create_dir_all(root.join("var/lib/aks-flex-node")).unwrap();
    script(
        &root.join("usr/local/bin/kubelet"),
        "echo 'Kubernetes v1.30.4'",
    );
    script(&root.join("usr/bin/runc"), "echo 'runc version 1.1.12'");
    script(
        &root.join("usr/bin/containerd"),
        "echo 'containerd github.com/containerd/containerd v1.7.22 7f7fdf5f'",
    );
    let kc = format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: "{server}"}}
contexts:
- name: ctx
  context: {{cluster: c, user: node}}
current-context: ctx
users:
- name: node
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: sh
      args: ["-c", "echo '{{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"node-token\"}}}}'"]
      interactiveMode: Never
"#
    );
    std::fs::create_dir_all(root.join("var/lib/kubelet")).unwrap();
    std::fs::write(root.join("var/lib/kubelet/kubeconfig"), kc).unwrap();
    // Recorded in the sandbox's sandbox.json, which the binary reads back.
    let host = Host::new(root).unwrap();
    for u in ["containerd", "kubelet"] {
        host.service(ServiceOp::Start, u).await.unwrap();
    }
    let mut j = Journal::default();
    for s in ["ArcInstall", "ServicesEnabled", "NodeReady"] {
        j.set_step(&host, s, 1, None).unwrap();
    }
}

const CONNECTED: &str = r#"echo '{"resourceName":"edge-1","resourceGroup":"rg","location":"westus","status":"Connected","lastHeartbeat":"2026-12-03T10:00:00Z"}'"#;

/// Run `status` off the async runtime (the fake API server keeps serving meanwhile).
async fn status(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run_args(&a)
    })
    .await
    .unwrap()
}

fn args(root: &Path, cfg: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "status".to_string(),
        "--root".into(),
        root.display().to_string(),
        "--config".into(),
        cfg.display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_node_exits_0_and_a_degraded_one_exits_1_without_an_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let azcmagent = dir.path().join("azcmagent");
    script(&azcmagent, CONNECTED);
    let cfg = config(dir.path(), &azcmagent);
    let server = fake_api().await;
    bootstrapped(&root, &server).await;

    let r = status(args(&root, &cfg, &["-o", "json"])).await;
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["health"], "healthy");
    assert_eq!(v["problems"], serde_json::json!([]));
    assert_eq!(v["kubeletVersion"], "1.30.4");
    assert_eq!(v["kubeletReady"], "Ready");
    assert_eq!(v["kubeletRunning"], true);
    assert_eq!(v["containerdRunning"], true);
    assert_eq!(v["arcStatus"]["connected"], true);
    assert_eq!(v["cluster"]["version"], "v1.30.6");
    assert_eq!(v["nodeName"], "edge-1");
    assert_eq!(v["steps"]["NodeReady"]["status"], "done");
    assert!(v.get("daemon").is_none(), "no daemon file, no daemon facts");

    let r = status(args(&root, &cfg, &[])).await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with("health       healthy\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("cluster      v1.30.6"), "{}", r.stdout);
    assert!(!r.stdout.contains("Problems:"), "{}", r.stdout);

    // The kubelet stops: degraded, exit 1, the problem in the output and no extra "error:" line.
    Host::new(&root)
        .unwrap()
        .service(ServiceOp::Stop, "kubelet")
        .await
        .unwrap();
    let r = status(args(&root, &cfg, &[])).await;
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with("health       degraded"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("kubelet is not running"), "{}", r.stdout);
    assert!(!r.stderr.contains("error:"), "{}", r.stderr);
    let r = status(args(&root, &cfg, &["-o", "json"])).await;
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["health"], "degraded");
    assert_eq!(v["kubeletRunning"], false);

    // A daemon status file ten minutes old: the daemon is not running or stuck.
    Host::new(&root)
        .unwrap()
        .service(ServiceOp::Start, "kubelet")
        .await
        .unwrap();
    let mut old: serde_json::Value = v;
    old["lastUpdated"] =
        serde_json::json!((chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339());
    old["daemon"] = serde_json::json!({"state": "running"});
    std::fs::create_dir_all(root.join("run/aks-flex-node")).unwrap();
    std::fs::write(root.join("run/aks-flex-node/status.json"), old.to_string()).unwrap();
    let r = status(args(&root, &cfg, &["-o", "json"])).await;
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["daemon"]["state"], "running", "facts come from the file");
    assert_eq!(v["problems"].as_array().unwrap().len(), 1, "{}", r.stdout);
    assert!(v["problems"][0]
        .as_str()
        .unwrap()
        .contains("not running or is stuck"));
}

#[test]
fn a_fresh_sandbox_is_degraded_and_says_to_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let cfg = config(dir.path(), &dir.path().join("no-azcmagent"));
    let r = run_args(&[
        "status",
        "--root",
        root.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("nothing has been bootstrapped"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("arc          not installed"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn usage_errors_exit_2() {
    let r = run_args(&["status", "-o", "yaml", "--config", "/nonexistent.json"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = run_args(&["status", "--config", "/nonexistent.json"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("/nonexistent.json"), "{}", r.stderr);
}

#[test]
fn the_published_schema_is_the_generated_one() {
    let r = run_args(&["status", "--schema", "--config", "/nonexistent.json"]);
    assert_eq!(r.code, 0, "needs no config: {}", r.stderr);
    let generated: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(generated, aks_flex_node::agent::status::json_schema());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/status.schema.json");
    let published: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        published, generated,
        "docs/status.schema.json is out of date: regenerate it with `aks-flex-node status --schema > docs/status.schema.json`"
    );
}
