//! Azure RBAC role assignments for the Arc machine's identity at the cluster scope.
//!
//! Assignment names are deterministic (UUID v5 of scope + principal + role), so a re-run PUTs to the same
//! name and a duplicate is recognised; creation retries `PrincipalNotFound` while a new identity
//! replicates, treats `RoleAssignmentExists` as success and fails at once on 403 naming the role, the scope
//! and who can grant it.

use std::time::Duration;

use serde_json::json;

use crate::azure::arm::{api, ArmClient};
use crate::azure::{AzureError, Result};
use crate::model::RoleSpec;

/// Namespace for assignment names (a fixed random UUID: changing it would orphan existing assignments).
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5d0c_93b5_6f0e_4c8e_9d49_2a1f_7f3e_b1c4);

/// The deterministic assignment name for (scope, principal, role). Case-insensitive in every input, as
/// ARM IDs are.
pub fn assignment_name(scope: &str, principal_id: &str, role_guid: &str) -> String {
    let key = format!(
        "{}|{}|{}",
        scope.trim_end_matches('/').to_ascii_lowercase(),
        principal_id.to_ascii_lowercase(),
        role_guid.to_ascii_lowercase()
    );
    uuid::Uuid::new_v5(&NAMESPACE, key.as_bytes()).to_string()
}

pub fn role_definition_id(subscription: &str, guid: &str) -> String {
    format!(
        "/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    )
}

/// The GUID at the end of a role definition ID (responses may drop the subscription prefix).
pub fn guid_of(role_definition_id: &str) -> String {
    role_definition_id
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

pub fn assignment_id(scope: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
        scope.trim_end_matches('/')
    )
}

/// An existing assignment of `role` to `principal` at exactly `scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub id: String,
    pub role_guid: String,
}

/// Assignments for `principal` visible at `scope` (exact scope, any role).
pub async fn list_for_principal(
    arm: &ArmClient,
    scope: &str,
    principal_id: &str,
) -> Result<Vec<Assignment>> {
    let path = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments",
        scope.trim_end_matches('/')
    );
    let filter = format!("principalId eq '{principal_id}'");
    let items = arm
        .list(&path, api::ROLE_ASSIGNMENTS, Some(&filter))
        .await?;
    Ok(items
        .iter()
        .filter(|a| {
            let p = &a["properties"];
            p["principalId"]
                .as_str()
                .is_some_and(|x| x.eq_ignore_ascii_case(principal_id))
                && p["scope"].as_str().is_none_or(|s| {
                    s.trim_end_matches('/')
                        .eq_ignore_ascii_case(scope.trim_end_matches('/'))
                })
        })
        .map(|a| Assignment {
            id: a["id"].as_str().unwrap_or("").to_string(),
            role_guid: guid_of(a["properties"]["roleDefinitionId"].as_str().unwrap_or("")),
        })
        .collect())
}

/// How creating one assignment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Created(String),
    /// An equal assignment existed already (under this or another name).
    Existed(String),
}

/// Retry knobs for `PrincipalNotFound`.
#[derive(Debug, Clone)]
pub struct PrincipalRetry {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for PrincipalRetry {
    fn default() -> Self {
        // The original: 5 attempts, 5/10/20/30 s. A little more patience: replication can take minutes.
        PrincipalRetry {
            attempts: 8,
            base: Duration::from_secs(5),
            max: Duration::from_secs(30),
        }
    }
}

/// Create the assignment of `role` to `principal` at `scope` under its deterministic name.
pub async fn assign(
    arm: &ArmClient,
    subscription: &str,
    scope: &str,
    principal_id: &str,
    role: &RoleSpec,
    retry: &PrincipalRetry,
) -> Result<Created> {
    let name = assignment_name(scope, principal_id, &role.guid);
    let id = assignment_id(scope, &name);
    let body = json!({"properties": {
        "roleDefinitionId": role_definition_id(subscription, &role.guid),
        "principalId": principal_id,
        "principalType": "ServicePrincipal",
    }});
    let mut attempt = 0;
    loop {
        attempt += 1;
        match arm.put(&id, api::ROLE_ASSIGNMENTS, &body).await {
            Ok(_) => return Ok(Created::Created(id)),
            Err(e) => match e.arm_code() {
                Some("RoleAssignmentExists") => {
                    return Ok(Created::Existed(existing_id(&e).unwrap_or(id)));
                }
                Some("PrincipalNotFound") if attempt < retry.attempts => {
                    let d = (retry.base * 2u32.saturating_pow(attempt - 1)).min(retry.max);
                    tracing::info!(role = %role.name, attempt, delay_s = d.as_secs_f32(), "the Arc identity is not visible to Azure RBAC yet (replication); retrying");
                    tokio::time::sleep(d).await;
                }
                Some("PrincipalNotFound") => {
                    return Err(AzureError::Other(format!(
                        "assigning {} to the Arc identity {principal_id} on {scope}: the identity was still unknown to Azure RBAC after {attempt} attempts \
                         (Entra ID replication delay). Re-run bootstrap in a few minutes",
                        role.name
                    )))
                }
                Some("AuthorizationFailed") | Some("Forbidden") | Some("LinkedAuthorizationFailed") => {
                    return Err(AzureError::Other(format!(
                        "not allowed to assign {} ({}) on {scope}: the identity running bootstrap needs Owner, User Access Administrator or \
                         Role Based Access Control Administrator on the cluster; ask an owner of the cluster to grant it, or pre-create the \
                         assignment for principal {principal_id} and re-run.\n  cause: {e}",
                        role.name, role.guid
                    )))
                }
                _ => return Err(e),
            },
        }
    }
}

/// `RoleAssignmentExists` messages carry the existing assignment's ID ("The ID of the existing role
/// assignment is <hex>.").
fn existing_id(e: &AzureError) -> Option<String> {
    let AzureError::Arm(a) = e else { return None };
    let tail = a.message.split("existing role assignment is").nth(1)?;
    let hex: String = tail
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
        .collect();
    (!hex.is_empty()).then_some(hex)
}

/// Roles of `roles` not assigned to `principal` at exactly `scope`.
pub async fn missing_roles<'r>(
    arm: &ArmClient,
    scope: &str,
    principal_id: &str,
    roles: &'r [RoleSpec],
) -> Result<Vec<&'r RoleSpec>> {
    let found = list_for_principal(arm, scope, principal_id).await?;
    Ok(roles
        .iter()
        .filter(|r| !found.iter().any(|a| a.role_guid == r.guid))
        .collect())
}

