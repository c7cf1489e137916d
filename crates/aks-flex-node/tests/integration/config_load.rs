//! Integration tests for loading the config: fixtures, legacy/new shapes, every broken variant
//! the issue lists, secrets and file modes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use aks_flex_node::config::{
    load_file, load_str, Cloud, CniMode, ConfigError, LoadOptions, Loaded, LogLevel, Problem,
    TaintEffect,
};
use serde_json::{json, Value};

use crate::support::{config_fixture, no_env};

const SUB: &str = "8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

fn opts() -> LoadOptions<'static> {
    LoadOptions {
        hostname: "edge-host".into(),
        env: &no_env,
    }
}

fn seed() -> Value {
    let text = std::fs::read_to_string(config_fixture("seed-example.json")).expect("fixture");
    serde_json::from_str(&text).expect("fixture json")
}

fn load(v: &Value) -> Result<Loaded, ConfigError> {
    load_str(&v.to_string(), "test.json", &opts())
}

fn ok(v: &Value) -> Loaded {
    match load(v) {
        Ok(l) => l,
        Err(e) => panic!("expected to load, got: {e}"),
    }
}

fn problems(v: &Value) -> Vec<Problem> {
    match load(v) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("expected Invalid, got {e}"),
        Ok(_) => panic!("expected problems, config loaded"),
    }
}

fn only_problem(v: &Value, field: &str) -> Problem {
    let ps = problems(v);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(ps[0].field, field, "{ps:#?}");
    ps[0].clone()
}

/// Sets a value at a dotted path (struct keys only), creating objects.
fn set(v: &mut Value, path: &str, new: Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        if cur.get(*p).is_none() {
            cur[*p] = json!({});
        }
        cur = &mut cur[*p];
    }
    cur[parts[parts.len() - 1]] = new;
}

fn remove(v: &mut Value, path: &str) {
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = v;
    for p in &parts[..parts.len() - 1] {
        cur = &mut cur[*p];
    }
    cur.as_object_mut()
        .expect("object")
        .remove(parts[parts.len() - 1]);
}

