//! Identity phase end to end against the in-process emulator on 127.0.0.1: bootstrap, re-run with zero
//! ARM writes, plan output, unbootstrap, faults, and secrets never leaking.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aks_flex_node::azure::credential::TEST_KEY_DIR_ENV;
use azure_emulator::scenario::{self, Scenario};

use crate::support::azure::{azcmagent_bin, cluster_id, contributor_on_rg, World};
use crate::support::{bin, Run};

/// The node of these tests.
async fn world(scenario: Scenario) -> World {
    World::start(scenario, "node-a").await
}

/// Runs the agent on the world's node.
fn run(w: &World, args: &[&str], secret: &str) -> Run {
    crate::support::run(w.command(secret, &azcmagent_bin()).args(args))
}

const IDENTITY_ONLY: [&str; 4] = ["--skip-phase", "installation", "--skip-phase", "activation"];

fn bootstrap_args() -> Vec<&'static str> {
    let mut v = vec!["bootstrap"];
    v.extend(IDENTITY_ONLY);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_rerun_plan_and_unbootstrap() {
    let mut sc = Scenario::demo();
    // Deleting the machine needs more than Azure Connected Machine Onboarding (see the unbootstrap test below).
    sc.role_assignments.push(contributor_on_rg());
    let w = world(sc).await;
    let secret = scenario::DEMO_SP_SECRET;

    // Plan on a fresh node lists the Arc, role and credential actions and changes nothing in Azure.
    let out = run(&w, &["plan", "-o", "json"], secret);
    assert_eq!(out.code, 0, "{}", out.text());
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let arc = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ArcInstall")
        .unwrap();
    let kinds: Vec<&str> = arc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        [
            "arcConnect",
            "assignRole",
            "assignRole",
            "assignRole",
            "waitRoles",
            "useClusterEndpoint"
        ]
    );
    assert!(w.writes_since(0).is_empty(), "{:?}", w.writes_since(0));
    assert!(!out.text().contains(secret));
    // The kubelet's clusterDNS defaults to the managed cluster's networkProfile.dnsServiceIP.
    let kubelet_config = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "KubeletInstaller")
        .flat_map(|s| s["actions"].as_array().unwrap())
        .find(|a| a["path"] == "/var/lib/kubelet/config.yaml")
        .expect("KubeletInstaller writes config.yaml")["diff"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        kubelet_config
            .contains("+clusterDNS:\n+- \"10.0.0.10\"\n+clusterDomain: \"cluster.local\"\n"),
        "{kubelet_config}"
    );

    // Bootstrap, while watching every process's argv for secrets and tokens.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let watcher = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut saw_azcmagent = false;
            while !stop.load(Ordering::Relaxed) {
                for e in std::fs::read_dir("/proc").unwrap().flatten() {
                    if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
                        let c = String::from_utf8_lossy(&c).replace('\0', " ");
                        if c.contains("azcmagent") && c.contains("connect") {
                            saw_azcmagent = true;
                        }
                        if c.contains("eyJ") || c.contains(scenario::DEMO_SP_SECRET) {
                            seen.lock().unwrap().push(c);
                        }
                    }
                }
            }
            saw_azcmagent
        })
    };
    // A token cached for an earlier identity of this host is deleted by the Arc connect.
    let token_cache = w.root().join("run/aks-flex-node/token-cache.json");
    std::fs::create_dir_all(token_cache.parent().unwrap()).unwrap();
    std::fs::write(
        &token_cache,
        r#"{"resource":"r","accessToken":"old","expiresOn":0}"#,
    )
    .unwrap();
    // Keep azcmagent alive long enough to be seen: its machine PUT is slowed down.
    w.emu
        .set_fault(serde_json::from_value(serde_json::json!({
            "method": "PUT", "path": "/subscriptions/*/resourceGroups/*/providers/Microsoft.HybridCompute/machines/*",
            "kind": "latency", "latency_ms": 400, "count": 1
        })).unwrap())
        .unwrap();
    let out = run(&w, &bootstrap_args(), secret);
    stop.store(true, Ordering::Relaxed);
    let saw_azcmagent = watcher.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(
        saw_azcmagent,
        "the /proc scan never saw azcmagent connect running"
    );
    assert!(
        !token_cache.exists(),
        "the Arc connect left the old token cache"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "secret on a command line: {:?}",
        seen.lock().unwrap()
    );
    assert!(
        !out.text().contains(secret) && !out.text().contains("eyJ"),
        "{}",
        out.text()
    );

    let principal = w.principal().expect("machine has a principal");
    let st = w.emu.state();
    let mut roles: Vec<&str> = st
        .role_assignments
        .iter()
        .filter(|r| r.principal_id == principal)
        .map(|r| r.role_guid.as_str())
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8",
            "acdd72a7-3385-48ef-bd42-f606fba81ae7",
            "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b"
        ]
    );
    assert!(st.hosts.get(&w.host).is_some_and(|h| h.connected));
    // The token file azcmagent read is gone, and nothing under the root holds a secret.
    let journal =
        std::fs::read_to_string(w.root().join("var/lib/aks-flex-node/journal.json")).unwrap();
    assert!(!journal.contains(secret) && !journal.contains("eyJ"));
    assert!(journal.contains("roleAssignment") && journal.contains("arcMachine"));

    // Re-run: converged, zero ARM writes.
    let from = w.emu.request_log().len();
    let out = run(&w, &bootstrap_args(), secret);
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(
        w.writes_since(from).is_empty(),
        "re-run wrote: {:?}",
        w.writes_since(from)
    );
    let out = run(&w, &["plan", "-o", "json"], secret);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let arc = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ArcInstall")
        .unwrap();
    assert_eq!(arc["status"], "converged", "{arc}");

    // The token command gets a token for the AKS AAD server app from this host's HIMDS. Only a debug
    // binary accepts the emulator's temp key directory; a release one reads key files from
    // /var/opt/azcmagent/tokens only.
    if cfg!(debug_assertions) {
        let u = w.emu.urls();
        let out = crate::support::run(bin()
            .args(["--root"]).arg(w.root()).arg("token")
            .env("IDENTITY_ENDPOINT", format!("{}/hosts/{}/metadata/identity/oauth2/token", u.himds, w.host))
            .env(TEST_KEY_DIR_ENV, w.emu.himds_key_dir())
            .env("KUBERNETES_EXEC_INFO", r#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","spec":{"interactive":false}}"#));
        assert_eq!(out.code, 0, "{}", out.text());
        let cred: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(cred["apiVersion"], "client.authentication.k8s.io/v1beta1");
        assert!(cred["status"]["token"].as_str().unwrap().starts_with("eyJ"));
        assert!(out.stderr.is_empty(), "{}", out.text());
        assert!(token_cache.exists(), "the token command cached nothing");
    }

    // Unbootstrap removes what bootstrap made in Azure, and the token cache of the deleted identity.
    let out = run(&w, &["unbootstrap"], secret);
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(!token_cache.exists(), "unbootstrap left the token cache");
    assert!(!token_cache.parent().unwrap().exists());
    let st = w.emu.state();
    assert!(
        st.machines.iter().all(|m| m.name != w.host),
        "machine left: {:?}",
        st.machines
    );
    assert!(st
        .role_assignments
        .iter()
        .all(|r| r.principal_id != principal));
    assert!(!st.hosts.get(&w.host).is_some_and(|h| h.connected));
}

async fn bootstrap_fails_with(w: &World, secret: &str, needles: &[&str]) -> String {
    let out = run(w, &bootstrap_args(), secret);
    let t = out.text();
    assert_ne!(out.code, 0, "bootstrap should fail: {t}");
    for n in needles {
        assert!(t.contains(n), "missing {n:?} in:\n{t}");
    }
    assert!(!t.contains(secret) || secret.is_empty());
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_explained() {
    let w = world(Scenario::demo()).await;
    bootstrap_fails_with(
        &w,
        "wrong-secret-value",
        &["AADSTS7000215", "client secret is wrong or expired"],
    )
    .await;
    assert!(w.writes_since(0).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_without_azure_rbac_is_refused_with_the_fix() {
    let mut s = Scenario::demo();
    s.clusters[0].azure_rbac = false;
    let w = world(s).await;
    bootstrap_fails_with(
        &w,
        scenario::DEMO_SP_SECRET,
        &["Azure RBAC", "--enable-azure-rbac"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_server_errors_resets_and_replication_are_survived() {
    let w = world(Scenario::demo()).await;
    for rule in [
        serde_json::json!({"method":"PUT","path":"/**/roleAssignments/*","kind":"status","status":429,"retry_after_secs":1,"count":2}),
        serde_json::json!({"method":"GET","path":"/**/managedClusters/*","kind":"status","status":503,"count":2}),
        serde_json::json!({"method":"GET","path":"/**/roleAssignments","kind":"reset","count":1}),
    ] {
        w.emu
            .set_fault(serde_json::from_value(rule).unwrap())
            .unwrap();
    }
    // The new identity stays unknown to Azure RBAC for the first three assignment attempts.
    w.emu.set_principal_replication_attempts(3);
    let out = run(&w, &bootstrap_args(), scenario::DEMO_SP_SECRET);
    assert_eq!(out.code, 0, "{}", out.text());
    let log = w.emu.request_log();
    assert!(log.iter().any(|e| e.status == 429));
    assert!(log
        .iter()
        .any(|e| e.status == 400 && e.path.contains("roleAssignments")));
    let p = w.principal().unwrap();
    assert_eq!(
        w.emu
            .state()
            .role_assignments
            .iter()
            .filter(|r| r.principal_id == p)
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azcmagent_connect_is_retried_on_throttling_and_not_on_a_bad_request() {
    // azcmagent's own PUT of the machine is throttled twice: the agent reads the 429 from its output and
    // runs it again.
    let w = world(Scenario::demo()).await;
    w.emu
        .set_fault(serde_json::from_value(serde_json::json!({"method":"PUT","path":"/**/machines/*","kind":"status","status":429,"count":2})).unwrap())
        .unwrap();
    let out = run(&w, &bootstrap_args(), scenario::DEMO_SP_SECRET);
    assert_eq!(out.code, 0, "{}", out.text());
    let puts = |w: &World| {
        w.emu
            .request_log()
            .iter()
            .filter(|e| e.method == "PUT" && e.path.contains("/machines/"))
            .map(|e| e.status)
            .collect::<Vec<_>>()
    };
    assert_eq!(puts(&w), vec![429, 429, 200], "{}", out.text());

    // A 400 is the request's fault: one attempt, then the error.
    let w = world(Scenario::demo()).await;
    w.emu
        .set_fault(serde_json::from_value(serde_json::json!({"method":"PUT","path":"/**/machines/*","kind":"status","status":400,"count":5})).unwrap())
        .unwrap();
    let out = run(&w, &bootstrap_args(), scenario::DEMO_SP_SECRET);
    assert_ne!(out.code, 0, "{}", out.text());
    assert_eq!(puts(&w), vec![400], "{}", out.text());
    assert!(out.text().contains("azcmagent connect"), "{}", out.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_permission_names_role_scope_and_who_can_grant() {
    let mut s = Scenario::demo();
    // The SP keeps onboarding rights but loses User Access Administrator on the cluster.
    s.role_assignments.retain(|r| {
        let role = r.role.to_ascii_lowercase();
        !(role.contains("18d7d88d-d35e-4fb5-a5c3-7773c20a72d9")
            || role == "user access administrator")
    });
    let w = world(s).await;
    let write_on_cluster = format!(
        "Microsoft.Authorization/roleAssignments/write on {}",
        cluster_id()
    );
    let t = bootstrap_fails_with(
        &w,
        scenario::DEMO_SP_SECRET,
        &[
            "lacks 3 permission(s)",
            "nothing was changed",
            &format!("{write_on_cluster} (to assign Reader to the Arc identity)"),
            &format!(
                "{write_on_cluster} (to assign Azure Kubernetes Service RBAC Cluster Admin to"
            ),
            &format!(
                "{write_on_cluster} (to assign Azure Kubernetes Service Cluster Admin Role to"
            ),
            "not allowed to assign",
            "User Access Administrator",
        ],
    )
    .await;
    // Onboarding is allowed, so it is not reported.
    assert!(
        !t.contains("Microsoft.HybridCompute/machines/write on"),
        "{t}"
    );
    // The preflight failed before Arc was connected: nothing at all was written.
    assert!(w.writes_since(0).is_empty(), "{:?}", w.writes_since(0));
    assert!(w.principal().is_none());
    assert!(!w
        .emu
        .state()
        .hosts
        .get(&w.host)
        .is_some_and(|h| h.connected));
    assert!(w.emu.request_log().iter().any(|e| e
        .path
        .ends_with("/providers/Microsoft.Authorization/permissions")
        && e.api_version.as_deref() == Some("2022-04-01")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_missing_permission_is_named_at_once() {
    let mut s = Scenario::demo();
    // Reader on the resource group and the AKS Cluster Admin Role: it can look, but neither onboard a
    // machine nor assign roles.
    s.role_assignments.retain(|r| {
        r.principal_id != scenario::DEMO_SP_OBJECT_ID || r.role.contains("Cluster Admin Role")
    });
    s.role_assignments
        .push(azure_emulator::scenario::SeedRoleAssignment {
            principal_id: scenario::DEMO_SP_OBJECT_ID.into(),
            role: "Reader".into(),
            scope: format!(
                "/subscriptions/{}/resourceGroups/{}",
                scenario::DEMO_SUBSCRIPTION_ID,
                scenario::DEMO_RESOURCE_GROUP
            ),
            name: None,
        });
    let w = world(s).await;
    let t = bootstrap_fails_with(
        &w,
        scenario::DEMO_SP_SECRET,
        &[
            "lacks 4 permission(s)",
            &format!(
                "Microsoft.HybridCompute/machines/write on /subscriptions/{}/resourceGroups/{} (to register the Arc machine",
                scenario::DEMO_SUBSCRIPTION_ID,
                scenario::DEMO_RESOURCE_GROUP
            ),
            "Azure Connected Machine Onboarding",
            "autoRoleAssignment=false",
        ],
    )
    .await;
    assert_eq!(
        t.matches("Microsoft.Authorization/roleAssignments/write on")
            .count(),
        3,
        "{t}"
    );
    assert!(w.writes_since(0).is_empty(), "{:?}", w.writes_since(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_mid_run_are_renewed() {
    let w = world(Scenario::demo()).await;
    // Tokens live one second: later requests in the run meet expired tokens and must re-authenticate.
    w.emu.set_token_lifetime_secs(1);
    w.emu.set_fault(serde_json::from_value(serde_json::json!({"method":"GET","path":"/**/managedClusters/*","kind":"latency","latency_ms":1500,"count":1})).unwrap()).unwrap();
    let out = run(&w, &bootstrap_args(), scenario::DEMO_SP_SECRET);
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(
        w.emu.request_log().iter().any(|e| e.status == 401),
        "no request met an expired token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbootstrap_reports_what_it_could_not_remove() {
    // The demo SP may onboard machines but not delete them (as in Azure): unbootstrap must say so and fail.
    let w = world(Scenario::demo()).await;
    let out = run(&w, &bootstrap_args(), scenario::DEMO_SP_SECRET);
    assert_eq!(out.code, 0, "{}", out.text());
    let p = w.principal().unwrap();
    let out = run(&w, &["unbootstrap"], scenario::DEMO_SP_SECRET);
    let t = out.text();
    assert_ne!(out.code, 0, "{t}");
    assert!(
        t.contains("Microsoft.HybridCompute/machines/delete") && t.contains("node-a"),
        "{t}"
    );
    // The role assignments were still removed, and the journal keeps the machine for a later attempt.
    assert!(w
        .emu
        .state()
        .role_assignments
        .iter()
        .all(|r| r.principal_id != p));
    let journal =
        std::fs::read_to_string(w.root().join("var/lib/aks-flex-node/journal.json")).unwrap();
    assert!(journal.contains("arcMachine"));
}

fn arc_plan_kinds(out: &Run) -> Vec<String> {
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ArcInstall")
        .unwrap()["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap_or("").to_string())
        .collect()
}

fn roles_of(w: &World, principal: &str) -> Vec<String> {
    let mut v: Vec<String> = w
        .emu
        .state()
        .role_assignments
        .iter()
        .filter(|r| r.principal_id == principal)
        .map(|r| r.role_guid.clone())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_roles_are_assigned_instead_of_the_defaults() {
    let mut w = world(Scenario::demo()).await;
    w.arc_extra = serde_json::json!({"roles": [
        "azure kubernetes service rbac reader",
        "4ABBCC35-E782-43D8-92C5-2D3F1BD2253F"
    ]});
    let out = run(&w, &["plan", "-o", "json"], scenario::DEMO_SP_SECRET);
    assert_eq!(out.code, 0, "{}", out.text());
    assert_eq!(
        arc_plan_kinds(&out),
        [
            "arcConnect",
            "assignRole",
            "assignRole",
            "waitRoles",
            "useClusterEndpoint"
        ]
    );
    let out = run(&w, &bootstrap_args(), scenario::DEMO_SP_SECRET);
    assert_eq!(out.code, 0, "{}", out.text());
    let p = w.principal().unwrap();
    assert_eq!(
        roles_of(&w, &p),
        [
            "4abbcc35-e782-43d8-92c5-2d3f1bd2253f",
            "7f6c6a51-bcf8-42ba-9220-52d62157d7db"
        ]
    );
    // Converged with the configured list; the defaults are not wanted.
    let from = w.emu.request_log().len();
    let out = run(&w, &bootstrap_args(), scenario::DEMO_SP_SECRET);
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(
        w.writes_since(from).is_empty(),
        "{:?}",
        w.writes_since(from)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_role_name_is_a_config_error_listing_the_allowed_names() {
    let mut w = world(Scenario::demo()).await;
    w.arc_extra = serde_json::json!({"roles": ["Reader", "Owner"]});
    let out = run(&w, &["plan", "-o", "json"], scenario::DEMO_SP_SECRET);
    let t = out.text();
    assert_ne!(out.code, 0, "{t}");
    assert!(
        t.contains("azure.arc.roles[1]")
            && t.contains("Owner")
            && t.contains("Azure Kubernetes Service RBAC Writer"),
        "{t}"
    );
    assert!(w.emu.request_log().is_empty());
}

/// A token for the demo service principal, as an administrator's `az` would hold.
async fn admin_token(w: &World) -> String {
    let u = w.emu.urls();
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            u.login,
            scenario::DEMO_TENANT_ID
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", scenario::DEMO_SP_CLIENT_ID),
            ("client_secret", scenario::DEMO_SP_SECRET),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_role_assignment_nothing_is_assigned_and_the_admin_commands_are_printed() {
    let mut w = world(Scenario::demo()).await;
    w.arc_extra = serde_json::json!({"autoRoleAssignment": false});
    let out = run(&w, &["plan", "-o", "json"], scenario::DEMO_SP_SECRET);
    assert_eq!(out.code, 0, "{}", out.text());
    assert_eq!(
        arc_plan_kinds(&out),
        ["arcConnect", "verifyRoles", "useClusterEndpoint"]
    );
    let t = bootstrap_fails_with(
        &w,
        scenario::DEMO_SP_SECRET,
        &[
            "autoRoleAssignment is false",
            "Reader",
            "Azure Kubernetes Service RBAC Cluster Admin",
            "Azure Kubernetes Service Cluster Admin Role",
            "az role assignment create --assignee-object-id",
            &format!("--scope {}", cluster_id()),
        ],
    )
    .await;
    let p = w.principal().expect("Arc connected before the check");
    assert!(t.contains(&p), "{t}");
    assert!(roles_of(&w, &p).is_empty());
    assert!(
        !w.emu
            .request_log()
            .iter()
            .any(|e| e.method == "PUT" && e.path.contains("roleAssignments")),
        "the agent wrote a role assignment"
    );

    // The administrator assigns the three roles (what the printed commands do); bootstrap then passes.
    let token = admin_token(&w).await;
    let http = reqwest::Client::new();
    for guid in [
        "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b",
        "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8",
    ] {
        let url = format!(
            "{}{}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
            w.emu.urls().arm,
            cluster_id(),
            uuid::Uuid::new_v4()
        );
        let r = http
            .put(url)
            .bearer_auth(&token)
            .json(&serde_json::json!({"properties": {
                "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{guid}", scenario::DEMO_SUBSCRIPTION_ID),
                "principalId": p, "principalType": "ServicePrincipal"}}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let out = run(&w, &bootstrap_args(), scenario::DEMO_SP_SECRET);
    assert_eq!(out.code, 0, "{}", out.text());
    let out = run(&w, &["plan", "-o", "json"], scenario::DEMO_SP_SECRET);
    assert!(arc_plan_kinds(&out).is_empty(), "{}", out.text());
    // Nothing role-related was journaled: unbootstrap would leave the administrator's assignments alone.
    let journal =
        std::fs::read_to_string(w.root().join("var/lib/aks-flex-node/journal.json")).unwrap();
    assert!(!journal.contains("roleAssignment"), "{journal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_resource_of_another_host_is_adopted_only_when_configured() {
    let mut w = world(Scenario::demo()).await;
    // Someone else's machine resource under this node's name.
    let token = admin_token(&w).await;
    let url = format!(
        "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.HybridCompute/machines/{}?api-version=2022-03-10",
        w.emu.urls().arm,
        scenario::DEMO_SUBSCRIPTION_ID,
        scenario::DEMO_RESOURCE_GROUP,
        w.host
    );
    let r = reqwest::Client::new()
        .put(url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"location": "eastus", "identity": {"type": "SystemAssigned"}, "properties": {}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let t = bootstrap_fails_with(
        &w,
        scenario::DEMO_SP_SECRET,
        &["already exists", "azure.arc.adoptExisting=true"],
    )
    .await;
    assert!(!t.contains("AKS_FLEX_NODE_ARC_ADOPT"), "{t}");
    assert!(w
        .writes_since(0)
        .iter()
        .all(|l| !l.contains("roleAssignments")));

    w.arc_extra = serde_json::json!({"adoptExisting": true});
    let out = run(&w, &bootstrap_args(), scenario::DEMO_SP_SECRET);
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(w
        .emu
        .state()
        .hosts
        .get(&w.host)
        .is_some_and(|h| h.connected));
    let p = w.principal().unwrap();
    assert_eq!(roles_of(&w, &p).len(), 3);
}
