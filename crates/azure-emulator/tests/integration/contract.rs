//! Contract tests: response shapes compared with the public Azure REST API spec examples in
//! `tests/fixtures/` — every key of the example must be present with the same JSON type
//! (example `null`s match anything; arrays compare their first elements when both are non-empty).

use reqwest::Method;
use serde_json::{json, Value};

use crate::{cluster_path, machine_path, start};

fn fixture(name: &str, status: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["responses"][status]["body"].clone()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn assert_shape(expected: &Value, actual: &Value, at: &str) {
    if expected.is_null() {
        return;
    }
    assert_eq!(
        kind(expected),
        kind(actual),
        "type mismatch at {at}: expected {expected}, got {actual}"
    );
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let av = a.get(k).unwrap_or_else(|| panic!("missing key {at}.{k}"));
                assert_shape(ev, av, &format!("{at}.{k}"));
            }
        }
        (Value::Array(e), Value::Array(a)) if !e.is_empty() && !a.is_empty() => {
            assert_shape(&e[0], &a[0], &format!("{at}[0]"))
        }
        _ => {}
    }
}

#[tokio::test]
async fn hybrid_compute_machine_matches_machines_get_example() {
    let h = start().await;
    h.connect_machine("contract").await;
    let (s, _, b) = h
        .arm(
            Method::GET,
            &format!("{}?api-version=2022-03-10", machine_path("contract")),
            Some(&h.sp_token().await),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_shape(&fixture("Machines_Get.2022-03-10.json", "200"), &b, "$");
}

#[tokio::test]
async fn managed_cluster_and_credentials_match_examples() {
    let h = start().await;
    let tok = h.owner_token().await;
    let (s, _, b) = h
        .arm(
            Method::GET,
            &format!("{}?api-version=2024-02-01", cluster_path()),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_shape(
        &fixture("ManagedClustersGet.2024-02-01.json", "200"),
        &b,
        "$",
    );
    let (s, _, b) = h
        .arm(
            Method::POST,
            &format!(
                "{}/listClusterUserCredential?api-version=2024-02-01",
                cluster_path()
            ),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_shape(
        &fixture(
            "ManagedClustersListClusterUserCredentials.2024-02-01.json",
            "200",
        ),
        &b,
        "$",
    );
}

#[tokio::test]
async fn role_assignments_match_create_get_delete_and_list_examples() {
    let h = start().await;
    let tok = h.sp_token().await;
    let principal = h.connect_machine("ra-contract").await;
    let name = uuid::Uuid::new_v4().to_string();
    let path = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version=2022-04-01",
        cluster_path()
    );
    let body = json!({"properties": {
        "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7", azure_emulator::scenario::DEMO_SUBSCRIPTION_ID),
        "principalId": principal, "principalType": "ServicePrincipal"}});
    let (s, _, created) = h.arm(Method::PUT, &path, Some(&tok), Some(body)).await;
    assert_eq!(s, 201);
    assert_shape(
        &fixture("RoleAssignments_CreateForResource.2022-04-01.json", "201"),
        &created,
        "$",
    );
    let (s, _, got) = h.arm(Method::GET, &path, Some(&tok), None).await;
    assert_eq!(s, 200);
    assert_shape(
        &fixture("RoleAssignments_Delete.2022-04-01.json", "200"),
        &got,
        "$",
    );
    let (s, _, list) = h
        .arm(
            Method::GET,
            &format!(
                "{}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01",
                cluster_path()
            ),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_shape(
        &fixture("RoleAssignments_ListForScope.2022-04-01.json", "200"),
        &list,
        "$",
    );
    let (s, _, deleted) = h.arm(Method::DELETE, &path, Some(&tok), None).await;
    assert_eq!(s, 200);
    assert_shape(
        &fixture("RoleAssignments_Delete.2022-04-01.json", "200"),
        &deleted,
        "$",
    );
}
