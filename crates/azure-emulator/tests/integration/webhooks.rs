//! AKS's Entra ID webhooks for kube-apiserver: TokenReview and SubjectAccessReview (Azure RBAC),
//! the webhook config files, and the cluster fields a real API server setup needs.

use std::process::Command;

use azure_emulator::aks::AKS_AAD_SERVER_APP_ID;
use azure_emulator::scenario::{
    SeedRoleAssignment, ServicePrincipal, DEMO_SP_OBJECT_ID, DEMO_TENANT_ID,
};
use azure_emulator::Scenario;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use crate::himds::mark_connected;
use crate::{
    cluster_path, rg_path, scenario, start, start_with, H, NOBODY_CLIENT, NOBODY_OBJECT,
    OWNER_OBJECT, SECRET,
};

/// Holds "Azure Kubernetes Service RBAC Cluster Admin" on the cluster.
const ADMIN_CLIENT: &str = "a0000000-0000-4000-8000-000000000001";
const ADMIN_OBJECT: &str = "a0000000-0000-4000-8000-000000000002";
/// Holds "Azure Kubernetes Service RBAC Cluster Admin" on the resource group (inherited).
const RG_ADMIN_CLIENT: &str = "a0000000-0000-4000-8000-000000000003";
const RG_ADMIN_OBJECT: &str = "a0000000-0000-4000-8000-000000000004";
/// Holds "Azure Kubernetes Service RBAC Reader" on the cluster, and
/// "Azure Kubernetes Service RBAC Admin" on namespace `dev` only.
const READER_CLIENT: &str = "a0000000-0000-4000-8000-000000000005";
const READER_OBJECT: &str = "a0000000-0000-4000-8000-000000000006";

const NODES_WRITE: &str = "Microsoft.ContainerService/managedClusters/nodes/write";

fn webhook_scenario() -> Scenario {
    let mut s = scenario();
    for (client, object) in [
        (ADMIN_CLIENT, ADMIN_OBJECT),
        (RG_ADMIN_CLIENT, RG_ADMIN_OBJECT),
        (READER_CLIENT, READER_OBJECT),
    ] {
        s.service_principals.push(ServicePrincipal {
            tenant_id: DEMO_TENANT_ID.into(),
            client_id: client.into(),
            object_id: object.into(),
            secret: SECRET.into(),
            display_name: String::new(),
        });
    }
    let seed = |principal: &str, role: &str, scope: String| SeedRoleAssignment {
        principal_id: principal.into(),
        role: role.into(),
        scope,
        name: None,
    };
    s.role_assignments.extend([
        seed(
            ADMIN_OBJECT,
            "Azure Kubernetes Service RBAC Cluster Admin",
            cluster_path(),
        ),
        seed(
            RG_ADMIN_OBJECT,
            "Azure Kubernetes Service RBAC Cluster Admin",
            rg_path(),
        ),
        seed(
            READER_OBJECT,
            "Azure Kubernetes Service RBAC Reader",
            cluster_path(),
        ),
        seed(
            READER_OBJECT,
            "Azure Kubernetes Service RBAC Admin",
            format!("{}/namespaces/dev", cluster_path()),
        ),
    ]);
    s
}

