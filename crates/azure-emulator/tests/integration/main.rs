//! Integration tests: an in-process emulator on 127.0.0.1 driven with reqwest, plus the built
//! binary for `serve` and the azcmagent stand-in.

mod arm;
mod azcmagent;
mod contract;
mod control;
mod faults;
mod himds;
mod login;
mod webhooks;

use azure_emulator::scenario::{
    ServicePrincipal, DEMO_CLUSTER, DEMO_RESOURCE_GROUP, DEMO_SP_CLIENT_ID, DEMO_SP_SECRET,
    DEMO_SUBSCRIPTION_ID, DEMO_TENANT_ID,
};
use azure_emulator::{Emulator, EmulatorOptions, Scenario};
use base64::Engine;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// A service principal with no role assignments.
pub const NOBODY_CLIENT: &str = "66666666-6666-4666-8666-666666666666";
pub const NOBODY_OBJECT: &str = "77777777-7777-4777-8777-777777777777";
/// A service principal holding Owner on the subscription.
pub const OWNER_CLIENT: &str = "88888888-8888-4888-8888-888888888888";
pub const OWNER_OBJECT: &str = "99999999-9999-4999-8999-999999999999";
pub const SECRET: &str = "test-secret";

pub struct H {
    pub emu: Emulator,
    pub http: reqwest::Client,
    pub base: String,
    _dir: tempfile::TempDir,
}

/// The demo scenario plus a role-less SP and an Owner SP.
pub fn scenario() -> Scenario {
    let mut s = Scenario::demo();
    for (client, object) in [(NOBODY_CLIENT, NOBODY_OBJECT), (OWNER_CLIENT, OWNER_OBJECT)] {
        s.service_principals.push(ServicePrincipal {
            tenant_id: DEMO_TENANT_ID.into(),
            client_id: client.into(),
            object_id: object.into(),
            secret: SECRET.into(),
            display_name: String::new(),
        });
    }
    s.role_assignments
        .push(azure_emulator::scenario::SeedRoleAssignment {
            principal_id: OWNER_OBJECT.into(),
            role: "Owner".into(),
            scope: format!("/subscriptions/{DEMO_SUBSCRIPTION_ID}"),
            name: None,
        });
    s
}

pub async fn start() -> H {
    start_with(scenario()).await
}

pub async fn start_with(scenario: Scenario) -> H {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = Emulator::start(EmulatorOptions {
        scenario,
        himds_key_dir: Some(dir.path().join("keys")),
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let base = emu.urls().arm.clone();
    H {
        emu,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        base,
        _dir: dir,
    }
}

pub fn rg_path() -> String {
    format!("/subscriptions/{DEMO_SUBSCRIPTION_ID}/resourceGroups/{DEMO_RESOURCE_GROUP}")
}

pub fn cluster_path() -> String {
    format!(
        "{}/providers/Microsoft.ContainerService/managedClusters/{DEMO_CLUSTER}",
        rg_path()
    )
}

pub fn machine_path(name: &str) -> String {
    format!(
        "{}/providers/Microsoft.HybridCompute/machines/{name}",
        rg_path()
    )
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

impl H {
    /// POST a form to the token endpoint of `tenant`.
    pub async fn token_request(&self, tenant: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(pairs))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn token_for(&self, client: &str, secret: &str) -> String {
        let (status, body) = self
            .token_request(
                DEMO_TENANT_ID,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", client),
                    ("client_secret", secret),
                    ("scope", "https://management.azure.com/.default"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    pub async fn sp_token(&self) -> String {
        self.token_for(DEMO_SP_CLIENT_ID, DEMO_SP_SECRET).await
    }

    pub async fn owner_token(&self) -> String {
        self.token_for(OWNER_CLIENT, SECRET).await
    }

    /// An ARM call; `path` may carry a query string.
    pub async fn arm(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, HeaderMap, Value) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.http.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, value)
    }

    /// Create a machine with a system-assigned identity as the demo SP; returns its principal id.
    pub async fn connect_machine(&self, name: &str) -> String {
        let tok = self.sp_token().await;
        let (status, _, body) = self
            .arm(
                reqwest::Method::PUT,
                &format!("{}?api-version=2022-03-10", machine_path(name)),
                Some(&tok),
                Some(serde_json::json!({"location": "eastus", "identity": {"type": "SystemAssigned"}})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["identity"]["principalId"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Decode the claims of a JWT without verifying it (what clients do to read expiry).
pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three parts");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}
