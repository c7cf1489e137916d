//! ARM: authentication, api-version, permissions, machines, clusters, role assignments.

use azure_emulator::scenario::{DEMO_SP_OBJECT_ID, DEMO_SUBSCRIPTION_ID, DEMO_TENANT_ID};
use base64::Engine;
use reqwest::Method;
use serde_json::json;

use crate::{
    cluster_path, error_code, machine_path, rg_path, start, start_with, NOBODY_CLIENT,
    NOBODY_OBJECT, SECRET,
};

const AKS: &str = "api-version=2024-02-01";
const RA: &str = "api-version=2022-04-01";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const RBAC_CLUSTER_ADMIN: &str = "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b";

fn role_def(guid: &str) -> String {
    format!("/subscriptions/{DEMO_SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/{guid}")
}

fn ra_path(scope: &str, name: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?{RA}")
}

fn new_name() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn missing_invalid_expired_and_wrong_audience_tokens_get_401() {
    let h = start().await;
    let url = format!("{}?{AKS}", cluster_path());
    let (s, hd, b) = h.arm(Method::GET, &url, None, None).await;
    assert_eq!((s, error_code(&b)), (401, "AuthenticationFailed"));
    let www = hd["www-authenticate"].to_str().unwrap();
    assert!(
        www.starts_with("Bearer authorization_uri=") && www.contains(DEMO_TENANT_ID),
        "{www}"
    );

    let (s, _, b) = h.arm(Method::GET, &url, Some("not.a.jwt"), None).await;
    assert_eq!((s, error_code(&b)), (401, "InvalidAuthenticationToken"));

    h.emu.set_token_lifetime_secs(0);
    let expired = h.sp_token().await;
    let (s, hd, b) = h.arm(Method::GET, &url, Some(&expired), None).await;
    assert_eq!((s, error_code(&b)), (401, "ExpiredAuthenticationToken"));
    assert!(hd["www-authenticate"].to_str().unwrap().contains("expired"));
    h.emu.set_token_lifetime_secs(3600);

    let (_, body) = h
        .token_request(
            DEMO_TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", azure_emulator::scenario::DEMO_SP_CLIENT_ID),
                ("client_secret", "flexnode-demo-secret"),
                ("scope", "6dae42f8-4368-4678-94ff-3960e28e3630/.default"),
            ],
        )
        .await;
    let (s, _, b) = h
        .arm(Method::GET, &url, body["access_token"].as_str(), None)
        .await;
    assert_eq!(
        (s, error_code(&b)),
        (401, "InvalidAuthenticationTokenAudience")
    );
}