impl H {
    /// A client-credentials token for the AKS AAD server app.
    async fn aks_token(&self, client: &str, secret: &str) -> String {
        let (status, body) = self
            .token_request(
                DEMO_TENANT_ID,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", client),
                    ("client_secret", secret),
                    ("scope", &format!("{AKS_AAD_SERVER_APP_ID}/.default")),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn token_review(&self, version: &str, token: &str) -> Value {
        let (status, body) = self
            .post_json(
                "/aks/tokenreview",
                &json!({
                    "apiVersion": format!("authentication.k8s.io/{version}"),
                    "kind": "TokenReview",
                    "metadata": {"creationTimestamp": null},
                    "spec": {"token": token},
                }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["apiVersion"],
            format!("authentication.k8s.io/{version}")
        );
        assert_eq!(body["kind"], "TokenReview");
        assert!(
            !body.to_string().contains(token),
            "the token must not be echoed"
        );
        body
    }

    /// A SubjectAccessReview as kube-apiserver sends it for `user` (an oid) with `attrs` merged
    /// into the spec. v1beta1 names the groups field `group`, v1 `groups`.
    async fn access_review(&self, version: &str, user: &str, attrs: Value) -> Value {
        let groups_key = if version == "v1beta1" {
            "group"
        } else {
            "groups"
        };
        let mut spec = json!({
            "user": user,
            "uid": user,
            groups_key: ["system:authenticated"],
            "extra": {"oid": [user]},
        });
        for (k, v) in attrs.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let (status, body) = self
            .post_json(
                "/aks/subjectaccessreview",
                &json!({
                    "apiVersion": format!("authorization.k8s.io/{version}"),
                    "kind": "SubjectAccessReview",
                    "metadata": {"creationTimestamp": null},
                    "spec": spec,
                    "status": {"allowed": false},
                }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["apiVersion"],
            format!("authorization.k8s.io/{version}")
        );
        assert_eq!(body["kind"], "SubjectAccessReview");
        body
    }
}

fn create_node() -> Value {
    json!({"resourceAttributes": {"verb": "create", "version": "v1", "resource": "nodes"}})
}

/// Allowed, or "no opinion": `allowed: false` and never `denied: true`, with a reason.
fn allowed(review: &Value) -> bool {
    let status = &review["status"];
    assert!(
        status["denied"].is_null() || status["denied"] == false,
        "the webhook must not deny: {review}"
    );
    assert!(
        !status["reason"].as_str().unwrap_or_default().is_empty(),
        "{review}"
    );
    status["allowed"].as_bool().expect("status.allowed")
}

#[tokio::test]
async fn token_review_authenticates_aks_tokens_in_v1beta1_and_v1() {
    let h = start_with(webhook_scenario()).await;
    let token = h.aks_token(ADMIN_CLIENT, SECRET).await;
    for version in ["v1beta1", "v1"] {
        let r = h.token_review(version, &token).await;
        let status = &r["status"];
        assert_eq!(status["authenticated"], true, "{r}");
        assert_eq!(status["user"]["username"], ADMIN_OBJECT);
        assert_eq!(status["user"]["uid"], ADMIN_OBJECT);
        assert_eq!(status["user"]["groups"], json!(["system:authenticated"]));
        assert_eq!(status["user"]["extra"]["oid"], json!([ADMIN_OBJECT]));
        assert!(status["error"].is_null());
    }
    let log = h.emu.request_log();
    let reviews: Vec<_> = log
        .iter()
        .filter(|e| e.path == "/aks/tokenreview")
        .collect();
    assert_eq!(reviews.len(), 2);
    assert!(reviews
        .iter()
        .all(|e| e.decision.as_deref() == Some("authenticated")
            && e.caller.as_deref() == Some(ADMIN_OBJECT)));
}

#[tokio::test]
async fn token_review_rejects_expired_wrong_audience_and_tampered_tokens() {
    let h = start_with(webhook_scenario()).await;

    h.emu.set_token_lifetime_secs(0);
    let expired = h.aks_token(ADMIN_CLIENT, SECRET).await;
    h.emu.set_token_lifetime_secs(3600);
    let arm_token = h.token_for(ADMIN_CLIENT, SECRET).await;
    let good = h.aks_token(NOBODY_CLIENT, SECRET).await;
    // Same signature, claims changed to another principal.
    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
    let mut claims = crate::claims(&good);
    claims["oid"] = json!(ADMIN_OBJECT);
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).unwrap());
    let tampered = parts.join(".");

    let cases = [
        (expired.as_str(), "expired", "expired"),
        (arm_token.as_str(), "audience", "wrong_audience"),
        (tampered.as_str(), "signature", "invalid"),
        ("not-a-jwt", "signature", "invalid"),
    ];
    for (token, message, code) in cases {
        for version in ["v1beta1", "v1"] {
            let r = h.token_review(version, token).await;
            assert_eq!(r["status"]["authenticated"], false, "{r}");
            assert!(r["status"]["user"].is_null(), "{r}");
            let error = r["status"]["error"].as_str().unwrap();
            assert!(error.contains(message), "{code}: {error}");
        }
    }
    let log = h.emu.request_log();
    let details: Vec<_> = log
        .iter()
        .filter(|e| e.path == "/aks/tokenreview")
        .map(|e| {
            assert_eq!(e.decision.as_deref(), Some("unauthenticated"));
            assert!(e.caller.is_none());
            e.detail.clone().unwrap()
        })
        .collect();
    assert_eq!(
        details,
        [
            "expired",
            "expired",
            "wrong_audience",
            "wrong_audience",
            "invalid",
            "invalid",
            "invalid",
            "invalid"
        ]
    );
    let logged = serde_json::to_string(&log).unwrap();
    for (token, _, _) in cases {
        assert!(!logged.contains(token), "tokens must never be logged");
    }
}

#[tokio::test]
async fn reviews_that_are_not_review_objects_get_400() {
    let h = start().await;
    let (s, b) = h
        .post_json(
            "/aks/tokenreview",
            &json!({"apiVersion": "authentication.k8s.io/v2", "kind": "TokenReview"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"].as_str().unwrap().contains("v1beta1"));
    let (s, _) = h
        .post_json(
            "/aks/subjectaccessreview",
            &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "TokenReview"}),
        )
        .await;
    assert_eq!(s, 400);
    let r = h
        .http
        .post(format!("{}/aks/tokenreview", h.base))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn access_review_follows_azure_rbac_data_actions_and_scope_inheritance() {
    let h = start_with(webhook_scenario()).await;
    for version in ["v1beta1", "v1"] {
        // Cluster Admin at the cluster scope, and inherited from the resource group.
        assert!(allowed(
            &h.access_review(version, ADMIN_OBJECT, create_node()).await
        ));
        assert!(allowed(
            &h.access_review(version, RG_ADMIN_OBJECT, create_node())
                .await
        ));
        // No role at all.
        let r = h.access_review(version, NOBODY_OBJECT, create_node()).await;
        assert!(!allowed(&r));
        let reason = r["status"]["reason"].as_str().unwrap();
        assert!(
            reason.contains(NODES_WRITE) && reason.contains(NOBODY_OBJECT),
            "{reason}"
        );
        // Roles without data actions: the demo SP's "AKS Cluster Admin Role" (control plane
        // only) on the cluster, and Owner on the subscription.
        assert!(!allowed(
            &h.access_review(version, DEMO_SP_OBJECT_ID, create_node())
                .await
        ));
        assert!(!allowed(
            &h.access_review(version, OWNER_OBJECT, create_node()).await
        ));
        // RBAC Reader: namespaced reads, but no nodes.
        assert!(!allowed(
            &h.access_review(version, READER_OBJECT, create_node()).await
        ));
        let list_deployments = json!({"resourceAttributes": {"namespace": "prod", "verb": "list", "group": "apps", "version": "v1", "resource": "deployments"}});
        assert!(allowed(
            &h.access_review(version, READER_OBJECT, list_deployments)
                .await
        ));
        // RBAC Admin on namespace `dev` only.
        let create_deployment = |ns: &str| json!({"resourceAttributes": {"namespace": ns, "verb": "create", "group": "apps", "version": "v1", "resource": "deployments"}});
        assert!(allowed(
            &h.access_review(version, READER_OBJECT, create_deployment("dev"))
                .await
        ));
        assert!(!allowed(
            &h.access_review(version, READER_OBJECT, create_deployment("prod"))
                .await
        ));
        // Non-resource requests.
        let healthz = json!({"nonResourceAttributes": {"path": "/healthz", "verb": "get"}});
        assert!(allowed(
            &h.access_review(version, ADMIN_OBJECT, healthz.clone())
                .await
        ));
        assert!(!allowed(
            &h.access_review(version, NOBODY_OBJECT, healthz).await
        ));
        // Kubernetes identities are not Entra principals: no opinion.
        let r = h
            .access_review(version, "system:node:node1", create_node())
            .await;
        assert!(!allowed(&r));
        assert!(r["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("not a Microsoft Entra ID principal"));
    }
    let log = h.emu.request_log();
    let sar: Vec<_> = log
        .iter()
        .filter(|e| e.path == "/aks/subjectaccessreview")
        .collect();
    let count = |d: &str| {
        sar.iter()
            .filter(|e| e.decision.as_deref() == Some(d))
            .count()
    };
    assert_eq!((count("allowed"), count("no_opinion")), (10, 14));
    assert!(sar
        .iter()
        .any(|e| e.decision.as_deref() == Some("no_opinion")
            && e.caller.as_deref() == Some(NOBODY_OBJECT)
            && e.detail.as_deref() == Some(NODES_WRITE)));
}

#[tokio::test]
async fn access_review_has_no_opinion_when_azure_rbac_is_disabled() {
    let mut s = webhook_scenario();
    s.clusters[0].azure_rbac = false;
    let h = start_with(s).await;
    let r = h.access_review("v1", ADMIN_OBJECT, create_node()).await;
    assert!(!allowed(&r));
    assert!(r["status"]["reason"].as_str().unwrap().contains("disabled"));
}

#[tokio::test]
async fn named_cluster_routes_serve_that_cluster() {
    let h = start_with(webhook_scenario()).await;
    let token = h.aks_token(ADMIN_CLIENT, SECRET).await;
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let cluster = azure_emulator::scenario::DEMO_CLUSTER;
    let (s, b) = h
        .post_json(&format!("/aks/{cluster}/tokenreview"), &review)
        .await;
    assert_eq!((s, &b["status"]["authenticated"]), (200, &json!(true)));
    let (s, _) = h.post_json("/aks/other-cluster/tokenreview", &review).await;
    assert_eq!(s, 400);
    let sar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": ADMIN_OBJECT, "resourceAttributes": {"verb": "get", "resource": "nodes"}}});
    let (s, b) = h
        .post_json(&format!("/aks/{cluster}/subjectaccessreview"), &sar)
        .await;
    assert_eq!((s, &b["status"]["allowed"]), (200, &json!(true)));
    let (s, b) = h
        .post_json("/aks/other-cluster/subjectaccessreview", &sar)
        .await;
    assert_eq!((s, &b["status"]["allowed"]), (200, &json!(false)));
}

/// The node's path: the agent connects the machine, the machine identity gets an HIMDS token
/// for the AKS server app, and node registration is allowed exactly when the agent's role
/// assignment on the cluster exists.
#[tokio::test]
async fn machine_identity_can_register_a_node_only_after_its_role_assignment() {
    let h = start().await;
    let principal = h.connect_machine("node1").await;
    mark_connected(&h, "default", "node1").await;
    let himds = format!(
        "{}/metadata/identity/oauth2/token?api-version=2019-11-01&resource={AKS_AAD_SERVER_APP_ID}",
        h.emu.urls().himds
    );
    let challenge = h
        .http
        .get(&himds)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let www = challenge.headers()["www-authenticate"].to_str().unwrap();
    let key = std::fs::read_to_string(www.strip_prefix("Basic realm=").unwrap()).unwrap();
    let r = h
        .http
        .get(&himds)
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();

    let r = h.token_review("v1beta1", token).await;
    assert_eq!(r["status"]["user"]["username"], principal, "{r}");
    assert!(!allowed(
        &h.access_review("v1beta1", &principal, create_node()).await
    ));

    // The agent's default role for node access, assigned by the demo SP (User Access
    // Administrator on the cluster).
    let sp = h.sp_token().await;
    let (s, _, b) = h
        .arm(
            Method::PUT,
            &format!(
                "{}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
                cluster_path(),
                uuid::Uuid::new_v4()
            ),
            Some(&sp),
            Some(json!({"properties": {
                "roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b",
                "principalId": principal,
                "principalType": "ServicePrincipal"}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let r = h.access_review("v1beta1", &principal, create_node()).await;
    assert!(allowed(&r));
    assert!(r["status"]["reason"]
        .as_str()
        .unwrap()
        .contains("Azure Kubernetes Service RBAC Cluster Admin"));
    let status_patch = json!({"resourceAttributes": {"verb": "patch", "version": "v1", "resource": "nodes", "subresource": "status", "name": "node1"}});
    assert!(allowed(
        &h.access_review("v1beta1", &principal, status_patch).await
    ));
}

#[tokio::test]
async fn role_definitions_and_permissions_carry_data_actions() {
    let h = start_with(webhook_scenario()).await;
    let owner = h.owner_token().await;
    let (s, _, b) = h
        .arm(
            Method::GET,
            "/subscriptions/22222222-2222-4222-8222-222222222222/providers/Microsoft.Authorization/roleDefinitions/b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b?api-version=2022-04-01",
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["properties"]["permissions"][0]["dataActions"],
        json!(["Microsoft.ContainerService/managedClusters/*"])
    );
    let admin = h.token_for(ADMIN_CLIENT, SECRET).await;
    let (s, _, b) = h
        .arm(
            Method::GET,
            &format!(
                "{}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01",
                cluster_path()
            ),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["value"][0]["dataActions"],
        json!(["Microsoft.ContainerService/managedClusters/*"])
    );
}

#[tokio::test]
async fn cluster_for_a_real_api_server_is_configurable() {
    let mut s = scenario();
    let c = &mut s.clusters[0];
    c.kubernetes_version = "1.20.2".into();
    c.server_url = Some("https://127.0.0.1:6443".into());
    c.service_cidr = "10.96.0.0/12".into();
    c.dns_service_ip = "10.96.0.10".into();
    let h = start_with(s).await;
    let tok = h.sp_token().await;
    let (status, _, b) = h
        .arm(
            Method::GET,
            &format!("{}?api-version=2024-02-01", cluster_path()),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["properties"]["kubernetesVersion"], "1.20.2");
    assert_eq!(
        b["properties"]["networkProfile"]["dnsServiceIP"],
        "10.96.0.10"
    );
    assert_eq!(
        b["properties"]["networkProfile"]["serviceCidr"],
        "10.96.0.0/12"
    );

    // The demo default.
    let h = start().await;
    let (_, _, b) = h
        .arm(
            Method::GET,
            &format!("{}?api-version=2024-02-01", cluster_path()),
            Some(&h.sp_token().await),
            None,
        )
        .await;
    assert_eq!(
        b["properties"]["networkProfile"]["dnsServiceIP"],
        "10.0.0.10"
    );
}

/// Minimal structural check of the fixed kubeconfig text: `key: value` lines at the expected
/// indentation, with the server URL as a quoted string.
fn assert_webhook_kubeconfig(text: &str, server: &str) {
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let q = |s: &str| serde_json::to_string(s).unwrap();
    for expected in [
        "apiVersion: v1".to_string(),
        "kind: Config".to_string(),
        "clusters:".to_string(),
        "  cluster:".to_string(),
        format!("    server: {}", q(server)),
        "users:".to_string(),
        "- name: kube-apiserver".to_string(),
        "contexts:".to_string(),
        "- name: webhook".to_string(),
        "    user: kube-apiserver".to_string(),
        "current-context: webhook".to_string(),
    ] {
        assert!(
            lines.contains(&expected.as_str()),
            "{expected:?} in\n{text}"
        );
    }
    for l in &lines {
        assert!(!l.contains('\t'), "no tabs in YAML: {l:?}");
        let indent = l.len() - l.trim_start().len();
        assert!(indent.is_multiple_of(2), "even indentation: {l:?}");
        assert!(
            l.trim_start().starts_with("- ") || l.contains(": ") || l.ends_with(':'),
            "{l:?}"
        );
    }
    // The cluster the context names exists.
    let cluster_line = lines.iter().find(|l| l.starts_with("- name: \"")).unwrap();
    let name = cluster_line.trim_start_matches("- name: ");
    assert!(
        lines.contains(&format!("    cluster: {name}").as_str()),
        "{text}"
    );
}

#[test]
fn webhook_config_subcommand_writes_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flexnode-emulator"))
        .args([
            "webhook-config",
            "--url",
            "http://127.0.0.1:8642/",
            "--out-dir",
        ])
        .arg(dir.path().join("hooks"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let authn = dir.path().join("hooks/authn-webhook.yaml");
    let authz = dir.path().join("hooks/authz-webhook.yaml");
    assert_eq!(printed["authentication_config"], authn.to_str().unwrap());
    assert_eq!(printed["authorization_config"], authz.to_str().unwrap());
    assert_eq!(
        printed["kube_apiserver_flags"],
        json!([
            format!(
                "--authentication-token-webhook-config-file={}",
                authn.display()
            ),
            "--authorization-mode=Node,Webhook,RBAC",
            format!("--authorization-webhook-config-file={}", authz.display()),
        ])
    );
    assert_webhook_kubeconfig(
        &std::fs::read_to_string(&authn).unwrap(),
        "http://127.0.0.1:8642/aks/tokenreview",
    );
    assert_webhook_kubeconfig(
        &std::fs::read_to_string(&authz).unwrap(),
        "http://127.0.0.1:8642/aks/subjectaccessreview",
    );

    let out = Command::new(env!("CARGO_BIN_EXE_flexnode-emulator"))
        .args([
            "webhook-config",
            "--cluster",
            "c1",
            "--url",
            "http://127.0.0.1:1",
            "--out-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_webhook_kubeconfig(
        &std::fs::read_to_string(dir.path().join("authz-webhook.yaml")).unwrap(),
        "http://127.0.0.1:1/aks/c1/subjectaccessreview",
    );

    let out = Command::new(env!("CARGO_BIN_EXE_flexnode-emulator"))
        .args(["webhook-config", "--url", "127.0.0.1:8642", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://"));
}
