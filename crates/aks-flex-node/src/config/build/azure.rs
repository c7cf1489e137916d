//! The `azure` section: the target cluster, subscription and tenant, cloud and endpoint overrides, the
//! auth mode (service principal, managed identity, or neither for the Azure CLI), the refused bootstrap
//! token, Arc registration (with the role lookup) and the agent pool name.

use super::check::{given, B};
use super::secrets::resolve_secret;
use crate::config::file;
use crate::config::model::*;
use crate::config::parse;
use crate::model::RoleSpec;

pub(super) fn azure(b: &mut B, af: file::AzureFile) -> AzureConfig {
    let target = target_cluster(b, af.target_cluster);
    let subscription_id = subscription(b, af.subscription_id, &target);
    let tenant_id = b.guid(
        "azure.tenantId",
        af.tenant_id,
        "the Entra tenant GUID",
        true,
    );
    let cloud = cloud(b, af.cloud);
    let resource_manager_endpoint = b.url(
        "azure.resourceManagerEndpoint",
        af.resource_manager_endpoint,
        false,
    );
    let active_directory_endpoint = b.url(
        "azure.activeDirectoryEndpoint",
        af.active_directory_endpoint,
        false,
    );
    let ca_bundle =
        given(af.ca_bundle.clone()).map(|_| b.abs_path("azure.caBundle", af.ca_bundle, ""));
    let service_principal = af
        .service_principal
        .map(|sp| service_principal(b, sp, &tenant_id));
    let managed_identity = af.managed_identity.map(|mi| ManagedIdentity {
        client_id: b.guid(
            "azure.managedIdentity.clientId",
            mi.client_id,
            "the user-assigned identity's client GUID",
            false,
        ),
    });
    if service_principal.is_some() && managed_identity.is_some() {
        b.bad(
            "azure.managedIdentity",
            None,
            "is set together with azure.servicePrincipal; expected at most one Azure auth mode (servicePrincipal, managedIdentity, or neither for Azure CLI)",
        );
    }
    if let Some(bt) = af.bootstrap_token {
        bootstrap_token(b, bt);
    }
    let arc = arc(b, af.arc.unwrap_or_default(), &target);
    let target_agent_pool_name = agent_pool_name(b, af.target_agent_pool_name);
    AzureConfig {
        subscription_id: subscription_id.unwrap_or_default(),
        tenant_id: tenant_id.unwrap_or_default(),
        cloud,
        resource_manager_endpoint,
        active_directory_endpoint,
        ca_bundle,
        service_principal,
        managed_identity,
        arc,
        target_cluster: target.into_model(),
        target_agent_pool_name,
    }
}

/// What `azure.targetCluster` gave: the resource ID as written, its parts, and the region.
struct Target {
    resource_id: Option<String>,
    cluster: Option<parse::ClusterId>,
    location: Option<String>,
}

impl Target {
    fn into_model(self) -> TargetCluster {
        let c = self.cluster.unwrap_or(parse::ClusterId {
            subscription_id: String::new(),
            resource_group: String::new(),
            name: String::new(),
        });
        TargetCluster {
            resource_id: self.resource_id.unwrap_or_default(),
            location: self.location.unwrap_or_default(),
            subscription_id: c.subscription_id,
            resource_group: c.resource_group,
            name: c.name,
        }
    }
}

fn target_cluster(b: &mut B, tc: Option<file::TargetClusterFile>) -> Target {
    let had_tc = tc.is_some();
    let tc = match tc {
        Some(tc) => tc,
        None => {
            b.missing(
                "azure.targetCluster",
                "an object with resourceId and location of the AKS cluster to join",
            );
            file::TargetClusterFile::default()
        }
    };
    let resource_id = given(tc.resource_id);
    let cluster = match &resource_id {
        Some(id) => {
            let c = parse::parse_resource_id(id);
            if c.is_none() {
                b.bad(
                    "azure.targetCluster.resourceId",
                    Some(id),
                    format!(
                        "is not an AKS cluster resource ID; expected {}",
                        parse::RESOURCE_ID_FORMAT
                    ),
                );
            }
            c
        }
        None => {
            if had_tc {
                b.missing("azure.targetCluster.resourceId", parse::RESOURCE_ID_FORMAT);
            }
            None
        }
    };
    let location = given(tc.location);
    if location.is_none() && had_tc {
        b.missing(
            "azure.targetCluster.location",
            "the cluster's Azure region, e.g. westus",
        );
    }
    Target {
        resource_id,
        cluster,
        location,
    }
}

/// `azure.subscriptionId`, or the subscription of the cluster's resource ID when absent.
fn subscription(b: &mut B, v: Option<String>, target: &Target) -> Option<String> {
    match given(v) {
        Some(s) => {
            let s = b.guid(
                "azure.subscriptionId",
                Some(s),
                "the subscription GUID",
                true,
            );
            if let (Some(s), Some(c)) = (&s, &target.cluster) {
                if !s.eq_ignore_ascii_case(&c.subscription_id) {
                    b.warnings.push(format!(
                        "azure.subscriptionId {s} differs from the subscription {} in azure.targetCluster.resourceId; Arc and role definitions use azure.subscriptionId, the cluster is read from its own subscription",
                        c.subscription_id
                    ));
                }
            }
            s
        }
        None => match &target.cluster {
            Some(c) => Some(c.subscription_id.clone()),
            None => {
                if target.resource_id.is_none() {
                    b.missing("azure.subscriptionId", "the subscription GUID (or a valid azure.targetCluster.resourceId to take it from)");
                }
                None
            }
        },
    }
}