#[test]
fn seed_readme_example_loads_with_original_defaults() {
    let l = ok(&seed());
    let c = &l.config;
    assert_eq!(c.azure.subscription_id, SUB);
    assert_eq!(c.azure.tenant_id, TENANT);
    assert_eq!(c.azure.cloud, Cloud::AzurePublicCloud);
    assert!(c.azure.service_principal.is_none());
    assert_eq!(c.azure.target_cluster.name, "flex-cluster");
    assert_eq!(c.azure.target_cluster.resource_group, "flex-rg");
    assert_eq!(c.azure.target_cluster.subscription_id, SUB);
    assert_eq!(c.azure.arc.machine_name, "edge-node-01");
    assert!(c.azure.arc.auto_role_assignment);
    assert_eq!(c.azure.arc.tags["node-type"], "worker");
    assert_eq!(c.agent.log_level, LogLevel::Info);
    assert_eq!(c.agent.node_name, "edge-host");
    assert_eq!(c.kubernetes.version, "1.30.4");
    assert_eq!(c.containerd.version, "1.7.20");
    assert_eq!(
        c.containerd.pause_image,
        "mcr.microsoft.com/oss/kubernetes/pause:3.6"
    );
    assert_eq!(c.containerd.metrics_address, "127.0.0.1:1338");
    assert_eq!(c.runc.version, "1.1.12");
    assert_eq!(c.cni.version, "1.5.1");
    assert_eq!(c.cni.mode, CniMode::Bridge);
    assert_eq!(c.npd.version, "v1.35.1");
    assert!(c.npd.enabled);
    assert!(!c.npd.enabled_explicitly);
    assert_eq!(c.node.max_pods, 110);
    assert_eq!(c.node.kubelet.verbosity, 2);
    assert_eq!(c.node.kubelet.image_gc_high_threshold, 85);
    assert_eq!(c.node.kubelet.image_gc_low_threshold, 80);
    assert_eq!(
        c.paths.kubernetes.kubelet_dir,
        Path::new("/var/lib/kubelet")
    );
    assert_eq!(
        c.paths.kubernetes.volume_plugin_dir,
        Path::new("/etc/kubernetes/volumeplugins")
    );
    assert_eq!(c.agent.log_dir, Path::new("/var/log/aks-flex-node"));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn arc_defaults_come_from_cluster_and_hostname() {
    let mut v = seed();
    remove(&mut v, "azure.arc");
    let c = ok(&v).config;
    assert!(c.azure.arc.enabled);
    assert_eq!(c.azure.arc.machine_name, "edge-host");
    assert_eq!(c.azure.arc.resource_group, "flex-rg");
    assert_eq!(c.azure.arc.location, "westus");
}

#[test]
fn full_fixture_loads_every_field() {
    let l = load_file(&config_fixture("full.json"), &opts()).expect("full.json loads");
    let c = l.config;
    let sp = c.azure.service_principal.expect("sp");
    assert_eq!(
        sp.client_secret.expose(),
        "s3cr3t-value-that-must-never-print"
    );
    assert_eq!(c.kubernetes.version, "1.30.4");
    assert_eq!(c.npd.version, "v1.35.1");
    assert_eq!(c.agent.log_level, LogLevel::Debug);
    assert_eq!(c.azure.arc.location, "eastus");
    assert_eq!(c.node.taints[0].effect, TaintEffect::NoSchedule);
    assert_eq!(c.node.labels["Environment"], "Edge");
    assert_eq!(c.azure.arc.tags["Cost.Center"], "R&D");
    assert_eq!(c.networking.pod_cidr.as_deref(), Some("10.244.1.0/24"));
    assert_eq!(
        c.bootstrap.offline_artifacts.as_deref(),
        Some("/opt/aks-flex-node/bundle")
    );
}

#[test]
fn newer_shape_maps_onto_the_same_model() {
    let l = load_file(&config_fixture("newer-shape.json"), &opts()).expect("newer-shape loads");
    let c = l.config;
    assert_eq!(c.azure.subscription_id, SUB, "derived from the resource ID");
    assert_eq!(c.kubernetes.version, "1.31.2");
    assert_eq!(c.containerd.version, "1.7.22");
    assert_eq!(c.runc.version, "1.1.14");
    assert_eq!(
        c.containerd.pause_image,
        "mcr.microsoft.com/oss/kubernetes/pause:3.9"
    );
    assert_eq!(
        c.node.kubelet.server_url.as_deref(),
        Some("https://flex-cluster-dns-12345678.hcp.westus.azmk8s.io:443")
    );
    assert_eq!(
        c.azure.managed_identity.expect("mi").client_id.as_deref(),
        Some("9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a")
    );
    assert!(!c.azure.arc.enabled);
    assert_eq!(c.node.taints[0].key, "kubernetes.azure.com/flex");
    assert_eq!(
        c.azure.target_agent_pool_name.as_deref(),
        Some("aksflexnodes")
    );
}

#[test]
fn missing_target_cluster_is_an_error_not_a_crash() {
    let mut v = seed();
    remove(&mut v, "azure.targetCluster");
    let p = only_problem(&v, "azure.targetCluster");
    assert!(p.expected.contains("resourceId"), "{p}");
}

#[test]
fn bad_resource_id_is_reported_with_value_and_format() {
    let mut v = seed();
    set(
        &mut v,
        "azure.targetCluster.resourceId",
        json!("/subscriptions/x/rg"),
    );
    let p = only_problem(&v, "azure.targetCluster.resourceId");
    assert_eq!(
        p.to_string(),
        "azure.targetCluster.resourceId: \"/subscriptions/x/rg\" is not an AKS cluster resource ID; expected /subscriptions/<guid>/resourceGroups/<rg>/providers/Microsoft.ContainerService/managedClusters/<name>"
    );
}

#[test]
fn lowercase_resourcegroups_is_accepted() {
    let mut v = seed();
    set(
        &mut v,
        "azure.targetCluster.resourceId",
        json!(format!("/subscriptions/{SUB}/resourcegroups/flex-rg/providers/microsoft.containerservice/managedclusters/flex-cluster")),
    );
    let c = ok(&v).config;
    assert_eq!(c.azure.target_cluster.resource_group, "flex-rg");
}

#[test]
fn bad_cloud_lists_allowed_values_and_cloud_is_case_insensitive() {
    let mut v = seed();
    set(&mut v, "azure.cloud", json!("AzureMoonCloud"));
    let p = only_problem(&v, "azure.cloud");
    assert!(
        p.expected
            .contains("AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud"),
        "{p}"
    );
    set(&mut v, "azure.cloud", json!("azureusgovernmentcloud"));
    assert_eq!(ok(&v).config.azure.cloud, Cloud::AzureUSGovernmentCloud);
}

#[test]
fn log_level_is_case_insensitive_and_bad_values_list_allowed() {
    let mut v = seed();
    for (given, want) in [
        ("DEBUG", LogLevel::Debug),
        ("  info ", LogLevel::Info),
        ("warn", LogLevel::Warning),
        ("Error", LogLevel::Error),
    ] {
        set(&mut v, "agent.logLevel", json!(given));
        assert_eq!(ok(&v).config.agent.log_level, want, "{given}");
    }
    set(&mut v, "agent.logLevel", json!("verbose"));
    let p = only_problem(&v, "agent.logLevel");
    assert!(p.to_string().contains("\"verbose\""));
    assert!(
        p.expected.contains("debug, info, warning (or warn), error"),
        "{p}"
    );
}

#[test]
fn partial_kubernetes_version_is_rejected_with_a_hint() {
    let mut v = seed();
    set(&mut v, "kubernetes.version", json!("1.30"));
    let p = only_problem(&v, "kubernetes.version");
    assert!(p.expected.contains("patch"), "{p}");
    set(&mut v, "kubernetes.version", json!("v1.30.2"));
    assert_eq!(ok(&v).config.kubernetes.version, "1.30.2");
    remove(&mut v, "kubernetes.version");
    only_problem(&v, "kubernetes.version");
}

#[test]
fn dotted_label_keys_and_eviction_keys_are_preserved() {
    let mut v = seed();
    set(
        &mut v,
        "node.labels",
        json!({"kubernetes.azure.com/role": "agent", "Team": "Edge"}),
    );
    set(
        &mut v,
        "node.kubelet.evictionHard",
        json!({"memory.available": "100Mi", "nodefs.available": "10%"}),
    );
    set(&mut v, "node.kubelet.kubeReserved", json!({"CPU": "100m"}));
    let c = ok(&v).config;
    assert_eq!(c.node.labels["kubernetes.azure.com/role"], "agent");
    assert_eq!(c.node.labels["Team"], "Edge");
    assert_eq!(c.node.kubelet.eviction_hard["memory.available"], "100Mi");
    assert_eq!(c.node.kubelet.eviction_hard["nodefs.available"], "10%");
    assert_eq!(c.node.kubelet.kube_reserved["CPU"], "100m");
}

#[test]
fn invalid_label_key_is_reported_with_quoted_path() {
    let mut v = seed();
    set(&mut v, "node.labels", json!({"bad key": "x"}));
    let p = only_problem(&v, "node.labels[\"bad key\"]");
    assert!(p.expected.contains("label key"), "{p}");
}

#[test]
fn service_principal_without_tenant_uses_azure_tenant() {
    let mut v = seed();
    set(
        &mut v,
        "azure.servicePrincipal",
        json!({"clientId": "3f2a1c44-5b6d-4e7f-8a9b-0c1d2e3f4a5b", "clientSecret": "abc"}),
    );
    let sp = ok(&v)
        .config
        .azure
        .service_principal
        .expect("sp auth, not CLI");
    assert_eq!(sp.tenant_id, TENANT);
    assert_eq!(sp.client_secret.expose(), "abc");
}

#[test]
fn client_secret_file_is_read_and_loose_mode_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("sp-secret");
    std::fs::write(&secret, "from-file\n").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut v = seed();
    set(
        &mut v,
        "azure.servicePrincipal",
        json!({"clientId": "3f2a1c44-5b6d-4e7f-8a9b-0c1d2e3f4a5b", "clientSecretFile": secret}),
    );
    let l = ok(&v);
    assert_eq!(
        l.config
            .azure
            .service_principal
            .expect("sp")
            .client_secret
            .expose(),
        "from-file"
    );
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let l = ok(&v);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("0644") && w.contains("chmod 600")),
        "{:?}",
        l.warnings
    );
    assert!(!l.warnings.iter().any(|w| w.contains("from-file")));

    set(
        &mut v,
        "azure.servicePrincipal.clientSecretFile",
        json!(dir.path().join("missing")),
    );
    let p = only_problem(&v, "azure.servicePrincipal.clientSecretFile");
    assert!(p.expected.contains("cannot be read"), "{p}");
}

