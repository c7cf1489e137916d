//! The scenario: the static world the emulator serves (tenants, subscriptions, resource groups,
//! service principals, users, AKS clusters), the role assignments it starts with, tunable
//! settings and faults. Owns parsing, validation and the built-in demo scenario.
//!
//! The file format is JSON with snake_case keys; the README documents it with an example.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::faults::FaultRule;
use crate::roles;

/// The Azure CLI's public client id; device code requests from it are accepted by default.
pub const AZURE_CLI_CLIENT_ID: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";

/// Demo tenant used by [`Scenario::demo`].
pub const DEMO_TENANT_ID: &str = "11111111-1111-4111-8111-111111111111";
/// Demo subscription used by [`Scenario::demo`].
pub const DEMO_SUBSCRIPTION_ID: &str = "22222222-2222-4222-8222-222222222222";
/// Demo resource group used by [`Scenario::demo`].
pub const DEMO_RESOURCE_GROUP: &str = "flexnode-demo-rg";
/// Demo service principal client (application) id.
pub const DEMO_SP_CLIENT_ID: &str = "33333333-3333-4333-8333-333333333333";
/// Demo service principal object id.
pub const DEMO_SP_OBJECT_ID: &str = "44444444-4444-4444-8444-444444444444";
/// Demo service principal secret. Documented on purpose: it only works against the emulator.
pub const DEMO_SP_SECRET: &str = "flexnode-demo-secret";
/// Demo user object id (device code flow).
pub const DEMO_USER_OBJECT_ID: &str = "55555555-5555-4555-8555-555555555555";
/// Demo AKS cluster name.
pub const DEMO_CLUSTER: &str = "flexnode-demo-aks";

const DEMO_CA_PEM: &str = include_str!("assets/demo-cluster-ca.pem");

/// A whole scenario file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Entra ID tenants.
    pub tenants: Vec<Tenant>,
    /// Subscriptions with their resource groups.
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
    /// Confidential clients that can use client_credentials.
    #[serde(default)]
    pub service_principals: Vec<ServicePrincipal>,
    /// Users that can approve device codes.
    #[serde(default)]
    pub users: Vec<User>,
    /// Client ids allowed to start a device code flow (besides service principals).
    #[serde(default = "default_public_clients")]
    pub public_clients: Vec<String>,
    /// AKS managed clusters.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// Role assignments present at start.
    #[serde(default)]
    pub role_assignments: Vec<SeedRoleAssignment>,
    /// Tunables.
    #[serde(default)]
    pub settings: Settings,
    /// Faults active from the start.
    #[serde(default)]
    pub faults: Vec<FaultRule>,
}

fn default_public_clients() -> Vec<String> {
    vec![AZURE_CLI_CLIENT_ID.to_string()]
}

/// An Entra ID tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Tenant id (GUID).
    pub id: String,
    /// Display name (informational).
    #[serde(default)]
    pub name: String,
}

/// A subscription.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Subscription id (GUID).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Resource groups in it.
    #[serde(default)]
    pub resource_groups: Vec<ResourceGroup>,
}

/// A resource group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceGroup {
    /// Name (compared case-insensitively, as ARM does).
    pub name: String,
    /// Region.
    #[serde(default = "default_location")]
    pub location: String,
}

fn default_location() -> String {
    "eastus".to_string()
}

/// A service principal (app registration + enterprise app) with one client secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServicePrincipal {
    /// Tenant it lives in.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
    /// Object id of the service principal (what role assignments name).
    pub object_id: String,
    /// Client secret.
    pub secret: String,
    /// Display name (informational).
    #[serde(default)]
    pub display_name: String,
}

/// A user that signs in through the device code flow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Tenant it lives in.
    pub tenant_id: String,
    /// Object id.
    pub object_id: String,
    /// User principal name.
    pub upn: String,
}