fn cloud(b: &mut B, v: Option<String>) -> Cloud {
    match given(v) {
        None => Cloud::default(),
        Some(c) => match Cloud::parse(&c) {
            Some(c) => c,
            None => {
                let all: Vec<&str> = Cloud::ALL.iter().map(|c| c.as_str()).collect();
                b.bad(
                    "azure.cloud",
                    Some(&c),
                    format!("is not a known cloud; expected one of {}", all.join(", ")),
                );
                Cloud::default()
            }
        },
    }
}

/// `azure.servicePrincipal`; its tenant falls back to `azure.tenantId`.
fn service_principal(
    b: &mut B,
    sp: file::ServicePrincipalFile,
    tenant_id: &Option<String>,
) -> ServicePrincipal {
    if sp.client_secret.is_some() {
        b.inline_secret = true;
    }
    let client_id = b.guid(
        "azure.servicePrincipal.clientId",
        sp.client_id,
        "the application (client) GUID",
        true,
    );
    let sp_tenant = match given(sp.tenant_id) {
        Some(t) => b.guid(
            "azure.servicePrincipal.tenantId",
            Some(t),
            "the tenant GUID",
            true,
        ),
        None => tenant_id.clone(),
    };
    let secret = resolve_secret(b, sp.client_secret, sp.client_secret_file);
    ServicePrincipal {
        tenant_id: sp_tenant.unwrap_or_default(),
        client_id: client_id.unwrap_or_default(),
        client_secret: secret.unwrap_or_else(|| Secret::new("")),
    }
}

/// `azure.bootstrapToken` is refused.
fn bootstrap_token(b: &mut B, bt: file::BootstrapTokenFile) {
    if bt.token.is_some() {
        b.inline_secret = true;
    }
    // Never echo the token: the problem carries no value.
    b.bad(
        "azure.bootstrapToken",
        None,
        "is set, but bootstrap-token join is not supported yet; remove azure.bootstrapToken. The kubelet joins with Entra tokens of the Arc machine's managed identity (azure.arc.enabled, the default); the agent itself signs in to Azure with azure.servicePrincipal, azure.managedIdentity or the Azure CLI login",
    );
}

/// `azure.arc`; resource group and region default to the cluster's.
fn arc(b: &mut B, arc_f: file::ArcFile, target: &Target) -> ArcConfig {
    let enabled = arc_f.enabled.unwrap_or(true);
    let machine_name = machine_name(b, arc_f.machine_name, enabled);
    let roles = arc_roles(b, arc_f.roles);
    let azcmagent_path = given(arc_f.azcmagent_path).and_then(|p| {
        if p.starts_with('/') {
            Some(std::path::PathBuf::from(p))
        } else {
            b.bad(
                "azure.arc.azcmagentPath",
                Some(&p),
                "is not an absolute path; expected e.g. /usr/bin/azcmagent",
            );
            None
        }
    });
    ArcConfig {
        enabled,
        machine_name,
        tags: arc_f.tags.unwrap_or_default(),
        resource_group: given(arc_f.resource_group)
            .or_else(|| target.cluster.as_ref().map(|c| c.resource_group.clone()))
            .unwrap_or_default(),
        location: given(arc_f.location)
            .or_else(|| target.location.clone())
            .unwrap_or_default(),
        auto_role_assignment: arc_f.auto_role_assignment.unwrap_or(true),
        roles,
        adopt_existing: arc_f.adopt_existing.unwrap_or(false),
        azcmagent_path,
    }
}

/// `azure.arc.machineName`, else the host name.
fn machine_name(b: &mut B, v: Option<String>, arc_enabled: bool) -> String {
    match given(v) {
        Some(m) => {
            if m.len() > 54
                || !m
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            {
                b.bad("azure.arc.machineName", Some(&m), "is not a valid Arc machine name; expected up to 54 letters, digits, '-', '_' or '.'");
            }
            m
        }
        None => {
            let h = b.opts.hostname.trim().to_string();
            if h.is_empty() && arc_enabled {
                b.missing(
                    "azure.arc.machineName",
                    "a machine name (the host name is empty)",
                );
            }
            h
        }
    }
}

/// `azure.arc.roles` looked up in the role catalogue (names or GUIDs), without duplicates; the
/// original's three when absent.
fn arc_roles(b: &mut B, v: Option<Vec<String>>) -> Vec<RoleSpec> {
    let Some(list) = v else {
        return crate::model::roles::default_roles();
    };
    let mut out: Vec<RoleSpec> = Vec::new();
    for (i, r) in list.iter().enumerate() {
        match crate::model::roles::resolve(r) {
            Ok(spec) if out.iter().any(|o| o.guid == spec.guid) => {
                b.bad(&format!("azure.arc.roles[{i}]"), Some(r), "is listed twice");
            }
            Ok(spec) => out.push(spec),
            Err(why) => b.bad(&format!("azure.arc.roles[{i}]"), Some(r), why),
        }
    }
    out
}

fn agent_pool_name(b: &mut B, v: Option<String>) -> Option<String> {
    given(v).filter(|p| {
        let ok = p.len() <= 12
            && p.bytes().next().is_some_and(|c| c.is_ascii_lowercase())
            && p.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            b.bad("azure.targetAgentPoolName", Some(p), "is not an agent pool name; expected 1-12 lower-case letters or digits, starting with a letter");
        }
        ok
    })
}