#[test]
fn client_secret_from_environment_and_exactly_one_source() {
    fn env(k: &str) -> Option<String> {
        (k == "AZURE_CLIENT_SECRET").then(|| "from-env".to_string())
    }
    let o = LoadOptions {
        hostname: "h".into(),
        env: &env,
    };
    let mut v = seed();
    set(
        &mut v,
        "azure.servicePrincipal",
        json!({"clientId": "3f2a1c44-5b6d-4e7f-8a9b-0c1d2e3f4a5b"}),
    );
    let c = load_str(&v.to_string(), "t", &o).expect("loads").config;
    assert_eq!(
        c.azure
            .service_principal
            .expect("sp")
            .client_secret
            .expose(),
        "from-env"
    );

    set(
        &mut v,
        "azure.servicePrincipal.clientSecret",
        json!("inline-secret-xyz"),
    );
    let err = load_str(&v.to_string(), "t", &o).expect_err("two sources");
    let text = err.to_string();
    assert!(text.contains("more than one source"), "{text}");
    assert!(
        !text.contains("inline-secret-xyz") && !text.contains("from-env"),
        "{text}"
    );

    remove(&mut v, "azure.servicePrincipal.clientSecret");
    let p = only_problem(&v, "azure.servicePrincipal.clientSecret"); // no env in opts()
    assert!(p.expected.contains("AZURE_CLIENT_SECRET"), "{p}");
}