/// An AKS managed cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// Cluster name.
    pub name: String,
    /// Region; defaults to the resource group's.
    #[serde(default)]
    pub location: Option<String>,
    /// `properties.kubernetesVersion`.
    #[serde(default = "default_k8s_version")]
    pub kubernetes_version: String,
    /// `properties.aadProfile.enableAzureRBAC`.
    #[serde(default = "yes")]
    pub azure_rbac: bool,
    /// `properties.disableLocalAccounts` (admin credentials are refused when true).
    #[serde(default)]
    pub disable_local_accounts: bool,
    /// `properties.fqdn`; defaults to `<name>-dns-<hash>.hcp.<location>.azmk8s.io`.
    #[serde(default)]
    pub fqdn: Option<String>,
    /// API server URL written into kubeconfigs; defaults to `https://<fqdn>:443`.
    #[serde(default)]
    pub server_url: Option<String>,
    /// Cluster CA certificate (PEM) written into kubeconfigs; defaults to a fixed demo CA.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// `properties.networkProfile.serviceCidr`.
    #[serde(default = "default_service_cidr")]
    pub service_cidr: String,
    /// `properties.networkProfile.dnsServiceIP`: the cluster DNS address kubelets are given. It
    /// must lie in `service_cidr`.
    #[serde(default = "default_dns_service_ip")]
    pub dns_service_ip: String,
}

fn default_k8s_version() -> String {
    "1.30.6".to_string()
}

fn default_service_cidr() -> String {
    "10.0.0.0/16".to_string()
}

fn default_dns_service_ip() -> String {
    "10.0.0.10".to_string()
}

/// Whether `ip` lies in `cidr` (`a.b.c.d/n` or an IPv6 prefix); `None` when either is malformed.
fn cidr_contains(cidr: &str, ip: &str) -> Option<bool> {
    use std::net::IpAddr;
    let (net, len) = cidr.split_once('/')?;
    let net: IpAddr = net.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    let ip: IpAddr = ip.parse().ok()?;
    let (net, ip, bits) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
        _ => return Some(false),
    };
    if len > bits {
        return None;
    }
    let shift = bits - len;
    let mask = if shift >= 128 { 0 } else { u128::MAX << shift };
    Some(net & mask == ip & mask)
}

fn yes() -> bool {
    true
}

/// A role assignment present when the emulator starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeedRoleAssignment {
    /// Object id of the principal.
    pub principal_id: String,
    /// Built-in role name (`"Reader"`), role GUID, or a full role definition id.
    pub role: String,
    /// Scope, e.g. `/subscriptions/<id>/resourceGroups/<rg>`.
    pub scope: String,
    /// Assignment name (GUID); generated when absent.
    #[serde(default)]
    pub name: Option<String>,
}

/// Tunables.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Lifetime of every issued access token, in seconds. 0 makes tokens expire at once.
    pub token_lifetime_secs: u64,
    /// How many role-assignment PUTs naming a newly created managed identity fail with
    /// `PrincipalNotFound` before it "replicates".
    pub principal_replication_attempts: u32,
    /// Page size of role assignment lists (`nextLink` appears beyond it).
    pub list_page_size: usize,
    /// ARM writes (PUT/POST/PATCH/DELETE) allowed per second per subscription; beyond it 429.
    pub arm_writes_per_second: Option<u32>,
    /// Device code lifetime in seconds.
    pub device_code_expires_secs: u64,
    /// Polling interval announced to device code clients, in seconds.
    pub device_code_interval_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            token_lifetime_secs: 3600,
            principal_replication_attempts: 0,
            list_page_size: 100,
            arm_writes_per_second: None,
            device_code_expires_secs: 900,
            device_code_interval_secs: 5,
        }
    }
}

