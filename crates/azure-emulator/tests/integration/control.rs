//! Control API, request log hygiene, and the `serve` binary.

use std::io::BufRead;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::{start, H};

async fn control(h: &H, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = h
        .http
        .request(method, format!("{}{path}", h.emu.urls().control));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn faults_state_requests_settings_and_reset_over_http() {
    let h = start().await;
    let (s, b) = control(
        &h,
        reqwest::Method::POST,
        "/faults",
        Some(json!([
            {"path": "/nothing", "kind": "reset"},
            {"id": "slow", "path": "/**", "kind": "latency", "latency_ms": 1}
        ])),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["ids"][1], "slow");
    let (s, b) = control(
        &h,
        reqwest::Method::POST,
        "/faults",
        Some(json!({"kind": "status", "status": 200})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (_, b) = control(&h, reqwest::Method::GET, "/faults", None).await;
    assert_eq!(b.as_array().unwrap().len(), 2);
    let (s, _) = control(&h, reqwest::Method::DELETE, "/faults/slow", None).await;
    assert_eq!(s, 200);
    let (s, _) = control(&h, reqwest::Method::DELETE, "/faults/slow", None).await;
    assert_eq!(s, 404);
    let (s, _) = control(&h, reqwest::Method::DELETE, "/faults", None).await;
    assert_eq!(s, 200);

    h.connect_machine("ctl").await;
    let (_, st) = control(&h, reqwest::Method::GET, "/state", None).await;
    assert_eq!(st["machines"][0]["name"], "ctl");
    let (_, log) = control(&h, reqwest::Method::GET, "/requests", None).await;
    let methods: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        vec!["POST", "PUT"],
        "control calls are not logged: {log}"
    );
    assert_eq!(log[1]["api_version"], "2022-03-10");
    assert_eq!(
        log[1]["caller"],
        azure_emulator::scenario::DEMO_SP_OBJECT_ID
    );

    let (s, b) = control(
        &h,
        reqwest::Method::PATCH,
        "/settings",
        Some(json!({"token_lifetime_secs": 60})),
    )
    .await;
    assert_eq!((s, b["token_lifetime_secs"].as_u64()), (200, Some(60)));
    let tok = h.sp_token().await;
    let c = crate::claims(&tok);
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 60);
    let (s, _) = control(
        &h,
        reqwest::Method::PATCH,
        "/settings",
        Some(json!({"token_lifetime_secs": "x"})),
    )
    .await;
    assert_eq!(s, 400);

    let (s, _) = control(&h, reqwest::Method::POST, "/reset", None).await;
    assert_eq!(s, 200);
    assert!(h.emu.state().machines.is_empty());
    assert!(h.emu.request_log().is_empty());
    assert_eq!(
        h.emu.state().role_assignments.len(),
        crate::scenario().role_assignments.len()
    );
}

#[tokio::test]
async fn request_log_never_contains_tokens_or_secrets_and_is_written_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("requests.jsonl");
    let emu = azure_emulator::Emulator::start(azure_emulator::EmulatorOptions {
        scenario: crate::scenario(),
        request_log_file: Some(file.clone()),
        himds_key_dir: Some(dir.path().join("k")),
        ..Default::default()
    })
    .await
    .unwrap();
    let h = H {
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        base: emu.urls().arm.clone(),
        emu,
        _dir: tempfile::tempdir().unwrap(),
    };
    let tok = h.sp_token().await;
    h.connect_machine("logged").await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 3);
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        for key in [
            "method",
            "path",
            "api_version",
            "status",
            "caller",
            "duration_ms",
        ] {
            assert!(e.get(key).is_some(), "{key} missing in {line}");
        }
    }
    let all = format!(
        "{text}{}",
        serde_json::to_string(&h.emu.request_log()).unwrap()
    );
    assert!(!all.contains(&tok[..40]), "token leaked");
    assert!(
        !all.contains(azure_emulator::scenario::DEMO_SP_SECRET),
        "secret leaked"
    );
    assert!(!all.contains("Bearer"));
}

#[test]
fn serve_prints_endpoints_as_one_json_line_and_rejects_non_loopback() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flexnode-emulator"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: Value = serde_json::from_str(&line).unwrap();
    for key in ["login", "arm", "himds", "control"] {
        assert!(
            v[key].as_str().unwrap().starts_with("http://127.0.0.1:"),
            "{line}"
        );
    }
    assert!(v["control"].as_str().unwrap().ends_with("/_emulator"));

    let out = Command::new(env!("CARGO_BIN_EXE_flexnode-emulator"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn scenario_example_is_valid_and_check_names_the_bad_field() {
    let out = Command::new(env!("CARGO_BIN_EXE_flexnode-emulator"))
        .args(["scenario", "--example"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.json");
    std::fs::write(&p, &out.stdout).unwrap();
    let ok = Command::new(env!("CARGO_BIN_EXE_flexnode-emulator"))
        .args(["scenario", "--check"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["service_principals"][0]["client_id"] = json!("nope");
    std::fs::write(&p, v.to_string()).unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_flexnode-emulator"))
        .args(["scenario", "--check"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("service_principals[0].client_id"));
}