#[test]
fn config_file_with_secret_readable_by_others_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    let mut v = seed();
    set(
        &mut v,
        "azure.servicePrincipal",
        json!({"clientId": "3f2a1c44-5b6d-4e7f-8a9b-0c1d2e3f4a5b", "clientSecret": "abc"}),
    );
    std::fs::write(&path, v.to_string()).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let l = load_file(&path, &opts()).expect("loads");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("holds a secret") && w.contains("0644")),
        "{:?}",
        l.warnings
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(load_file(&path, &opts())
        .expect("loads")
        .warnings
        .is_empty());
    // No secret in the file: a world-readable file is fine.
    std::fs::write(&path, seed().to_string()).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(load_file(&path, &opts())
        .expect("loads")
        .warnings
        .is_empty());
}

#[test]
fn unreadable_file_names_the_path() {
    let err =
        load_file(Path::new("/nonexistent/aks-flex-node.json"), &opts()).expect_err("missing");
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("cannot read config file /nonexistent/aks-flex-node.json: "),
        "{err}"
    );
}

#[test]
fn unknown_key_warns_with_nearest_known_key() {
    let mut v = seed();
    set(&mut v, "azure.subscriptionIdd", json!("x"));
    set(&mut v, "agent.logLevl", json!("info"));
    let l = ok(&v);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("`azure.subscriptionIdd`")
                && w.contains("did you mean `azure.subscriptionId`")),
        "{:?}",
        l.warnings
    );
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("did you mean `agent.logLevel`")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn keys_match_case_insensitively() {
    let v = json!({
        "Azure": {
            "SubscriptionID": SUB,
            "TENANTID": TENANT,
            "targetcluster": {
                "ResourceId": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c"),
                "LOCATION": "westus"
            }
        },
        "Kubernetes": {"Version": "1.30.1"},
        "node": {"kubelet": {"ServerUrl": "https://api.example.com", "ImageGcHighThreshold": 90}}
    });
    let l = ok(&v);
    assert_eq!(l.config.azure.subscription_id, SUB);
    assert_eq!(l.config.kubernetes.version, "1.30.1");
    assert_eq!(l.config.node.kubelet.image_gc_high_threshold, 90);
    assert_eq!(
        l.config.node.kubelet.server_url.as_deref(),
        Some("https://api.example.com")
    );
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn same_key_twice_in_different_case_is_an_error() {
    let mut v = seed();
    set(&mut v, "azure.SubscriptionID", json!(SUB));
    let p = only_problem(&v, "azure.subscriptionId");
    assert!(p.expected.contains("given twice"), "{p}");
}

#[test]
fn conflicting_old_and_new_keys_name_both_paths() {
    let mut v = seed();
    set(&mut v, "components.kubernetes.version", json!("1.31.0"));
    let p = only_problem(&v, "kubernetes.version");
    assert!(p.expected.contains("components.kubernetes.version"), "{p}");
    // The same value in both is fine (v prefix ignored).
    set(&mut v, "components.kubernetes.version", json!("v1.30.4"));
    ok(&v);

    let mut v = seed();
    set(&mut v, "cni.version", json!("1.5.1"));
    set(&mut v, "networking.cniVersion", json!("1.6.0"));
    only_problem(&v, "cni.version");

    let mut v = seed();
    set(
        &mut v,
        "node.kubelet.serverURL",
        json!("https://a.example.com"),
    );
    set(&mut v, "node.kubelet.clusterFQDN", json!("b.example.com"));
    only_problem(&v, "node.kubelet.serverURL");
    set(&mut v, "node.kubelet.clusterFQDN", json!("A.example.com"));
    ok(&v);
}

#[test]
fn json_syntax_error_gives_line_and_column() {
    let text = "{\n  \"azure\": {\n    \"tenantId\": \"x\",\n  }\n}";
    match load_str(text, "/etc/aks-flex-node/config.json", &opts()) {
        Err(ConfigError::Syntax {
            origin,
            line,
            column,
            message,
        }) => {
            assert_eq!(origin, "/etc/aks-flex-node/config.json");
            assert_eq!((line, column), (4, 3));
            assert!(!message.contains("line"), "{message}");
        }
        other => panic!("expected syntax error, got {other:?}"),
    }
}

#[test]
fn several_problems_are_reported_at_once() {
    let mut v = seed();
    set(&mut v, "azure.tenantId", json!("your-tenant-id"));
    set(&mut v, "azure.cloud", json!("Mars"));
    set(&mut v, "agent.logLevel", json!("loud"));
    set(&mut v, "kubernetes.version", json!("1.30"));
    set(&mut v, "node.maxPods", json!(1000));
    set(&mut v, "node.kubelet.verbosity", json!("high"));
    set(&mut v, "node.taints", json!(["nope"]));
    let err = load(&v).expect_err("invalid");
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let mut fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "agent.logLevel",
            "azure.cloud",
            "azure.tenantId",
            "kubernetes.version",
            "node.kubelet.verbosity",
            "node.maxPods",
            "node.taints[0]"
        ]
    );
    let text = err.to_string();
    assert!(
        text.starts_with("test.json: 7 problems in the configuration:"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 8, "{text}");
}

