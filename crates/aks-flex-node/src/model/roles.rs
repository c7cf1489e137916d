//! The Azure RBAC roles a node's identity may be given: the built-in catalogue `azure.arc.roles` accepts by
//! name, the default set, and how a configured name or GUID resolves. Requests that assign them are in
//! `azure::roles`.

/// A role to assign, by built-in role definition GUID.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoleSpec {
    pub name: String,
    pub guid: String,
}

impl RoleSpec {
    pub fn new(name: &str, guid: &str) -> Self {
        RoleSpec {
            name: name.into(),
            guid: guid.to_ascii_lowercase(),
        }
    }
}

/// Built-in roles that may be named in `azure.arc.roles` (names compare case-insensitively). Any other
/// role (a custom role, or a built-in one not listed here) is given by its role-definition GUID.
///
/// Blast radius of what a node can do with each, on its cluster (the README has the long form):
/// - Reader: read the managed cluster resource in ARM (no Kubernetes access by itself).
/// - AKS Cluster User Role: `listClusterUserCredential` (a kubeconfig without credentials of its own).
/// - AKS Cluster Admin Role: `listClusterAdminCredential` too: a static cluster-admin kubeconfig unless
///   local accounts are disabled.
/// - AKS RBAC Reader / Writer / Admin / Cluster Admin: Kubernetes data-plane rights through Azure RBAC,
///   from read-only in namespaces up to cluster-admin everywhere.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("Reader", "acdd72a7-3385-48ef-bd42-f606fba81ae7"),
    (
        "Azure Kubernetes Service RBAC Cluster Admin",
        "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b",
    ),
    (
        "Azure Kubernetes Service Cluster Admin Role",
        "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8",
    ),
    (
        "Azure Kubernetes Service Cluster User Role",
        "4abbcc35-e782-43d8-92c5-2d3f1bd2253f",
    ),
    (
        "Azure Kubernetes Service RBAC Admin",
        "3498e952-d568-435e-9b2c-8d77e338d7f7",
    ),
    (
        "Azure Kubernetes Service RBAC Reader",
        "7f6c6a51-bcf8-42ba-9220-52d62157d7db",
    ),
    (
        "Azure Kubernetes Service RBAC Writer",
        "a7ffa36f-339b-4b5c-8bdf-e2c188b2c0eb",
    ),
];

/// The original's three roles (reference §4.3), the default of `azure.arc.roles`. Blast radius: together
/// they make every node's identity an administrator of the whole cluster (AKS RBAC Cluster Admin =
/// cluster-admin in Kubernetes; AKS Cluster Admin Role can fetch admin kubeconfigs). Operators who want
/// less configure `azure.arc.roles`.
pub const DEFAULT_ROLE_NAMES: [&str; 3] = [
    "Reader",
    "Azure Kubernetes Service RBAC Cluster Admin",
    "Azure Kubernetes Service Cluster Admin Role",
];

pub fn default_roles() -> Vec<RoleSpec> {
    DEFAULT_ROLE_NAMES
        .iter()
        .filter_map(|n| resolve(n).ok())
        .collect()
}

/// A role given by built-in name (any case) or role-definition GUID. A GUID of a listed built-in role
/// gets its name; any other GUID is kept as is (custom roles). The error lists the accepted names.
pub fn resolve(input: &str) -> Result<RoleSpec, String> {
    let s = input.trim();
    if let Some((n, g)) = BUILT_IN
        .iter()
        .find(|(n, g)| n.eq_ignore_ascii_case(s) || g.eq_ignore_ascii_case(s))
    {
        return Ok(RoleSpec::new(n, g));
    }
    match uuid::Uuid::try_parse(s) {
        Ok(u) if s.len() == 36 => Ok(RoleSpec::new(s, &u.to_string())),
        _ => Err(format!(
            "is neither a known built-in role name nor a role-definition GUID; expected one of {} \
             or a GUID like 00000000-0000-0000-0000-000000000000",
            BUILT_IN
                .iter()
                .map(|(n, _)| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_resolve_by_name_or_guid() {
        let r = resolve("reader").unwrap();
        assert_eq!(
            (r.name.as_str(), r.guid.as_str()),
            ("Reader", "acdd72a7-3385-48ef-bd42-f606fba81ae7")
        );
        let r = resolve(" B1FF04BB-8A4E-4DC4-8EB5-8693973CE19B ").unwrap();
        assert_eq!(r.name, "Azure Kubernetes Service RBAC Cluster Admin");
        let custom = resolve("11111111-2222-4333-8444-555555555555").unwrap();
        assert_eq!(custom.guid, "11111111-2222-4333-8444-555555555555");
        let e = resolve("Owner").unwrap_err();
        assert!(
            e.contains("\"Azure Kubernetes Service RBAC Reader\"") && e.contains("GUID"),
            "{e}"
        );
        assert!(resolve("11111111222243338444555555555555").is_err());
        assert_eq!(
            default_roles()
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            DEFAULT_ROLE_NAMES
        );
    }
}
