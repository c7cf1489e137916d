//! Built-in Azure role definitions (by GUID, with their control-plane actions) and the pure
//! permission logic: which action a role grants, and which scopes an assignment covers.
//!
//! Actions and data actions follow the public built-in role definitions. Data actions matter for
//! the AKS RBAC roles: the emulated AKS authorization webhook (`crate::aks`) checks Kubernetes
//! requests against them (`Microsoft.ContainerService/managedClusters/<group>/<resource>/<verb>`).

/// A built-in role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleDefinition {
    /// Role GUID (the last segment of its id).
    pub guid: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Allowed control-plane actions (with `*` wildcards).
    pub actions: &'static [&'static str],
    /// Excluded actions.
    pub not_actions: &'static [&'static str],
    /// Allowed data actions (with `*` wildcards). `actions` never grant data actions, so Owner
    /// (`*`) grants no Kubernetes access through Azure RBAC.
    pub data_actions: &'static [&'static str],
    /// Excluded data actions.
    pub not_data_actions: &'static [&'static str],
}

const AKS_RBAC_COMMON: &[&str] = &[
    "Microsoft.Authorization/*/read",
    "Microsoft.Resources/subscriptions/operationresults/read",
    "Microsoft.Resources/subscriptions/read",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
];

const AKS_RBAC_ADMIN_NOT_DATA: &[&str] = &[
    "Microsoft.ContainerService/managedClusters/resourcequotas/write",
    "Microsoft.ContainerService/managedClusters/resourcequotas/delete",
    "Microsoft.ContainerService/managedClusters/namespaces/write",
    "Microsoft.ContainerService/managedClusters/namespaces/delete",
];

/// Namespaced reads only: no nodes, no secrets, no roles.
const AKS_RBAC_READER_DATA: &[&str] = &[
    "Microsoft.ContainerService/managedClusters/apps/controllerrevisions/read",
    "Microsoft.ContainerService/managedClusters/apps/daemonsets/read",
    "Microsoft.ContainerService/managedClusters/apps/deployments/read",
    "Microsoft.ContainerService/managedClusters/apps/replicasets/read",
    "Microsoft.ContainerService/managedClusters/apps/statefulsets/read",
    "Microsoft.ContainerService/managedClusters/autoscaling/horizontalpodautoscalers/read",
    "Microsoft.ContainerService/managedClusters/batch/cronjobs/read",
    "Microsoft.ContainerService/managedClusters/batch/jobs/read",
    "Microsoft.ContainerService/managedClusters/configmaps/read",
    "Microsoft.ContainerService/managedClusters/discovery.k8s.io/endpointslices/read",
    "Microsoft.ContainerService/managedClusters/endpoints/read",
    "Microsoft.ContainerService/managedClusters/events.k8s.io/events/read",
    "Microsoft.ContainerService/managedClusters/events/read",
    "Microsoft.ContainerService/managedClusters/extensions/daemonsets/read",
    "Microsoft.ContainerService/managedClusters/extensions/deployments/read",
    "Microsoft.ContainerService/managedClusters/extensions/ingresses/read",
    "Microsoft.ContainerService/managedClusters/extensions/networkpolicies/read",
    "Microsoft.ContainerService/managedClusters/extensions/replicasets/read",
    "Microsoft.ContainerService/managedClusters/limitranges/read",
    "Microsoft.ContainerService/managedClusters/metrics.k8s.io/pods/read",
    "Microsoft.ContainerService/managedClusters/metrics.k8s.io/nodes/read",
    "Microsoft.ContainerService/managedClusters/namespaces/read",
    "Microsoft.ContainerService/managedClusters/networking.k8s.io/ingresses/read",
    "Microsoft.ContainerService/managedClusters/networking.k8s.io/networkpolicies/read",
    "Microsoft.ContainerService/managedClusters/persistentvolumeclaims/read",
    "Microsoft.ContainerService/managedClusters/pods/read",
    "Microsoft.ContainerService/managedClusters/policy/poddisruptionbudgets/read",
    "Microsoft.ContainerService/managedClusters/replicationcontrollers/read",
    "Microsoft.ContainerService/managedClusters/resourcequotas/read",
    "Microsoft.ContainerService/managedClusters/serviceaccounts/read",
    "Microsoft.ContainerService/managedClusters/services/read",
];