#[test]
fn sp_and_managed_identity_together_is_an_error() {
    let mut v = seed();
    set(
        &mut v,
        "azure.servicePrincipal",
        json!({"clientId": "3f2a1c44-5b6d-4e7f-8a9b-0c1d2e3f4a5b", "clientSecret": "abc"}),
    );
    set(&mut v, "azure.managedIdentity", json!({}));
    let p = only_problem(&v, "azure.managedIdentity");
    assert!(p.expected.contains("at most one"), "{p}");
}

#[test]
fn bootstrap_token_is_refused_as_unsupported_without_echoing_it() {
    // Any bootstrapToken, well-formed or not, is an error: the join does not use it.
    for token in [
        json!("abcdef.0123456789abcdef"),
        json!("NOTATOKEN-secretish"),
        json!(12345),
    ] {
        let mut v = seed();
        set(&mut v, "azure.bootstrapToken.token", token);
        let ps = problems(&v);
        let p = ps
            .iter()
            .find(|p| p.field == "azure.bootstrapToken")
            .expect("bootstrapToken problem");
        assert_eq!(p.value, None);
        assert!(p.expected.contains("not supported yet"), "{p}");
        assert!(p.expected.contains("azure.servicePrincipal"), "{p}");
        assert!(p.expected.contains("managed identity"), "{p}");
        let all = load(&v).expect_err("refused").to_string();
        assert!(
            !all.contains("0123456789abcdef") && !all.contains("NOTATOKEN"),
            "{all}"
        );
    }
    // The newer shape's file with a token loads only without it.
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(config_fixture("newer-shape.json")).unwrap())
            .unwrap();
    set(
        &mut v,
        "azure.bootstrapToken",
        json!({"token": "abcdef.0123456789abcdef"}),
    );
    only_problem(&v, "azure.bootstrapToken");
}

