//! Entra ID token and device code endpoints.

use azure_emulator::scenario::{
    AZURE_CLI_CLIENT_ID, DEMO_SP_CLIENT_ID, DEMO_SP_OBJECT_ID, DEMO_TENANT_ID, DEMO_USER_OBJECT_ID,
};

use crate::{claims, form, start};

#[tokio::test]
async fn client_credentials_issues_a_jwt_with_expiry_and_identity_claims() {
    let h = start().await;
    let (status, body) = h
        .token_request(
            DEMO_TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", DEMO_SP_CLIENT_ID),
                ("client_secret", "flexnode-demo-secret"),
                ("scope", "https://management.azure.com/.default"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["aud"], "https://management.azure.com");
    assert_eq!(c["tid"], DEMO_TENANT_ID);
    assert_eq!(c["oid"], DEMO_SP_OBJECT_ID);
    assert_eq!(c["appid"], DEMO_SP_CLIENT_ID);
    let exp = c["exp"].as_i64().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now + 3590..=now + 3610).contains(&exp),
        "exp {exp} now {now}"
    );
}

#[tokio::test]
async fn token_errors_follow_entra_codes() {
    let h = start().await;
    let base = [
        ("grant_type", "client_credentials"),
        ("scope", "https://management.azure.com/.default"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let (s, b) = h
        .token_request(
            DEMO_TENANT_ID,
            &with(&[("client_id", DEMO_SP_CLIENT_ID), ("client_secret", "wrong")]),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_client")));
    assert_eq!(b["error_codes"][0], 7000215);
    assert!(b["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215:"));
    assert!(!b.to_string().contains("wrong"), "secret echoed: {b}");

    let (s, b) = h
        .token_request(
            DEMO_TENANT_ID,
            &with(&[
                ("client_id", "12345678-1234-4234-8234-123456789012"),
                ("client_secret", "x"),
            ]),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("unauthorized_client")));
    assert_eq!(b["error_codes"][0], 700016);

    let (s, b) = h
        .token_request(
            "00000000-0000-4000-8000-000000000000",
            &with(&[("client_id", DEMO_SP_CLIENT_ID), ("client_secret", "x")]),
        )
        .await;
    assert_eq!((s, b["error_codes"][0].as_i64()), (400, Some(90002)));

    let (s, b) = h
        .token_request(
            DEMO_TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", DEMO_SP_CLIENT_ID),
                ("client_secret", "flexnode-demo-secret"),
            ],
        )
        .await;
    assert_eq!((s, b["error_codes"][0].as_i64()), (400, Some(900144)));
    assert!(b["error_description"].as_str().unwrap().contains("'scope'"));

    let (s, b) = h
        .token_request(
            DEMO_TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", DEMO_SP_CLIENT_ID),
                ("client_secret", "flexnode-demo-secret"),
                ("scope", "https://management.azure.com/user_impersonation"),
            ],
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_scope")));

    let (s, b) = h
        .token_request(DEMO_TENANT_ID, &[("grant_type", "password")])
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
}

#[tokio::test]
async fn device_code_flow_pends_until_approved_then_issues_a_user_token_once() {
    let h = start().await;
    let r = h
        .http
        .post(format!(
            "{}/{DEMO_TENANT_ID}/oauth2/v2.0/devicecode",
            h.base
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("client_id", AZURE_CLI_CLIENT_ID),
            (
                "scope",
                "https://management.azure.com/.default offline_access",
            ),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let dc: serde_json::Value = r.json().await.unwrap();
    for key in [
        "user_code",
        "device_code",
        "verification_uri",
        "expires_in",
        "interval",
        "message",
    ] {
        assert!(!dc[key].is_null(), "missing {key}: {dc}");
    }
    let user_code = dc["user_code"].as_str().unwrap();
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", AZURE_CLI_CLIENT_ID),
        ("device_code", dc["device_code"].as_str().unwrap()),
    ];
    let (s, b) = h.token_request(DEMO_TENANT_ID, &poll).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    assert_eq!(b["error_codes"][0], 70016);

    let r = h
        .http
        .post(format!(
            "{}/devicecode/{user_code}/approve",
            h.emu.urls().control
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (s, b) = h.token_request(DEMO_TENANT_ID, &poll).await;
    assert_eq!(s, 200, "{b}");
    let c = claims(b["access_token"].as_str().unwrap());
    assert_eq!(c["oid"], DEMO_USER_OBJECT_ID);
    assert_eq!(c["idtyp"], "user");
    assert_eq!(c["aud"], "https://management.azure.com");

    let (s, b) = h.token_request(DEMO_TENANT_ID, &poll).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
}

#[tokio::test]
async fn device_code_rejects_unknown_clients_and_codes() {
    let h = start().await;
    let r = h
        .http
        .post(format!(
            "{}/{DEMO_TENANT_ID}/oauth2/v2.0/devicecode",
            h.base
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("client_id", "12345678-1234-4234-8234-123456789012"),
            ("scope", "x/.default"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["error_codes"][0], 700016);
    let r = h
        .http
        .post(format!(
            "{}/devicecode/NOPE12345/approve",
            h.emu.urls().control
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