const AKS_RBAC_WRITER_DATA: &[&str] = &[
    "Microsoft.ContainerService/managedClusters/apps/controllerrevisions/read",
    "Microsoft.ContainerService/managedClusters/apps/daemonsets/*",
    "Microsoft.ContainerService/managedClusters/apps/deployments/*",
    "Microsoft.ContainerService/managedClusters/apps/replicasets/*",
    "Microsoft.ContainerService/managedClusters/apps/statefulsets/*",
    "Microsoft.ContainerService/managedClusters/autoscaling/horizontalpodautoscalers/*",
    "Microsoft.ContainerService/managedClusters/batch/cronjobs/*",
    "Microsoft.ContainerService/managedClusters/coordination.k8s.io/leases/read",
    "Microsoft.ContainerService/managedClusters/coordination.k8s.io/leases/write",
    "Microsoft.ContainerService/managedClusters/coordination.k8s.io/leases/delete",
    "Microsoft.ContainerService/managedClusters/discovery.k8s.io/endpointslices/read",
    "Microsoft.ContainerService/managedClusters/batch/jobs/*",
    "Microsoft.ContainerService/managedClusters/configmaps/*",
    "Microsoft.ContainerService/managedClusters/endpoints/*",
    "Microsoft.ContainerService/managedClusters/events.k8s.io/events/read",
    "Microsoft.ContainerService/managedClusters/events/*",
    "Microsoft.ContainerService/managedClusters/extensions/daemonsets/*",
    "Microsoft.ContainerService/managedClusters/extensions/deployments/*",
    "Microsoft.ContainerService/managedClusters/extensions/ingresses/*",
    "Microsoft.ContainerService/managedClusters/extensions/networkpolicies/*",
    "Microsoft.ContainerService/managedClusters/extensions/replicasets/*",
    "Microsoft.ContainerService/managedClusters/limitranges/read",
    "Microsoft.ContainerService/managedClusters/metrics.k8s.io/pods/read",
    "Microsoft.ContainerService/managedClusters/metrics.k8s.io/nodes/read",
    "Microsoft.ContainerService/managedClusters/namespaces/read",
    "Microsoft.ContainerService/managedClusters/networking.k8s.io/ingresses/*",
    "Microsoft.ContainerService/managedClusters/networking.k8s.io/networkpolicies/*",
    "Microsoft.ContainerService/managedClusters/persistentvolumeclaims/*",
    "Microsoft.ContainerService/managedClusters/pods/*",
    "Microsoft.ContainerService/managedClusters/policy/poddisruptionbudgets/*",
    "Microsoft.ContainerService/managedClusters/replicationcontrollers/*",
    "Microsoft.ContainerService/managedClusters/resourcequotas/read",
    "Microsoft.ContainerService/managedClusters/secrets/*",
    "Microsoft.ContainerService/managedClusters/serviceaccounts/*",
    "Microsoft.ContainerService/managedClusters/services/*",
];