#[tokio::test]
async fn api_version_is_required_and_checked_per_resource_type() {
    let h = start().await;
    let tok = h.sp_token().await;
    let (s, _, b) = h.arm(Method::GET, &cluster_path(), Some(&tok), None).await;
    assert_eq!((s, error_code(&b)), (400, "MissingApiVersionParameter"));
    // A HybridCompute version is not valid for managedClusters.
    let (s, _, b) = h
        .arm(
            Method::GET,
            &format!("{}?api-version=2022-03-10", cluster_path()),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!((s, error_code(&b)), (400, "InvalidApiVersionParameter"));
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2024-02-01"));
    let (s, _, b) = h
        .arm(
            Method::GET,
            &format!("{}?api-version=2024-02-01", machine_path("m")),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!((s, error_code(&b)), (400, "InvalidApiVersionParameter"));
}

#[tokio::test]
async fn managed_cluster_get_and_not_found_errors() {
    let h = start().await;
    let tok = h.sp_token().await;
    let (s, _, b) = h
        .arm(
            Method::GET,
            &format!("{}?{AKS}", cluster_path()),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["properties"]["aadProfile"]["enableAzureRBAC"], true);
    assert_eq!(b["properties"]["kubernetesVersion"], "1.30.6");
    assert!(b["properties"]["fqdn"]
        .as_str()
        .unwrap()
        .ends_with(".hcp.eastus.azmk8s.io"));

    let other = cluster_path().replace("flexnode-demo-aks", "nope");
    let (s, _, b) = h
        .arm(
            Method::GET,
            &format!("{other}?{AKS}"),
            Some(&h.owner_token().await),
            None,
        )
        .await;
    assert_eq!((s, error_code(&b)), (404, "ResourceNotFound"));
    let bad_rg = format!("/subscriptions/{DEMO_SUBSCRIPTION_ID}/resourceGroups/missing/providers/Microsoft.ContainerService/managedClusters/x?{AKS}");
    let (s, _, b) = h
        .arm(Method::GET, &bad_rg, Some(&h.owner_token().await), None)
        .await;
    assert_eq!((s, error_code(&b)), (404, "ResourceGroupNotFound"));
    let bad_sub = format!("/subscriptions/00000000-0000-4000-8000-00000000000f/resourceGroups/x/providers/Microsoft.ContainerService/managedClusters/x?{AKS}");
    let (s, _, b) = h.arm(Method::GET, &bad_sub, Some(&tok), None).await;
    assert_eq!((s, error_code(&b)), (404, "SubscriptionNotFound"));
}

#[tokio::test]
async fn caller_without_a_role_gets_authorization_failed_naming_action_and_scope() {
    let h = start().await;
    let tok = h.token_for(NOBODY_CLIENT, SECRET).await;
    let (s, _, b) = h
        .arm(
            Method::GET,
            &format!("{}?{AKS}", cluster_path()),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!((s, error_code(&b)), (403, "AuthorizationFailed"));
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(NOBODY_OBJECT)
            && msg.contains("Microsoft.ContainerService/managedClusters/read"),
        "{msg}"
    );
    assert!(msg.contains("flexnode-demo-aks"), "{msg}");
}

#[tokio::test]
async fn cluster_credentials_carry_server_and_ca_and_admin_respects_local_accounts() {
    let h = start().await;
    let tok = h.sp_token().await;
    // The demo SP holds AKS Cluster Admin Role (admin creds) but not the User Role.
    let (s, _, b) = h
        .arm(
            Method::POST,
            &format!("{}/listClusterAdminCredential?{AKS}", cluster_path()),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let yaml = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b["kubeconfigs"][0]["value"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(
        yaml.contains("server: \"https://flexnode-demo-aks-dns-"),
        "{yaml}"
    );
    let ca_line = yaml
        .lines()
        .find(|l| l.contains("certificate-authority-data:"))
        .unwrap();
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca_line.split(": ").nth(1).unwrap().trim())
        .unwrap();
    assert!(String::from_utf8(ca)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let (s, _, b) = h
        .arm(
            Method::POST,
            &format!("{}/listClusterUserCredential?{AKS}", cluster_path()),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!((s, error_code(&b)), (403, "AuthorizationFailed"));
    let (s, _, b) = h
        .arm(
            Method::POST,
            &format!("{}/listClusterUserCredential?{AKS}", cluster_path()),
            Some(&h.owner_token().await),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["kubeconfigs"][0]["name"], "clusterUser");

    let mut sc = crate::scenario();
    sc.clusters[0].disable_local_accounts = true;
    sc.clusters[0].server_url = Some("https://10.0.0.1:6443".into());
    let h2 = start_with(sc).await;
    let tok = h2.sp_token().await;
    let (s, _, b) = h2
        .arm(
            Method::POST,
            &format!("{}/listClusterAdminCredential?{AKS}", cluster_path()),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!((s, error_code(&b)), (400, "BadRequest"));
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("disable local accounts"));
    let (s, _, b) = h2
        .arm(
            Method::POST,
            &format!("{}/listClusterUserCredential?{AKS}", cluster_path()),
            Some(&h2.owner_token().await),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let yaml = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b["kubeconfigs"][0]["value"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(yaml.contains("server: \"https://10.0.0.1:6443\""), "{yaml}");
}

#[tokio::test]
async fn machine_put_get_delete_with_identity_and_permissions() {
    let h = start().await;
    let tok = h.sp_token().await;
    let url = format!("{}?api-version=2022-03-10", machine_path("node-a"));
    let (s, _, b) = h.arm(Method::GET, &url, Some(&tok), None).await;
    assert_eq!((s, error_code(&b)), (404, "ResourceNotFound"));
    let (s, _, b) = h
        .arm(
            Method::PUT,
            &url,
            Some(&tok),
            Some(json!({"identity": {"type": "SystemAssigned"}})),
        )
        .await;
    assert_eq!((s, error_code(&b)), (400, "LocationRequired"));
    let principal = h.connect_machine("node-a").await;
    let (s, _, b) = h.arm(Method::GET, &url, Some(&tok), None).await;
    assert_eq!(s, 200);
    assert_eq!(b["identity"]["principalId"], principal.as_str());
    assert_eq!(b["identity"]["tenantId"], DEMO_TENANT_ID);
    // A second PUT keeps the identity.
    let again = h.connect_machine("node-a").await;
    assert_eq!(again, principal);
    // Azure Connected Machine Onboarding cannot delete.
    let (s, _, b) = h.arm(Method::DELETE, &url, Some(&tok), None).await;
    assert_eq!((s, error_code(&b)), (403, "AuthorizationFailed"));
    let owner = h.owner_token().await;
    let (s, _, _) = h.arm(Method::DELETE, &url, Some(&owner), None).await;
    assert_eq!(s, 200);
    let (s, _, _) = h.arm(Method::DELETE, &url, Some(&owner), None).await;
    assert_eq!(s, 204);
    assert!(h.emu.state().machines.is_empty());
}

#[tokio::test]
async fn role_assignment_lifecycle_duplicates_and_errors() {
    let h = start().await;
    let tok = h.sp_token().await;
    let principal = h.connect_machine("node-b").await;
    let scope = cluster_path();
    let name = new_name();
    let body = json!({"properties": {"roleDefinitionId": role_def(RBAC_CLUSTER_ADMIN), "principalId": principal, "principalType": "ServicePrincipal"}});
    let (s, _, b) = h
        .arm(
            Method::PUT,
            &ra_path(&scope, &name),
            Some(&tok),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        b["properties"]["roleDefinitionId"],
        format!("/providers/Microsoft.Authorization/roleDefinitions/{RBAC_CLUSTER_ADMIN}")
    );
    assert_eq!(b["properties"]["scope"], scope.as_str());
    // Same name, same content: idempotent.
    let (s, _, _) = h
        .arm(
            Method::PUT,
            &ra_path(&scope, &name),
            Some(&tok),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 201);
    // Same triple under a new name.
    let (s, _, b) = h
        .arm(
            Method::PUT,
            &ra_path(&scope, &new_name()),
            Some(&tok),
            Some(body.clone()),
        )
        .await;
    assert_eq!((s, error_code(&b)), (409, "RoleAssignmentExists"));
    let (s, _, b) = h
        .arm(Method::GET, &ra_path(&scope, &name), Some(&tok), None)
        .await;
    assert_eq!((s, b["name"].as_str()), (200, Some(name.as_str())));
    let (s, _, b) = h
        .arm(Method::DELETE, &ra_path(&scope, &name), Some(&tok), None)
        .await;
    assert_eq!((s, b["name"].as_str()), (200, Some(name.as_str())));
    let (s, _, _) = h
        .arm(Method::DELETE, &ra_path(&scope, &name), Some(&tok), None)
        .await;
    assert_eq!(s, 204);
    let (s, _, b) = h
        .arm(Method::GET, &ra_path(&scope, &name), Some(&tok), None)
        .await;
    assert_eq!((s, error_code(&b)), (404, "RoleAssignmentNotFound"));

    let unknown = json!({"properties": {"roleDefinitionId": role_def(READER), "principalId": "12345678-1234-4234-8234-123456789012"}});
    let (s, _, b) = h
        .arm(
            Method::PUT,
            &ra_path(&scope, &new_name()),
            Some(&tok),
            Some(unknown),
        )
        .await;
    assert_eq!((s, error_code(&b)), (400, "PrincipalNotFound"));
    let bad_role = json!({"properties": {"roleDefinitionId": role_def("12345678-1234-4234-8234-123456789012"), "principalId": principal}});
    let (s, _, b) = h
        .arm(
            Method::PUT,
            &ra_path(&scope, &new_name()),
            Some(&tok),
            Some(bad_role),
        )
        .await;
    assert_eq!((s, error_code(&b)), (400, "RoleDefinitionDoesNotExist"));
    // The demo SP may assign on the cluster (User Access Administrator) but not on the RG.
    let (s, _, b) = h
        .arm(
            Method::PUT,
            &ra_path(&rg_path(), &new_name()),
            Some(&tok),
            Some(body),
        )
        .await;
    assert_eq!((s, error_code(&b)), (403, "AuthorizationFailed"));
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Microsoft.Authorization/roleAssignments/write"));
}

#[tokio::test]
async fn new_identity_replicates_after_configured_attempts() {
    let h = start().await;
    h.emu.set_principal_replication_attempts(2);
    let tok = h.sp_token().await;
    let principal = h.connect_machine("node-c").await;
    let body = json!({"properties": {"roleDefinitionId": role_def(READER), "principalId": principal, "principalType": "ServicePrincipal"}});
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (s, _, b) = h
            .arm(
                Method::PUT,
                &ra_path(&cluster_path(), &new_name()),
                Some(&tok),
                Some(body.clone()),
            )
            .await;
        statuses.push((s, error_code(&b).to_string()));
    }
    assert_eq!(
        statuses,
        vec![
            (400, "PrincipalNotFound".into()),
            (400, "PrincipalNotFound".into()),
            (201, String::new())
        ]
    );
}

/// Follow `nextLink` through every page; returns the items and the page count.
async fn list_all(h: &crate::H, tok: &str, first: &str) -> (Vec<serde_json::Value>, usize) {
    let mut url = first.to_string();
    let (mut all, mut pages) = (Vec::new(), 0);
    loop {
        let (s, _, b) = h.arm(Method::GET, &url, Some(tok), None).await;
        assert_eq!(s, 200, "{b}");
        pages += 1;
        all.extend(b["value"].as_array().unwrap().clone());
        match b["nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => return (all, pages),
        }
    }
}

#[tokio::test]
async fn list_filters_and_pages_with_next_link() {
    let mut sc = crate::scenario();
    sc.settings.list_page_size = 2;
    let h = start_with(sc).await;
    let tok = h.sp_token().await;
    let owner = h.owner_token().await;
    let p1 = h.connect_machine("n1").await;
    let p2 = h.connect_machine("n2").await;
    for p in [&p1, &p2] {
        for role in [READER, RBAC_CLUSTER_ADMIN] {
            let body =
                json!({"properties": {"roleDefinitionId": role_def(role), "principalId": p}});
            let (s, _, b) = h
                .arm(
                    Method::PUT,
                    &ra_path(&cluster_path(), &new_name()),
                    Some(&tok),
                    Some(body),
                )
                .await;
            assert_eq!(s, 201, "{b}");
        }
    }
    let (all, pages) = list_all(
        &h,
        &tok,
        &format!(
            "{}/providers/Microsoft.Authorization/roleAssignments?{RA}",
            cluster_path()
        ),
    )
    .await;
    // 4 new + the demo SP's 2 at the cluster + its RG one above + the user's and the Owner SP's
    // subscription ones above.
    assert_eq!(all.len(), 9, "{all:#?}");
    assert_eq!(pages, 5);

    let filter = |f: &str| {
        format!(
            "{}/providers/Microsoft.Authorization/roleAssignments?{}",
            cluster_path(),
            serde_urlencoded::to_string([("api-version", "2022-04-01"), ("$filter", f)]).unwrap()
        )
    };
    let (v, _) = list_all(&h, &tok, &filter(&format!("principalId eq '{p1}'"))).await;
    assert_eq!(v.len(), 2);
    assert!(v
        .iter()
        .all(|r| r["properties"]["principalId"] == p1.as_str()));

    // atScope() at the resource group excludes the assignments below it (on the cluster).
    let rg_list = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments?{}",
        rg_path(),
        serde_urlencoded::to_string([("api-version", "2022-04-01"), ("$filter", "atScope()")])
            .unwrap()
    );
    let (v, _) = list_all(&h, &owner, &rg_list).await;
    let scopes: Vec<String> = v
        .iter()
        .map(|r| r["properties"]["scope"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(scopes.len(), 3, "{scopes:?}");
    assert!(scopes.iter().all(|s| !s.contains("managedClusters")));
    let (v, _) = list_all(
        &h,
        &tok,
        &filter(&format!("atScope() and assignedTo('{DEMO_SP_OBJECT_ID}')")),
    )
    .await;
    assert_eq!(v.len(), 3);

    let (s, _, b) = h
        .arm(
            Method::GET,
            &filter("roleDefinitionId eq 'x'"),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!((s, error_code(&b)), (400, "UnsupportedQuery"));
}

#[tokio::test]
async fn role_definitions_are_served_by_guid() {
    let h = start().await;
    let tok = h.sp_token().await;
    let (s, _, b) = h
        .arm(Method::GET, &format!("/subscriptions/{DEMO_SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/{READER}?{RA}"), Some(&h.owner_token().await), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["properties"]["roleName"], "Reader");
    let (s, _, b) = h
        .arm(Method::GET, &format!("/subscriptions/{DEMO_SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/{READER}?{RA}"), Some(&tok), None)
        .await;
    assert_eq!((s, error_code(&b)), (403, "AuthorizationFailed"));
}

#[tokio::test]
async fn state_persists_across_restarts_with_tokens_still_valid() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || azure_emulator::EmulatorOptions {
        scenario: crate::scenario(),
        state_dir: Some(dir.path().join("state")),
        himds_key_dir: Some(dir.path().join("keys")),
        ..Default::default()
    };
    let emu = azure_emulator::Emulator::start(opts()).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = emu.urls().arm.clone();
    let token: serde_json::Value = http
        .post(format!("{base}/{DEMO_TENANT_ID}/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(crate::form(&[
            ("grant_type", "client_credentials"),
            ("client_id", azure_emulator::scenario::DEMO_SP_CLIENT_ID),
            ("client_secret", "flexnode-demo-secret"),
            ("scope", "https://management.azure.com/.default"),
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok = token["access_token"].as_str().unwrap().to_string();
    let r = http
        .put(format!(
            "{base}{}?api-version=2022-03-10",
            machine_path("persisted")
        ))
        .bearer_auth(&tok)
        .json(&json!({"location": "eastus", "identity": {"type": "SystemAssigned"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = emu.state();
    emu.shutdown().await;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("state/state.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let emu = azure_emulator::Emulator::start(opts()).await.unwrap();
    assert_eq!(emu.state(), before);
    let base = emu.urls().arm.clone();
    let r = http
        .get(format!(
            "{base}{}?api-version=2022-03-10",
            machine_path("persisted")
        ))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn permissions_list_the_callers_effective_actions_at_a_scope() {
    let h = start().await;
    let tok = h.sp_token().await;
    let perms =
        |scope: String| format!("{scope}/providers/Microsoft.Authorization/permissions?{RA}");
    // At the cluster: the demo SP's three assignments that cover it (Onboarding on the resource group,
    // User Access Administrator and AKS Cluster Admin Role on the cluster).
    let (s, _, b) = h
        .arm(Method::GET, &perms(cluster_path()), Some(&tok), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let value = b["value"].as_array().unwrap();
    assert_eq!(value.len(), 3, "{b}");
    let actions: Vec<&str> = value
        .iter()
        .flat_map(|p| p["actions"].as_array().unwrap())
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        actions.contains(&"Microsoft.Authorization/*"),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"Microsoft.HybridCompute/machines/write"),
        "{actions:?}"
    );
    for p in value {
        for k in ["notActions", "dataActions", "notDataActions"] {
            assert!(p[k].is_array(), "{p}");
        }
    }
    // At the resource group the cluster-scoped assignments do not count.
    let (s, _, b) = h
        .arm(Method::GET, &perms(rg_path()), Some(&tok), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["value"].as_array().unwrap().len(), 1, "{b}");
    // Wrong api-version, unknown resource group, write method.
    let (s, _, b) = h
        .arm(
            Method::GET,
            &format!(
                "{}/providers/Microsoft.Authorization/permissions?api-version=2022-03-10",
                rg_path()
            ),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!((s, error_code(&b)), (400, "InvalidApiVersionParameter"));
    let (s, _, b) = h
        .arm(
            Method::GET,
            &perms(format!(
                "/subscriptions/{DEMO_SUBSCRIPTION_ID}/resourceGroups/nope"
            )),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!((s, error_code(&b)), (404, "ResourceGroupNotFound"));
    let (s, _, _) = h
        .arm(Method::PUT, &perms(rg_path()), Some(&tok), Some(json!({})))
        .await;
    assert_eq!(s, 405);
}
