//! Golden files: the generated JSON Schema and `config show` output for the full fixture.
//! Snapshots live in tests/fixtures/config/snapshots.

use aks_flex_node::config::{json_schema, load_file, LoadOptions};

use crate::support::{config_fixture, no_env};

macro_rules! golden {
    ($($t:tt)*) => {
        insta::with_settings!({ snapshot_path => "../fixtures/config/snapshots", prepend_module_to_snapshot => false }, { $($t)* })
    };
}

#[test]
fn json_schema_golden() {
    let schema = json_schema();
    golden!(insta::assert_json_snapshot!("json_schema", schema));
}

#[test]
fn redacted_full_config_golden() {
    let path = config_fixture("full.json");
    let opts = LoadOptions {
        hostname: "edge-host".into(),
        env: &no_env,
    };
    let loaded = load_file(&path, &opts).expect("full.json loads");
    let shown = loaded.config.redacted_json();
    let text = shown.to_string();
    assert!(!text.contains("s3cr3t"), "secret leaked: {text}");
    assert!(
        !format!("{:?}", loaded.config).contains("s3cr3t"),
        "secret leaked in Debug"
    );
    assert_eq!(
        shown["azure"]["servicePrincipal"]["clientSecret"],
        "<redacted>"
    );
    golden!(insta::assert_json_snapshot!("redacted_full_config", shown));
}

#[test]
fn redacted_newer_shape_golden() {
    let path = config_fixture("newer-shape.json");
    let opts = LoadOptions {
        hostname: "edge-host".into(),
        env: &no_env,
    };
    let shown = load_file(&path, &opts)
        .expect("loads")
        .config
        .redacted_json();
    golden!(insta::assert_json_snapshot!("redacted_newer_shape", shown));
}