/// Every built-in role the emulator knows.
pub const BUILT_IN: &[RoleDefinition] = &[
    RoleDefinition {
        guid: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        name: "Owner",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "b24988ac-6180-42a0-ab88-20f7382dd24c",
        name: "Contributor",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        name: "Reader",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        name: "User Access Administrator",
        actions: &["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "b64e21ea-ac4e-4cdf-9dc9-5b892992bee7",
        name: "Azure Connected Machine Onboarding",
        actions: &[
            "Microsoft.HybridCompute/machines/read",
            "Microsoft.HybridCompute/machines/write",
            "Microsoft.HybridCompute/privateLinkScopes/read",
            "Microsoft.GuestConfiguration/guestConfigurationAssignments/read",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "cd570a14-e51a-42ad-bac8-bafd67325302",
        name: "Azure Connected Machine Resource Administrator",
        actions: &[
            "Microsoft.HybridCompute/machines/*",
            "Microsoft.HybridCompute/privateLinkScopes/*",
            "Microsoft.GuestConfiguration/guestConfigurationAssignments/read",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8",
        name: "Azure Kubernetes Service Cluster Admin Role",
        actions: &[
            "Microsoft.ContainerService/managedClusters/listClusterAdminCredential/action",
            "Microsoft.ContainerService/managedClusters/accessProfiles/listCredential/action",
            "Microsoft.ContainerService/managedClusters/read",
            "Microsoft.ContainerService/managedClusters/runcommand/action",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "4abbcc35-e782-43d8-92c5-2d3f1bd2253f",
        name: "Azure Kubernetes Service Cluster User Role",
        actions: &[
            "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
            "Microsoft.ContainerService/managedClusters/read",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b",
        name: "Azure Kubernetes Service RBAC Cluster Admin",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Resources/subscriptions/operationresults/read",
            "Microsoft.Resources/subscriptions/read",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.ContainerService/managedClusters/*"],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "3498e952-d568-435e-9b2c-8d77e338d7f7",
        name: "Azure Kubernetes Service RBAC Admin",
        actions: AKS_RBAC_COMMON,
        not_actions: &[],
        data_actions: &["Microsoft.ContainerService/managedClusters/*"],
        not_data_actions: AKS_RBAC_ADMIN_NOT_DATA,
    },
    RoleDefinition {
        guid: "7f6c6a51-bcf8-42ba-9220-52d62157d7db",
        name: "Azure Kubernetes Service RBAC Reader",
        actions: AKS_RBAC_COMMON,
        not_actions: &[],
        data_actions: AKS_RBAC_READER_DATA,
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "a7ffa36f-339b-4b5c-8bdf-e2c188b2c0eb",
        name: "Azure Kubernetes Service RBAC Writer",
        actions: AKS_RBAC_COMMON,
        not_actions: &[],
        data_actions: AKS_RBAC_WRITER_DATA,
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: "4d97b98b-1d4f-4787-a291-c67834d212e7",
        name: "Network Contributor",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Network/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
];

/// Resolve a role given as a built-in name (case-insensitive), a GUID, or a role definition id
/// (`/subscriptions/<s>/providers/Microsoft.Authorization/roleDefinitions/<guid>` or without the
/// subscription prefix). Role definitions compare by GUID only.
pub fn resolve(role: &str) -> Option<&'static RoleDefinition> {
    let role = role.trim();
    if let Some(r) = BUILT_IN.iter().find(|r| r.name.eq_ignore_ascii_case(role)) {
        return Some(r);
    }
    by_guid(guid_of(role))
}

/// Find a built-in role by GUID.
pub fn by_guid(guid: &str) -> Option<&'static RoleDefinition> {
    BUILT_IN.iter().find(|r| r.guid.eq_ignore_ascii_case(guid))
}

/// The GUID part of a role definition id (its last path segment).
pub fn guid_of(role_definition_id: &str) -> &str {
    role_definition_id
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(role_definition_id)
}

/// Case-insensitive match of an action against a pattern with `*` wildcards.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    wildcard(
        pattern.to_ascii_lowercase().as_bytes(),
        action.to_ascii_lowercase().as_bytes(),
    )
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    // Iterative glob match with backtracking to the last '*'.
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

impl RoleDefinition {
    /// Whether this role grants `action`.
    pub fn permits(&self, action: &str) -> bool {
        self.actions.iter().any(|a| action_matches(a, action))
            && !self.not_actions.iter().any(|a| action_matches(a, action))
    }

    /// Whether this role grants the data action `data_action` (only `data_actions` count).
    pub fn permits_data(&self, data_action: &str) -> bool {
        self.data_actions
            .iter()
            .any(|a| action_matches(a, data_action))
            && !self
                .not_data_actions
                .iter()
                .any(|a| action_matches(a, data_action))
    }

    /// The tenant-level role definition id (`/providers/Microsoft.Authorization/roleDefinitions/<guid>`).
    pub fn id(&self) -> String {
        format!(
            "/providers/Microsoft.Authorization/roleDefinitions/{}",
            self.guid
        )
    }
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase())
        .collect()
}

/// Whether an assignment at `assignment_scope` applies to `target` (same scope or a child of
/// it). Comparison is case-insensitive on whole path segments, so `/subscriptions/a/resourceGroups/rg`
/// covers `/subscriptions/a/resourcegroups/RG/providers/...` but not `/subscriptions/a/resourceGroups/rg2`.
pub fn scope_covers(assignment_scope: &str, target: &str) -> bool {
    let a = segments(assignment_scope);
    let t = segments(target);
    a.len() <= t.len() && a.iter().zip(&t).all(|(x, y)| x == y)
}

/// Whether two scopes are the same (case-insensitive, ignoring trailing slashes).
pub fn same_scope(a: &str, b: &str) -> bool {
    segments(a) == segments(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_guids_and_ids() {
        assert_eq!(resolve("reader").map(|r| r.name), Some("Reader"));
        assert_eq!(
            resolve("/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/18D7D88D-D35E-4FB5-A5C3-7773C20A72D9")
                .map(|r| r.name),
            Some("User Access Administrator")
        );
        assert!(resolve("00000000-0000-0000-0000-000000000000").is_none());
    }

    #[test]
    fn wildcards_and_not_actions() {
        let contributor = resolve("Contributor").unwrap();
        assert!(contributor.permits("Microsoft.HybridCompute/machines/write"));
        assert!(!contributor.permits("Microsoft.Authorization/roleAssignments/write"));
        let reader = resolve("Reader").unwrap();
        assert!(reader.permits("Microsoft.Authorization/roleAssignments/read"));
        assert!(!reader.permits("Microsoft.HybridCompute/machines/write"));
        let onboarding = resolve("Azure Connected Machine Onboarding").unwrap();
        assert!(onboarding.permits("microsoft.hybridcompute/MACHINES/write"));
        assert!(!onboarding.permits("Microsoft.HybridCompute/machines/delete"));
    }

    #[test]
    fn data_actions_are_separate_from_actions() {
        let nodes_write = "Microsoft.ContainerService/managedClusters/nodes/write";
        assert!(!resolve("Owner").unwrap().permits_data(nodes_write));
        assert!(resolve("Azure Kubernetes Service RBAC Cluster Admin")
            .unwrap()
            .permits_data(nodes_write));
        let admin = resolve("Azure Kubernetes Service RBAC Admin").unwrap();
        assert!(admin.permits_data(nodes_write));
        assert!(!admin.permits_data("Microsoft.ContainerService/managedClusters/namespaces/write"));
        let reader = resolve("Azure Kubernetes Service RBAC Reader").unwrap();
        assert!(
            reader.permits_data("Microsoft.ContainerService/managedClusters/apps/deployments/read")
        );
        assert!(!reader.permits_data("Microsoft.ContainerService/managedClusters/nodes/read"));
        let writer = resolve("Azure Kubernetes Service RBAC Writer").unwrap();
        assert!(writer.permits_data("Microsoft.ContainerService/managedClusters/pods/exec/action"));
        assert!(!writer.permits_data(nodes_write));
    }

    #[test]
    fn scope_inheritance_is_by_segment() {
        assert!(scope_covers("/", "/subscriptions/a"));
        assert!(scope_covers(
            "/subscriptions/A/resourceGroups/rg",
            "/subscriptions/a/resourcegroups/RG/providers/x/y/z"
        ));
        assert!(!scope_covers(
            "/subscriptions/a/resourceGroups/rg",
            "/subscriptions/a/resourceGroups/rg2"
        ));
        assert!(!scope_covers(
            "/subscriptions/a/resourceGroups/rg",
            "/subscriptions/a"
        ));
    }
}