#[test]
fn node_name_is_normalised_with_a_warning() {
    let mut v = seed();
    set(&mut v, "agent.nodeName", json!("Edge_Node01"));
    let l = ok(&v);
    assert_eq!(l.config.agent.node_name, "edge-node01");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("\"Edge_Node01\"") && w.contains("\"edge-node01\"")),
        "{:?}",
        l.warnings
    );
    let o = LoadOptions {
        hostname: "MyHost".into(),
        env: &no_env,
    };
    let l = load_str(&seed().to_string(), "t", &o).expect("loads");
    assert_eq!(l.config.agent.node_name, "myhost");
    assert_eq!(l.warnings.len(), 1);
}

#[test]
fn wrong_json_types_are_problems() {
    let mut v = seed();
    set(&mut v, "node.maxPods", json!("110"));
    set(&mut v, "azure.arc.tags", json!(["a"]));
    set(&mut v, "node.kubelet.imageGCHighThreshold", json!(-5));
    let ps = problems(&v);
    assert_eq!(ps.len(), 3, "{ps:#?}");
    assert!(ps
        .iter()
        .any(|p| p.field == "node.maxPods" && p.expected.contains("a whole number")));
    assert!(ps
        .iter()
        .any(|p| p.field == "azure.arc.tags" && p.value.as_deref() == Some("[\"a\"]")));
}

#[test]
fn runc_url_and_newer_unsupported_keys_warn() {
    let mut v = seed();
    set(&mut v, "runc.url", json!("https://example.com/runc"));
    set(
        &mut v,
        "hostRouting",
        json!({"staticRoutes": {"enabled": true}}),
    );
    let l = ok(&v);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("`runc.url` is ignored")),
        "{:?}",
        l.warnings
    );
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("`hostRouting` is ignored")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn image_gc_low_must_be_below_high_and_verbosity_zero_means_two() {
    let mut v = seed();
    set(&mut v, "node.kubelet.verbosity", json!(0));
    assert_eq!(ok(&v).config.node.kubelet.verbosity, 2);
    set(&mut v, "node.kubelet.imageGCLowThreshold", json!(90));
    only_problem(&v, "node.kubelet.imageGCLowThreshold");
}

#[test]
fn subscription_is_derived_from_resource_id_when_absent() {
    let mut v = seed();
    remove(&mut v, "azure.subscriptionId");
    assert_eq!(ok(&v).config.azure.subscription_id, SUB);
}

#[test]
fn npd_version_gets_v_and_server_url_must_be_https() {
    let mut v = seed();
    set(&mut v, "npd.version", json!("1.34.0"));
    assert_eq!(ok(&v).config.npd.version, "v1.34.0");
    set(
        &mut v,
        "node.kubelet.serverURL",
        json!("http://api.example.com"),
    );
    only_problem(&v, "node.kubelet.serverURL");
}

