//! The azcmagent stand-in, run as the built binary.

use std::process::{Command, Output};

use azure_emulator::scenario::{DEMO_RESOURCE_GROUP, DEMO_SUBSCRIPTION_ID, DEMO_TENANT_ID};
use serde_json::{json, Value};

use crate::start;

fn azcmagent(base: &str, host: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flexnode-emulator"))
        .arg("azcmagent")
        .args(args)
        .env("FLEXNODE_EMULATOR_URL", format!("{base}/_emulator"))
        .env("FLEXNODE_EMULATOR_HOST", host)
        .env_remove("HTTP_PROXY")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_config(dir: &std::path::Path, token: &str, name: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.json"));
    std::fs::write(
        &p,
        json!({
            "access-token": token,
            "subscription-id": DEMO_SUBSCRIPTION_ID,
            "resource-group": DEMO_RESOURCE_GROUP,
            "tenant-id": DEMO_TENANT_ID,
            "location": "eastus",
            "resource-name": name,
            "tags": {"env": "test"}
        })
        .to_string(),
    )
    .unwrap();
    p
}

// The binary is run synchronously, so the emulator needs worker threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_show_himds_and_disconnect_round_trip() {
    let h = start().await;
    let dir = tempfile::tempdir().unwrap();
    let tok = h.sp_token().await;
    let base = h.base.clone();

    let show = azcmagent(&base, "n1", &["show"]);
    assert!(show.status.success(), "{}", text(&show));
    assert!(text(&show)
        .lines()
        .any(|l| l.starts_with("Agent Status") && l.ends_with(": Disconnected")));

    let cfg = write_config(dir.path(), &tok, "vm-one");
    let out = azcmagent(&base, "n1", &["connect", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let state = h.emu.state();
    assert_eq!(state.machines[0].name, "vm-one");
    assert_eq!(state.machines[0].tags["env"], "test");
    assert!(state.hosts["n1"].connected);

    let show = azcmagent(&base, "n1", &["show"]);
    let t = text(&show);
    let field = |k: &str| {
        t.lines()
            .find(|l| l.split(':').next().unwrap().trim() == k)
            .map(|l| l.split_once(':').unwrap().1.trim().to_string())
    };
    assert_eq!(field("Agent Status").as_deref(), Some("Connected"));
    assert_eq!(field("Resource Name").as_deref(), Some("vm-one"));
    assert_eq!(
        field("Resource Group Name").as_deref(),
        Some(DEMO_RESOURCE_GROUP)
    );
    assert_eq!(field("Location").as_deref(), Some("eastus"));
    assert!(field("Resource Id").unwrap().ends_with("/machines/vm-one"));
    let hb = t
        .lines()
        .find(|l| l.starts_with("Agent Last Heartbeat"))
        .unwrap();
    let hb = hb.split_once(": ").unwrap().1.trim();
    chrono::NaiveDateTime::parse_from_str(hb, "%Y-%m-%dT%H:%M:%SZ")
        .expect("heartbeat layout 2006-01-02T15:04:05Z");

    let j = azcmagent(&base, "n1", &["show", "-j"]);
    let v: Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["status"], "Connected");
    assert_eq!(v["resourceName"], "vm-one");

    // Connecting twice fails.
    let again = azcmagent(&base, "n1", &["connect", "--config", cfg.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("already connected"));

    // Local-only disconnect leaves the Azure resource.
    let out = azcmagent(&base, "n1", &["disconnect", "--force-local-only"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!h.emu.state().hosts.get("n1").is_some_and(|x| x.connected));
    assert_eq!(h.emu.state().machines.len(), 1);

    // A full disconnect deletes the resource; the onboarding SP lacks delete, Owner has it.
    let out = azcmagent(&base, "n1", &["connect", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = azcmagent(&base, "n1", &["disconnect", "--access-token", &tok]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("AuthorizationFailed"), "{}", text(&out));
    let owner = h.owner_token().await;
    let out = azcmagent(&base, "n1", &["disconnect", "--access-token", &owner]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(h.emu.state().machines.is_empty());
}

// The binary is run synchronously, so the emulator needs worker threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_bad_token_or_missing_permission_fails_like_the_real_agent() {
    let h = start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "garbage", "bad");
    let out = azcmagent(
        &h.base,
        "n2",
        &["connect", "--config", cfg.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("AZCM0041"), "{}", text(&out));
    assert!(!text(&out).contains("garbage"), "token echoed");
    let nobody = h.token_for(crate::NOBODY_CLIENT, crate::SECRET).await;
    let cfg = write_config(dir.path(), &nobody, "bad2");
    let out = azcmagent(
        &h.base,
        "n2",
        &["connect", "--config", cfg.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("AuthorizationFailed"));
    assert!(h.emu.state().machines.is_empty());
    // Missing required flags are named.
    let out = azcmagent(&h.base, "n2", &["connect", "--access-token", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--subscription-id"));
}

// The binary is run synchronously, so the emulator needs worker threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_a_service_principal_and_busybox_invocation() {
    let h = start().await;
    let out = azcmagent(
        &h.base,
        "n3",
        &[
            "connect",
            "-s",
            DEMO_SUBSCRIPTION_ID,
            "-g",
            DEMO_RESOURCE_GROUP,
            "-l",
            "eastus",
            "-t",
            DEMO_TENANT_ID,
            "--service-principal-id",
            azure_emulator::scenario::DEMO_SP_CLIENT_ID,
            "--service-principal-secret",
            azure_emulator::scenario::DEMO_SP_SECRET,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    // Default resource name is the simulated host.
    assert_eq!(h.emu.state().machines[0].name, "n3");

    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("azcmagent");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_flexnode-emulator"), &link).unwrap();
    let out = Command::new(&link)
        .arg("show")
        .env("FLEXNODE_EMULATOR_URL", &h.base)
        .env("FLEXNODE_EMULATOR_HOST", "n3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Agent Status                            : Connected"));

    let out = Command::new(&link)
        .arg("show")
        .env_remove("FLEXNODE_EMULATOR_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("FLEXNODE_EMULATOR_URL"));
}
