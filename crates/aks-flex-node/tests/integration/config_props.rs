//! Property tests: `load_str` never panics on arbitrary text or JSON, and mutated valid
//! configs only ever fail with well-formed problems.

use aks_flex_node::config::{load_str, ConfigError, LoadOptions};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::no_env;

fn opts() -> LoadOptions<'static> {
    LoadOptions {
        hostname: "Host_Name".into(),
        env: &no_env,
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,20}".prop_map(Value::String),
    ];
    // Keys drawn from real config key names (any case) plus noise, so the walker goes deep.
    let key = prop_oneof![
        prop::sample::select(vec![
            "azure",
            "agent",
            "kubernetes",
            "components",
            "node",
            "kubelet",
            "targetCluster",
            "resourceId",
            "servicePrincipal",
            "clientSecret",
            "labels",
            "taints",
            "version",
            "evictionHard",
            "arc",
            "tags",
            "networking",
            "bootstrapToken",
            "token",
            "NODE",
            "Azure",
        ])
        .prop_map(str::to_string),
        "[a-zA-Z.]{0,8}",
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check(result: Result<aks_flex_node::config::Loaded, ConfigError>) -> Result<(), TestCaseError> {
    if let Err(ConfigError::Invalid { problems, .. }) = result {
        prop_assert!(!problems.is_empty());
        for p in problems {
            prop_assert!(!p.field.is_empty());
            prop_assert!(!p.expected.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        let _ = load_str(&s, "fuzz", &opts());
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        check(load_str(&v.to_string(), "fuzz", &opts()))?;
    }

    #[test]
    fn arbitrary_json_under_a_valid_config_never_panics(v in arb_json(), section in prop::sample::select(vec!["azure", "agent", "node", "kubernetes", "components", "networking"])) {
        let mut base = json!({
            "azure": {"tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                      "targetCluster": {"resourceId": "/subscriptions/8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c", "location": "westus"}},
            "kubernetes": {"version": "1.30.4"}
        });
        base[section] = v;
        check(load_str(&base.to_string(), "fuzz", &opts()))?;
    }

    #[test]
    fn secrets_never_appear_in_errors(secret in "[A-Za-z0-9]{24}", junk in "\\PC{0,10}") {
        let v = json!({
            "azure": {"tenantId": junk, "servicePrincipal": {"clientSecret": secret, "clientId": junk},
                      "bootstrapToken": {"token": secret}},
            "kubernetes": {"version": junk}
        });
        if let Err(e) = load_str(&v.to_string(), "fuzz", &opts()) {
            prop_assert!(!e.to_string().contains(&secret));
            let dbg = format!("{e:?}");
            prop_assert!(!dbg.contains(&secret));
        }
    }
}