/// The `az` commands an administrator runs to assign `missing` to `principal` at `scope`.
pub fn admin_commands(scope: &str, principal_id: &str, missing: &[&RoleSpec]) -> String {
    missing
        .iter()
        .map(|r| {
            format!(
                "  az role assignment create --assignee-object-id {principal_id} --assignee-principal-type ServicePrincipal \\\n      --role {} --scope {scope}   # {}",
                r.guid, r.name
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Delete one assignment by ID; `Ok(false)` when it was already gone.
pub async fn delete(arm: &ArmClient, id: &str) -> Result<bool> {
    arm.delete(id, api::ROLE_ASSIGNMENTS).await
}

/// Poll until every role in `roles` is visible for `principal` at `scope`, or the deadline passes.
pub async fn wait_visible(
    arm: &ArmClient,
    scope: &str,
    principal_id: &str,
    roles: &[RoleSpec],
    timeout: Duration,
    interval: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let missing: Vec<&RoleSpec> = match list_for_principal(arm, scope, principal_id).await {
            Ok(found) => roles
                .iter()
                .filter(|r| !found.iter().any(|a| a.role_guid == r.guid))
                .collect(),
            Err(e) => {
                tracing::warn!("checking role assignments: {e}");
                roles.iter().collect()
            }
        };
        if missing.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let names: Vec<&str> = missing.iter().map(|r| r.name.as_str()).collect();
            return Err(AzureError::Timeout(format!(
                "role assignments for the Arc identity {principal_id} on {scope} were not visible after {timeout:?}: {}",
                names.join(", ")
            )));
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_case_insensitive() {
        let a = assignment_name(
            "/subscriptions/S/resourceGroups/RG/x",
            "P",
            "ACDD72A7-3385-48ef-bd42-f606fba81ae7",
        );
        let b = assignment_name(
            "/subscriptions/s/resourcegroups/rg/x/",
            "p",
            "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            assignment_name(
                "/subscriptions/s/resourcegroups/rg/x",
                "p",
                "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b"
            )
        );
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 5);
    }

    #[test]
    fn role_ids() {
        use crate::model::roles::default_roles;

        assert_eq!(guid_of("/providers/Microsoft.Authorization/roleDefinitions/ACDD72A7-3385-48ef-bd42-f606fba81ae7"), "acdd72a7-3385-48ef-bd42-f606fba81ae7");
        assert_eq!(default_roles().len(), 3);
        assert!(role_definition_id("s", "g").ends_with("/roleDefinitions/g"));
    }

    #[test]
    fn existing_assignment_id_is_read_from_the_conflict() {
        let e = AzureError::Arm(crate::azure::arm::ArmError {
            status: 409,
            code: "RoleAssignmentExists".into(),
            message: "The role assignment already exists. The ID of the existing role assignment is 0b1c2d3e4f.".into(),
            method: "PUT".into(),
            path: "/x".into(),
        });
        assert_eq!(existing_id(&e).as_deref(), Some("0b1c2d3e4f"));
    }
}