#[test]
fn non_object_top_level_is_one_problem() {
    match load_str("[1, 2]", "cfg.json", &opts()) {
        Err(ConfigError::Invalid { problems, .. }) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(
                problems[0].to_string(),
                "(top level): [1,2] is not a JSON object; expected { \"azure\": {...}, ... }"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn arc_roles_default_to_the_original_three_and_accept_names_or_guids() {
    let c = ok(&seed()).config;
    let guids: Vec<&str> = c.azure.arc.roles.iter().map(|r| r.guid.as_str()).collect();
    assert_eq!(
        guids,
        [
            "acdd72a7-3385-48ef-bd42-f606fba81ae7",
            "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b",
            "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8"
        ]
    );
    let mut v = seed();
    set(
        &mut v,
        "azure.arc.roles",
        json!([
            "AZURE KUBERNETES SERVICE RBAC READER",
            "9F8A6B2C-0D1E-4F3A-8B5C-6D7E8F9A0B1C"
        ]),
    );
    let c = ok(&v).config;
    assert_eq!(
        c.azure.arc.roles[0].name,
        "Azure Kubernetes Service RBAC Reader"
    );
    assert_eq!(
        c.azure.arc.roles[1].guid,
        "9f8a6b2c-0d1e-4f3a-8b5c-6d7e8f9a0b1c"
    );
    set(&mut v, "azure.arc.roles", json!([]));
    assert!(ok(&v).config.azure.arc.roles.is_empty());
}

#[test]
fn bad_arc_roles_are_named_with_the_allowed_names() {
    let mut v = seed();
    set(
        &mut v,
        "azure.arc.roles",
        json!(["Reader", "Owner", "reader", "not-a-guid"]),
    );
    let ps = problems(&v);
    assert_eq!(ps.len(), 3, "{ps:#?}");
    assert_eq!(ps[0].field, "azure.arc.roles[1]");
    assert!(ps[0]
        .expected
        .contains("\"Azure Kubernetes Service Cluster User Role\""));
    assert_eq!(ps[1].field, "azure.arc.roles[2]");
    assert!(ps[1].expected.contains("twice"));
    assert_eq!(ps[2].field, "azure.arc.roles[3]");
}

#[test]
fn azcmagent_path_must_be_absolute() {
    let mut v = seed();
    set(&mut v, "azure.arc.azcmagentPath", json!("bin/azcmagent"));
    let p = only_problem(&v, "azure.arc.azcmagentPath");
    assert!(p.expected.contains("absolute"), "{p:?}");
    set(
        &mut v,
        "azure.arc.azcmagentPath",
        json!("/usr/local/bin/azcmagent"),
    );
    set(&mut v, "azure.arc.adoptExisting", json!(true));
    let c = ok(&v).config;
    assert!(c.azure.arc.adopt_existing);
    assert_eq!(
        c.azure.arc.azcmagent_path.as_deref(),
        Some(Path::new("/usr/local/bin/azcmagent"))
    );
}

#[test]
fn metrics_address_defaults_off_kubernetes_ports_and_warns_on_one() {
    let l = ok(&seed());
    assert_eq!(l.config.containerd.metrics_address, "127.0.0.1:1338");
    let mut v = seed();
    set(
        &mut v,
        "containerd.metricsAddress",
        json!("127.0.0.1:10257"),
    );
    let l = ok(&v);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("10257") && w.contains("kube-controller-manager")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn kubeadm_is_not_installed_unless_asked() {
    let l = ok(&seed());
    assert!(!l.config.kubernetes.install_kubeadm);
    let mut v = seed();
    set(&mut v, "kubernetes.installKubeadm", json!(true));
    assert!(ok(&v).config.kubernetes.install_kubeadm);
    // A kubeadm pin without installKubeadm is pointless: said so.
    let mut v = seed();
    set(&mut v, "kubernetes.sha256.kubeadm", json!("a".repeat(64)));
    let l = ok(&v);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("kubernetes.installKubeadm")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn labels_the_kubelet_may_not_self_set_are_rejected_with_the_rule_and_the_fix() {
    let mut v = seed();
    set(
        &mut v,
        "node.labels",
        json!({"node-role.kubernetes.io/worker": "", "kubernetes.azure.com/agentpool": "flex",
               "node.kubernetes.io/exclude-from-external-load-balancers": "true",
               "topology.kubernetes.io/zone": "edge-1"}),
    );
    let p = only_problem(&v, "node.labels[\"node-role.kubernetes.io/worker\"]");
    assert_eq!(
        p.value.as_deref(),
        Some("\"node-role.kubernetes.io/worker\"")
    );
    for needle in [
        "NodeRestriction",
        "kubelet.kubernetes.io/",
        "node.kubernetes.io/",
        "kubectl label node",
        "another prefix",
    ] {
        assert!(p.expected.contains(needle), "{needle}: {p}");
    }
    let mut v = seed();
    set(&mut v, "node.labels", json!({"sigs.k8s.io/x": "y"}));
    only_problem(&v, "node.labels[\"sigs.k8s.io/x\"]");
}

#[test]
fn label_values_are_checked() {
    let mut v = seed();
    set(&mut v, "node.labels", json!({"team": "has space"}));
    let p = only_problem(&v, "node.labels[\"team\"]");
    assert!(p.expected.contains("label value"), "{p}");
    set(&mut v, "node.labels", json!({"team": "x".repeat(64)}));
    only_problem(&v, "node.labels[\"team\"]");
}

#[test]
fn bridge_pod_range_is_per_node_and_never_the_clusters_whole_range() {
    // Unset: a /24 outside AKS's default pod CIDR, derived from the node name, the same every time.
    let c = ok(&seed()).config;
    let r = c
        .networking
        .node_pod_range
        .clone()
        .expect("bridge mode has a range");
    assert!(
        r.cidr.starts_with("10.245.") && r.cidr.ends_with(".0/24"),
        "{r:?}"
    );
    assert!(r.source.contains("derived from the node name"), "{r:?}");
    assert_eq!(ok(&seed()).config.networking.node_pod_range, Some(r));
    assert_eq!(c.networking.cluster_pod_cidr, "10.244.0.0/16");

    // Set: used as given (host bits cleared), named as the source.
    let mut v = seed();
    set(&mut v, "networking.podCIDR", json!("10.250.3.9/24"));
    let r = ok(&v).config.networking.node_pod_range.unwrap();
    assert_eq!(
        (r.cidr.as_str(), r.source.as_str()),
        ("10.250.3.0/24", "networking.podCIDR")
    );

    // The cluster's whole pod CIDR (the original's default for every node), or a range containing it.
    for (cidr, what) in [
        ("10.244.0.0/16", "is the cluster's whole pod CIDR"),
        ("10.0.0.0/8", "contains the cluster's whole pod CIDR"),
    ] {
        let mut v = seed();
        set(&mut v, "networking.podCIDR", json!(cidr));
        let p = only_problem(&v, "networking.podCIDR");
        assert!(p.expected.contains(what), "{p}");
        assert!(p.expected.contains("leave it unset"), "{p}");
    }
    // Same check against a cluster CIDR given explicitly.
    let mut v = seed();
    set(&mut v, "networking.clusterPodCIDR", json!("10.250.0.0/16"));
    set(&mut v, "networking.podCIDR", json!("10.250.0.0/16"));
    only_problem(&v, "networking.podCIDR");

    // Inside the cluster's range: allowed, with a warning.
    let mut v = seed();
    set(&mut v, "networking.podCIDR", json!("10.244.7.0/24"));
    let l = ok(&v);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("inside the cluster's pod CIDR")),
        "{:?}",
        l.warnings
    );

    // A cluster CIDR covering the derived block: the user must choose.
    let mut v = seed();
    set(&mut v, "networking.clusterPodCIDR", json!("10.240.0.0/12"));
    let p = only_problem(&v, "networking.podCIDR");
    assert!(p.expected.contains("is unset"), "{p}");

    // Too small to hold pods.
    let mut v = seed();
    set(&mut v, "networking.podCIDR", json!("10.250.0.0/31"));
    only_problem(&v, "networking.podCIDR");

    // cni.mode none: no bridge range at all.
    let mut v = seed();
    set(&mut v, "cni.mode", json!("none"));
    set(&mut v, "networking.podCIDR", json!("10.244.0.0/16"));
    assert_eq!(ok(&v).config.networking.node_pod_range, None);

    let mut v = seed();
    set(&mut v, "networking.clusterPodCIDR", json!("nonsense"));
    only_problem(&v, "networking.clusterPodCIDR");
}