/// A scenario that failed to load or validate.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The JSON did not parse or did not match the schema.
    #[error("scenario {origin} is not valid JSON for the scenario schema: {source}")]
    Parse {
        /// Where it came from.
        origin: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A semantic check failed.
    #[error("scenario field {field}: {message}")]
    Invalid {
        /// JSON path of the field.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// True if `s` is a GUID in the 8-4-4-4-12 hex form.
pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    parts.len() == 5
        && parts
            .iter()
            .zip(lens)
            .all(|(p, l)| p.len() == l && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_arm_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 90
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}

impl Scenario {
    /// Load and validate a scenario file.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json_with_origin(&text, &path.display().to_string())
    }

    /// Parse and validate a scenario from JSON text.
    pub fn from_json(text: &str) -> Result<Scenario, ScenarioError> {
        Self::from_json_with_origin(text, "<inline>")
    }

    fn from_json_with_origin(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario =
            serde_json::from_str(text).map_err(|source| ScenarioError::Parse {
                origin: origin.to_string(),
                source,
            })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// The built-in demo scenario: one tenant, subscription, resource group, a service principal
    /// with the roles the agent needs, a user, and one Azure-RBAC AKS cluster.
    pub fn demo() -> Scenario {
        let rg_scope =
            format!("/subscriptions/{DEMO_SUBSCRIPTION_ID}/resourceGroups/{DEMO_RESOURCE_GROUP}");
        let cluster_scope = format!(
            "{rg_scope}/providers/Microsoft.ContainerService/managedClusters/{DEMO_CLUSTER}"
        );
        let seed = |role: &str, scope: &str, principal: &str| SeedRoleAssignment {
            principal_id: principal.to_string(),
            role: role.to_string(),
            scope: scope.to_string(),
            name: None,
        };
        Scenario {
            tenants: vec![Tenant {
                id: DEMO_TENANT_ID.to_string(),
                name: "flexnode-demo".to_string(),
            }],
            subscriptions: vec![Subscription {
                id: DEMO_SUBSCRIPTION_ID.to_string(),
                tenant_id: DEMO_TENANT_ID.to_string(),
                resource_groups: vec![ResourceGroup {
                    name: DEMO_RESOURCE_GROUP.to_string(),
                    location: "eastus".to_string(),
                }],
            }],
            service_principals: vec![ServicePrincipal {
                tenant_id: DEMO_TENANT_ID.to_string(),
                client_id: DEMO_SP_CLIENT_ID.to_string(),
                object_id: DEMO_SP_OBJECT_ID.to_string(),
                secret: DEMO_SP_SECRET.to_string(),
                display_name: "flexnode-demo-sp".to_string(),
            }],
            users: vec![User {
                tenant_id: DEMO_TENANT_ID.to_string(),
                object_id: DEMO_USER_OBJECT_ID.to_string(),
                upn: "demo@flexnode.example".to_string(),
            }],
            public_clients: default_public_clients(),
            clusters: vec![Cluster {
                subscription_id: DEMO_SUBSCRIPTION_ID.to_string(),
                resource_group: DEMO_RESOURCE_GROUP.to_string(),
                name: DEMO_CLUSTER.to_string(),
                location: None,
                kubernetes_version: default_k8s_version(),
                azure_rbac: true,
                disable_local_accounts: false,
                fqdn: None,
                server_url: None,
                ca_pem: None,
                service_cidr: default_service_cidr(),
                dns_service_ip: default_dns_service_ip(),
            }],
            role_assignments: vec![
                seed(
                    "Azure Connected Machine Onboarding",
                    &rg_scope,
                    DEMO_SP_OBJECT_ID,
                ),
                seed(
                    "User Access Administrator",
                    &cluster_scope,
                    DEMO_SP_OBJECT_ID,
                ),
                seed(
                    "Azure Kubernetes Service Cluster Admin Role",
                    &cluster_scope,
                    DEMO_SP_OBJECT_ID,
                ),
                seed(
                    "Owner",
                    &format!("/subscriptions/{DEMO_SUBSCRIPTION_ID}"),
                    DEMO_USER_OBJECT_ID,
                ),
            ],
            settings: Settings::default(),
            faults: Vec::new(),
        }
    }

    /// Check cross references and formats; errors name the offending field.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.tenants.is_empty() {
            return Err(invalid("tenants", "at least one tenant is required"));
        }
        let mut tenants = HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            if !is_guid(&t.id) {
                return Err(invalid(format!("tenants[{i}].id"), "must be a GUID"));
            }
            if !tenants.insert(t.id.to_ascii_lowercase()) {
                return Err(invalid(format!("tenants[{i}].id"), "duplicate tenant id"));
            }
        }
        let tenant_known = |id: &str| tenants.contains(&id.to_ascii_lowercase());
        for (i, s) in self.subscriptions.iter().enumerate() {
            if !is_guid(&s.id) {
                return Err(invalid(format!("subscriptions[{i}].id"), "must be a GUID"));
            }
            if !tenant_known(&s.tenant_id) {
                return Err(invalid(
                    format!("subscriptions[{i}].tenant_id"),
                    "names no tenant listed in `tenants`",
                ));
            }
            for (j, rg) in s.resource_groups.iter().enumerate() {
                if !is_arm_name(&rg.name) {
                    return Err(invalid(
                        format!("subscriptions[{i}].resource_groups[{j}].name"),
                        "must be 1-90 letters, digits, '-', '_', '.', '(' or ')'",
                    ));
                }
            }
        }
        let mut object_ids = HashSet::new();
        for (i, sp) in self.service_principals.iter().enumerate() {
            let f = |k: &str| format!("service_principals[{i}].{k}");
            if !tenant_known(&sp.tenant_id) {
                return Err(invalid(
                    f("tenant_id"),
                    "names no tenant listed in `tenants`",
                ));
            }
            if !is_guid(&sp.client_id) {
                return Err(invalid(f("client_id"), "must be a GUID"));
            }
            if !is_guid(&sp.object_id) {
                return Err(invalid(f("object_id"), "must be a GUID"));
            }
            if sp.secret.is_empty() {
                return Err(invalid(f("secret"), "must not be empty"));
            }
            if !object_ids.insert(sp.object_id.to_ascii_lowercase()) {
                return Err(invalid(f("object_id"), "duplicate object id"));
            }
        }
        for (i, u) in self.users.iter().enumerate() {
            if !tenant_known(&u.tenant_id) {
                return Err(invalid(
                    format!("users[{i}].tenant_id"),
                    "names no tenant listed in `tenants`",
                ));
            }
            if !is_guid(&u.object_id) {
                return Err(invalid(format!("users[{i}].object_id"), "must be a GUID"));
            }
            if !object_ids.insert(u.object_id.to_ascii_lowercase()) {
                return Err(invalid(
                    format!("users[{i}].object_id"),
                    "duplicate object id",
                ));
            }
        }
        for (i, c) in self.clusters.iter().enumerate() {
            let f = |k: &str| format!("clusters[{i}].{k}");
            if self
                .resource_group(&c.subscription_id, &c.resource_group)
                .is_none()
            {
                return Err(invalid(
                    f("resource_group"),
                    format!(
                        "resource group '{}' is not listed under subscription '{}'",
                        c.resource_group, c.subscription_id
                    ),
                ));
            }
            if !is_arm_name(&c.name) {
                return Err(invalid(
                    f("name"),
                    "must be 1-90 letters, digits, '-', '_' or '.'",
                ));
            }
            if let Some(url) = &c.server_url {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(invalid(
                        f("server_url"),
                        "must start with https:// or http://",
                    ));
                }
            }
            if let Some(pem) = &c.ca_pem {
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(invalid(f("ca_pem"), "must be a PEM certificate"));
                }
            }
            let network = c.service_cidr.split('/').next().unwrap_or_default();
            if cidr_contains(&c.service_cidr, network).is_none() {
                return Err(invalid(
                    f("service_cidr"),
                    "must be an address prefix such as 10.0.0.0/16",
                ));
            }
            match cidr_contains(&c.service_cidr, &c.dns_service_ip) {
                Some(true) => {}
                Some(false) => {
                    return Err(invalid(
                        f("dns_service_ip"),
                        format!("must lie in service_cidr {}", c.service_cidr),
                    ))
                }
                None => {
                    return Err(invalid(
                        f("dns_service_ip"),
                        "must be an IP address such as 10.0.0.10",
                    ))
                }
            }
        }
        for (i, ra) in self.role_assignments.iter().enumerate() {
            let f = |k: &str| format!("role_assignments[{i}].{k}");
            if roles::resolve(&ra.role).is_none() {
                return Err(invalid(
                    f("role"),
                    format!(
                        "'{}' is not a known built-in role name, GUID or role definition id",
                        ra.role
                    ),
                ));
            }
            if !ra.scope.starts_with('/') {
                return Err(invalid(f("scope"), "must start with '/'"));
            }
            if !is_guid(&ra.principal_id) {
                return Err(invalid(f("principal_id"), "must be a GUID"));
            }
            if let Some(name) = &ra.name {
                if !is_guid(name) {
                    return Err(invalid(f("name"), "must be a GUID"));
                }
            }
        }
        if self.settings.list_page_size == 0 {
            return Err(invalid("settings.list_page_size", "must be at least 1"));
        }
        for (i, fault) in self.faults.iter().enumerate() {
            fault
                .validate()
                .map_err(|m| invalid(format!("faults[{i}]"), m))?;
        }
        Ok(())
    }

    /// Find a resource group (case-insensitive, like ARM).
    pub fn resource_group(&self, subscription: &str, name: &str) -> Option<&ResourceGroup> {
        self.subscription(subscription)?
            .resource_groups
            .iter()
            .find(|rg| rg.name.eq_ignore_ascii_case(name))
    }

    /// Find a subscription.
    pub fn subscription(&self, id: &str) -> Option<&Subscription> {
        self.subscriptions
            .iter()
            .find(|s| s.id.eq_ignore_ascii_case(id))
    }

    /// Find a cluster.
    pub fn cluster(&self, subscription: &str, rg: &str, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| {
            c.subscription_id.eq_ignore_ascii_case(subscription)
                && c.resource_group.eq_ignore_ascii_case(rg)
                && c.name.eq_ignore_ascii_case(name)
        })
    }
}

