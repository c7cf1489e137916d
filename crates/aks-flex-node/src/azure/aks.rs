//! The AKS managed cluster: the Azure RBAC check and the cluster's API server URL + CA from
//! `listClusterUserCredential` (works with local accounts disabled; the original used admin credentials).

use base64::Engine;
use serde_json::Value;

use crate::azure::arm::{api, ArmClient};
use crate::azure::{AzureError, Result};
use crate::model::ClusterEndpoint;

/// What the agent needs to know about the cluster.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub azure_rbac: bool,
    pub fqdn: Option<String>,
    pub kubernetes_version: Option<String>,
    /// `properties.networkProfile.dnsServiceIP` (the cluster DNS service; absent or unparsable: None).
    pub dns_service_ip: Option<std::net::IpAddr>,
}

/// GET the cluster; a missing cluster is an error naming the resource ID.
pub async fn get_cluster(arm: &ArmClient, resource_id: &str) -> Result<ClusterInfo> {
    let v = arm
        .get(resource_id, api::MANAGED_CLUSTERS)
        .await?
        .ok_or_else(|| {
            AzureError::Other(format!(
                "the AKS cluster {resource_id} does not exist (or the identity cannot see it): check azure.targetCluster.resourceId"
            ))
        })?;
    let p = &v["properties"];
    Ok(ClusterInfo {
        azure_rbac: p["aadProfile"]["enableAzureRBAC"]
            .as_bool()
            .unwrap_or(false),
        fqdn: p["fqdn"].as_str().map(str::to_string),
        kubernetes_version: p["kubernetesVersion"].as_str().map(str::to_string),
        dns_service_ip: dns_service_ip(p),
    })
}

/// The cluster DNS service IP from a managed cluster's `properties`.
fn dns_service_ip(properties: &Value) -> Option<std::net::IpAddr> {
    let raw = properties["networkProfile"]["dnsServiceIP"].as_str()?;
    match raw.trim().parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            tracing::warn!("the cluster's networkProfile.dnsServiceIP {raw:?} is not an IP address; ignoring it (set networking.dnsServiceIP)");
            None
        }
    }
}

/// Fail unless the cluster uses Azure RBAC for Kubernetes authorization (nodes authenticate with their
/// Arc identity and are authorised through Azure role assignments).
pub fn require_azure_rbac(info: &ClusterInfo, resource_id: &str) -> Result<()> {
    if info.azure_rbac {
        return Ok(());
    }
    let (rg, name) = rg_and_name(resource_id);
    Err(AzureError::Other(format!(
        "the AKS cluster {resource_id} does not use Azure RBAC for Kubernetes authorization, which flex nodes need. \
         Enable it with: az aks update --resource-group {rg} --name {name} --enable-aad --enable-azure-rbac"
    )))
}

fn rg_and_name(resource_id: &str) -> (String, String) {
    let parts: Vec<&str> = resource_id.split('/').collect();
    let find = |key: &str| {
        parts
            .iter()
            .position(|p| p.eq_ignore_ascii_case(key))
            .and_then(|i| parts.get(i + 1))
            .map(|s| s.to_string())
            .unwrap_or_else(|| "<name>".into())
    };
    (find("resourceGroups"), find("managedClusters"))
}

/// Server URL and CA PEM from the cluster's credentials: `listClusterUserCredential` (works with local
/// accounts disabled) and, when the identity may not call it but holds the AKS Cluster Admin Role the
/// seed README asks for, `listClusterAdminCredential` as the original did. Only server and CA are kept.
pub async fn user_credentials(arm: &ArmClient, resource_id: &str) -> Result<ClusterEndpoint> {
    let user = format!("{resource_id}/listClusterUserCredential");
    let (action, v) = match arm.post(&user, api::MANAGED_CLUSTERS, None).await {
        Ok(v) => ("listClusterUserCredential", v),
        Err(e) if e.arm_code() == Some("AuthorizationFailed") => {
            tracing::info!("no permission for listClusterUserCredential; trying listClusterAdminCredential (only server and CA are used)");
            let admin = format!("{resource_id}/listClusterAdminCredential");
            match arm.post(&admin, api::MANAGED_CLUSTERS, None).await {
                Ok(v) => ("listClusterAdminCredential", v),
                Err(admin_err) => {
                    tracing::debug!("listClusterAdminCredential failed too: {admin_err}");
                    return Err(e);
                }
            }
        }
        Err(e) => return Err(e),
    };
    endpoint_from_credential_result(&v)
        .map_err(|m| AzureError::Other(format!("{action} for {resource_id}: {m}")))
}

