//! Arc HIMDS challenge flow.

use std::os::unix::fs::PermissionsExt;

use azure_emulator::state::HostAgent;
use reqwest::Method;

use crate::{error_code, machine_path, start, H};

const AKS_AAD: &str = "6dae42f8-4368-4678-94ff-3960e28e3630";

pub async fn mark_connected(h: &H, host: &str, machine: &str) {
    let agent = HostAgent {
        connected: true,
        resource_id: machine_path(machine),
        ..Default::default()
    };
    let r = h
        .http
        .put(format!("{}/hosts/{host}", h.emu.urls().control))
        .json(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn url(h: &H, host: Option<&str>, resource: &str) -> String {
    let prefix = host.map(|x| format!("/hosts/{x}")).unwrap_or_default();
    format!(
        "{}{prefix}/metadata/identity/oauth2/token?api-version=2019-11-01&resource={resource}",
        h.emu.urls().himds
    )
}

#[tokio::test]
async fn challenge_then_token_with_key_file_mode_0600() {
    let h = start().await;
    let principal = h.connect_machine("default-node").await;
    mark_connected(&h, "default", "default-node").await;

    let r = h.http.get(url(&h, None, AKS_AAD)).send().await.unwrap();
    assert_eq!(r.status(), 400, "Metadata header is required");

    let r = h
        .http
        .get(url(&h, None, AKS_AAD))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let www = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    let path = www
        .strip_prefix("Basic realm=")
        .expect("Basic realm=<file>");
    assert!(
        path.starts_with(h.emu.himds_key_dir().to_str().unwrap()),
        "{path}"
    );
    let meta = std::fs::metadata(path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let key = std::fs::read_to_string(path).unwrap();

    let r = h
        .http
        .get(url(&h, None, AKS_AAD))
        .header("Metadata", "true")
        .header("Authorization", "Basic wrong-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = h
        .http
        .get(url(&h, None, AKS_AAD))
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["resource"], AKS_AAD);
    assert_eq!(b["token_type"], "Bearer");
    let expires_on: i64 = b["expires_on"].as_str().unwrap().parse().unwrap();
    assert!(expires_on > chrono::Utc::now().timestamp());
    let c = crate::claims(b["access_token"].as_str().unwrap());
    assert_eq!(
        (c["aud"].as_str(), c["oid"].as_str()),
        (Some(AKS_AAD), Some(principal.as_str()))
    );
    assert!(
        !std::path::Path::new(path).exists(),
        "key files are single-use"
    );

    // The same key does not work twice.
    let r = h
        .http
        .get(url(&h, None, AKS_AAD))
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn disconnected_host_gets_identity_not_found_and_no_key_file() {
    let h = start().await;
    let r = h
        .http
        .get(url(&h, Some("node-x"), AKS_AAD))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: serde_json::Value = r.json().await.unwrap();
    assert!(b["error_description"]
        .as_str()
        .unwrap()
        .contains("Identity not found"));
    assert_eq!(std::fs::read_dir(h.emu.himds_key_dir()).unwrap().count(), 0);
}

#[tokio::test]
async fn per_host_identities_are_separate_and_keys_do_not_cross_hosts() {
    let h = start().await;
    let p1 = h.connect_machine("m1").await;
    let p2 = h.connect_machine("m2").await;
    mark_connected(&h, "h1", "m1").await;
    mark_connected(&h, "h2", "m2").await;
    let challenge = |host: &'static str| {
        let h = &h;
        async move {
            let r = h
                .http
                .get(url(h, Some(host), AKS_AAD))
                .header("Metadata", "true")
                .send()
                .await
                .unwrap();
            let www = r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_string();
            std::fs::read_to_string(www.strip_prefix("Basic realm=").unwrap()).unwrap()
        }
    };
    let k1 = challenge("h1").await;
    let r = h
        .http
        .get(url(&h, Some("h2"), AKS_AAD))
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {k1}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a key issued for h1 must not work for h2");
    for (host, key, principal) in [("h1", k1, &p1), ("h2", challenge("h2").await, &p2)] {
        let r = h
            .http
            .get(url(&h, Some(host), AKS_AAD))
            .header("Metadata", "true")
            .header("Authorization", format!("Basic {key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let b: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            crate::claims(b["access_token"].as_str().unwrap())["oid"],
            principal.as_str()
        );
    }
}

#[tokio::test]
async fn himds_arm_token_acts_as_the_machine_identity() {
    let h = start().await;
    h.connect_machine("self").await;
    mark_connected(&h, "default", "self").await;
    let r = h
        .http
        .get(url(&h, None, "https://management.azure.com/"))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let www = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    let key = std::fs::read_to_string(www.strip_prefix("Basic realm=").unwrap()).unwrap();
    let r = h
        .http
        .get(url(&h, None, "https://management.azure.com/"))
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    let b: serde_json::Value = r.json().await.unwrap();
    let tok = b["access_token"].as_str().unwrap();
    // The identity holds no role yet.
    let (s, _, body) = h
        .arm(
            Method::GET,
            &format!("{}?api-version=2024-02-01", crate::cluster_path()),
            Some(tok),
            None,
        )
        .await;
    assert_eq!((s, error_code(&body)), (403, "AuthorizationFailed"));
}