impl Cluster {
    /// The region (the cluster's, else its resource group's).
    pub fn location_in(&self, scenario: &Scenario) -> String {
        self.location.clone().unwrap_or_else(|| {
            scenario
                .resource_group(&self.subscription_id, &self.resource_group)
                .map(|rg| rg.location.clone())
                .unwrap_or_else(default_location)
        })
    }

    /// The API server FQDN.
    pub fn fqdn_in(&self, scenario: &Scenario) -> String {
        self.fqdn.clone().unwrap_or_else(|| {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(
                format!(
                    "{}/{}/{}",
                    self.subscription_id, self.resource_group, self.name
                )
                .to_ascii_lowercase(),
            );
            let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "{}-dns-{hash}.hcp.{}.azmk8s.io",
                self.name.to_ascii_lowercase(),
                self.location_in(scenario)
            )
        })
    }

    /// The API server URL handed out in kubeconfigs.
    pub fn server_url_in(&self, scenario: &Scenario) -> String {
        self.server_url
            .clone()
            .unwrap_or_else(|| format!("https://{}:443", self.fqdn_in(scenario)))
    }

    /// The CA certificate PEM handed out in kubeconfigs.
    pub fn ca_pem(&self) -> &str {
        self.ca_pem.as_deref().unwrap_or(DEMO_CA_PEM)
    }

    /// The ARM resource id.
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerService/managedClusters/{}",
            self.subscription_id, self.resource_group, self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_scenario_is_valid_and_round_trips() {
        let demo = Scenario::demo();
        demo.validate().expect("demo must validate");
        let json = serde_json::to_string_pretty(&demo).expect("serialise");
        assert_eq!(Scenario::from_json(&json).expect("parse"), demo);
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let err = Scenario::from_json(r#"{"tenants":[],"bogus":1}"#).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn cluster_in_unknown_resource_group_is_rejected() {
        let mut s = Scenario::demo();
        s.clusters[0].resource_group = "nope".into();
        let err = s.validate().unwrap_err();
        assert!(
            err.to_string().contains("clusters[0].resource_group"),
            "{err}"
        );
    }

    #[test]
    fn unknown_role_is_rejected() {
        let mut s = Scenario::demo();
        s.role_assignments[0].role = "Chief Wizard".into();
        let err = s.validate().unwrap_err();
        assert!(
            err.to_string().contains("role_assignments[0].role"),
            "{err}"
        );
    }

    #[test]
    fn dns_service_ip_must_lie_in_the_service_cidr() {
        let mut s = Scenario::demo();
        s.clusters[0].service_cidr = "172.16.0.0/12".into();
        s.clusters[0].dns_service_ip = "172.20.0.10".into();
        s.validate().expect("inside the prefix");
        s.clusters[0].dns_service_ip = "10.0.0.10".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("clusters[0].dns_service_ip"), "{err}");
        s.clusters[0].dns_service_ip = "nope".into();
        assert!(s.validate().is_err());
        s.clusters[0].service_cidr = "10.0.0.0".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("clusters[0].service_cidr"), "{err}");
    }

    #[test]
    fn guid_check() {
        assert!(is_guid("acdd72a7-3385-48ef-bd42-f606fba81ae7"));
        assert!(!is_guid("acdd72a7-3385-48ef-bd42-f606fba81ae"));
        assert!(!is_guid("not-a-guid"));
    }
}