/// Decode `kubeconfigs[0].value` and keep only the first cluster's server and CA (never the user part).
pub fn endpoint_from_credential_result(v: &Value) -> std::result::Result<ClusterEndpoint, String> {
    let b64 = v["kubeconfigs"][0]["value"]
        .as_str()
        .ok_or("the response holds no kubeconfig")?;
    let yaml = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "the kubeconfig is not valid base64")?;
    let yaml = String::from_utf8(yaml).map_err(|_| "the kubeconfig is not UTF-8")?;
    let kc = kube::config::Kubeconfig::from_yaml(&yaml)
        .map_err(|e| format!("the kubeconfig is not valid: {e}"))?;
    let cluster = kc
        .clusters
        .into_iter()
        .find_map(|c| c.cluster)
        .ok_or("the kubeconfig has no cluster")?;
    let server = cluster
        .server
        .ok_or("the kubeconfig has no cluster with a server")?;
    let ca = cluster
        .certificate_authority_data
        .ok_or("the kubeconfig's cluster has no certificate-authority-data")?;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca.trim())
        .map_err(|_| "certificate-authority-data is not valid base64")?;
    if !String::from_utf8_lossy(&ca_pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err("certificate-authority-data is not a PEM certificate".into());
    }
    if !server.starts_with("https://") {
        return Err(format!("the cluster server {server:?} is not an https URL"));
    }
    Ok(ClusterEndpoint {
        server,
        ca_pem,
        dns_service_ip: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn cred(yaml: &str) -> Value {
        let b = base64::engine::general_purpose::STANDARD.encode(yaml);
        serde_json::json!({"kubeconfigs":[{"name":"clusterUser","value": b}]})
    }

    #[test]
    fn takes_server_and_ca_of_the_first_cluster_only() {
        let ca = base64::engine::general_purpose::STANDARD.encode(CA);
        let yaml = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: \"https://c.hcp.eastus.azmk8s.io:443\"\n  name: c\n- cluster:\n    server: https://other\n  name: d\ncontexts: []\nusers:\n- name: u\n  user:\n    token: secret-token\n"
        );
        let ep = endpoint_from_credential_result(&cred(&yaml)).unwrap();
        assert_eq!(ep.server, "https://c.hcp.eastus.azmk8s.io:443");
        assert_eq!(ep.ca_pem, CA.as_bytes());
    }

    #[test]
    fn broken_credentials_are_explained() {
        assert!(endpoint_from_credential_result(&serde_json::json!({}))
            .unwrap_err()
            .contains("no kubeconfig"));
        let e = endpoint_from_credential_result(&cred(
            "clusters:\n- name: c\n  cluster:\n    server: https://x\n",
        ))
        .unwrap_err();
        assert!(e.contains("certificate-authority-data"), "{e}");
        let e = endpoint_from_credential_result(&cred("clusters: [unterminated\n")).unwrap_err();
        assert!(e.contains("not valid"), "{e}");
    }

    #[test]
    fn dns_service_ip_comes_from_the_network_profile() {
        let p = serde_json::json!({"networkProfile": {"dnsServiceIP": "10.0.0.10", "serviceCidr": "10.0.0.0/16"}});
        assert_eq!(dns_service_ip(&p), Some("10.0.0.10".parse().unwrap()));
        let v6 = serde_json::json!({"networkProfile": {"dnsServiceIP": "fd00::a"}});
        assert_eq!(dns_service_ip(&v6), Some("fd00::a".parse().unwrap()));
        assert_eq!(dns_service_ip(&serde_json::json!({})), None);
        assert_eq!(
            dns_service_ip(&serde_json::json!({"networkProfile": {"dnsServiceIP": "not-an-ip"}})),
            None
        );
    }

    #[test]
    fn rbac_error_says_how_to_enable_it() {
        let info = ClusterInfo {
            azure_rbac: false,
            fqdn: None,
            kubernetes_version: None,
            dns_service_ip: None,
        };
        let e = require_azure_rbac(&info, "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.ContainerService/managedClusters/c1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--resource-group rg1 --name c1") && e.contains("--enable-azure-rbac"),
            "{e}"
        );
    }
}
