//! The "can I?" preflight: before the first write, ask ARM which actions the caller holds at each scope
//! (`GET {scope}/providers/Microsoft.Authorization/permissions`, api-version 2022-04-01) and report every
//! missing permission at once, instead of failing on the first 403 halfway through a bootstrap.
//!
//! Limits, stated in the error: the list cannot see ABAC conditions on an assignment (a conditioned Role
//! Based Access Control Administrator may still be refused for some roles) nor deny assignments; those
//! still surface as a 403 on the write itself, which `roles::assign` explains.

use crate::azure::arm::{api, ArmClient};
use crate::azure::Result;

/// One entry of the permissions list (one per role assignment covering the scope). `notActions` only
/// subtract from the `actions` of their own entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permission {
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
}

/// Something the run is about to do that needs `action` at `scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub action: String,
    pub scope: String,
    /// What it is for, in words ("assign Reader to the Arc identity").
    pub purpose: String,
}

/// Case-insensitive match of an action against a pattern where `*` matches any run of characters
/// (slashes included), as Azure RBAC does.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((c, rest)) => s
                .split_first()
                .is_some_and(|(d, srest)| c.eq_ignore_ascii_case(d) && go(rest, srest)),
        }
    }
    go(pattern.as_bytes(), action.as_bytes())
}

/// Whether any entry grants `action`.
pub fn allows(perms: &[Permission], action: &str) -> bool {
    perms.iter().any(|p| {
        p.actions.iter().any(|a| action_matches(a, action))
            && !p.not_actions.iter().any(|n| action_matches(n, action))
    })
}

/// The caller's permissions at `scope`.
pub async fn list(arm: &ArmClient, scope: &str) -> Result<Vec<Permission>> {
    let path = format!(
        "{}/providers/Microsoft.Authorization/permissions",
        scope.trim_end_matches('/')
    );
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(arm
        .list(&path, api::PERMISSIONS, None)
        .await?
        .iter()
        .map(|p| Permission {
            actions: strings(&p["actions"]),
            not_actions: strings(&p["notActions"]),
        })
        .collect())
}

/// The needs the caller does not meet, asking once per distinct scope. `Err` only when ARM could not
/// answer (callers then fall back to finding out on the write).
pub async fn missing(arm: &ArmClient, needs: &[Need]) -> Result<Vec<Need>> {
    let mut scopes: Vec<&str> = needs.iter().map(|n| n.scope.as_str()).collect();
    scopes.sort_unstable_by_key(|s| s.to_ascii_lowercase());
    scopes.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    let mut out = Vec::new();
    for scope in scopes {
        let perms = list(arm, scope).await?;
        out.extend(
            needs
                .iter()
                .filter(|n| n.scope.eq_ignore_ascii_case(scope) && !allows(&perms, &n.action))
                .cloned(),
        );
    }
    Ok(out)
}

/// The operator-facing report of `missing` (non-empty).
pub fn report(missing: &[Need]) -> String {
    let mut lines = vec![format!(
        "the identity running bootstrap lacks {} permission(s); nothing was changed (checked before the first write):",
        missing.len()
    )];
    for n in missing {
        lines.push(format!(
            "  - {} on {} (to {})",
            n.action, n.scope, n.purpose
        ));
    }
    if missing.iter().any(|n| {
        n.action
            .starts_with("Microsoft.Authorization/roleAssignments/")
    }) {
        lines.push(
            "  not allowed to assign roles on the cluster: an owner of the cluster must grant Owner, User Access Administrator or \
             Role Based Access Control Administrator on it, or set azure.arc.autoRoleAssignment=false and assign the roles themselves"
                .into(),
        );
    }
    if missing
        .iter()
        .any(|n| n.action.starts_with("Microsoft.HybridCompute/"))
    {
        lines.push(
            "  to register the Arc machine, grant Azure Connected Machine Onboarding on the resource group".into(),
        );
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(actions: &[&str], not: &[&str]) -> Permission {
        Permission {
            actions: actions.iter().map(|s| s.to_string()).collect(),
            not_actions: not.iter().map(|s| s.to_string()).collect(),
        }
    }

    const WRITE: &str = "Microsoft.Authorization/roleAssignments/write";

    #[test]
    fn wildcards_and_not_actions_follow_azure_rbac() {
        assert!(action_matches("*", WRITE));
        assert!(action_matches("microsoft.authorization/*", WRITE));
        assert!(action_matches("Microsoft.Authorization/*/Write", WRITE));
        assert!(!action_matches("*/read", WRITE));
        assert!(!action_matches(
            "Microsoft.Authorization/roleAssignments/read",
            WRITE
        ));
        // Owner, User Access Administrator.
        assert!(allows(&[p(&["*"], &[])], WRITE));
        assert!(allows(
            &[p(&["*/read", "Microsoft.Authorization/*"], &[])],
            WRITE
        ));
        // Contributor: everything but Microsoft.Authorization writes.
        let contributor = p(&["*"], &["Microsoft.Authorization/*/Write"]);
        assert!(!allows(std::slice::from_ref(&contributor), WRITE));
        assert!(allows(
            std::slice::from_ref(&contributor),
            "Microsoft.HybridCompute/machines/write"
        ));
        // A notAction of one assignment does not cancel another assignment's grant.
        assert!(allows(
            &[contributor, p(&["Microsoft.Authorization/*"], &[])],
            WRITE
        ));
        assert!(!allows(&[], WRITE));
    }

    #[test]
    fn report_names_every_missing_permission_and_the_fix() {
        let r = report(&[
            Need {
                action: WRITE.into(),
                scope: "/c".into(),
                purpose: "assign Reader to the Arc identity".into(),
            },
            Need {
                action: "Microsoft.HybridCompute/machines/write".into(),
                scope: "/rg".into(),
                purpose: "register the Arc machine".into(),
            },
        ]);
        assert!(r.contains("lacks 2 permission(s)"), "{r}");
        assert!(
            r.contains("- Microsoft.Authorization/roleAssignments/write on /c (to assign Reader")
        );
        assert!(
            r.contains("User Access Administrator")
                && r.contains("Azure Connected Machine Onboarding")
        );
    }
}
