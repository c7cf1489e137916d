//! Cloud endpoints per `azure.cloud`, with the explicit overrides (`azure.resourceManagerEndpoint`,
//! `azure.activeDirectoryEndpoint`) that also point the agent at the emulator.
//!
//! Values are the public ones Azure documents per sovereign cloud (the same the Azure CLI's `az cloud show`
//! prints). The AKS AAD server application is a multi-tenant first-party app whose ID is the same in every
//! cloud (kubelogin uses it for all of them).

use crate::azure::{AzureError, Result};
use crate::config::Cloud;

/// The AKS AAD server application: the audience of tokens the API server accepts from Entra ID.
pub const AKS_AAD_SERVER_APP_ID: &str = "6dae42f8-4368-4678-94ff-3960e28e3630";

/// Default Arc HIMDS token endpoint (overridden by `IDENTITY_ENDPOINT`, as the Azure SDKs do).
pub const HIMDS_DEFAULT_ENDPOINT: &str = "http://127.0.0.1:40342/metadata/identity/oauth2/token";

/// Default Azure IMDS token endpoint (VMs inside Azure).
pub const IMDS_DEFAULT_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Resolved endpoints, without trailing slashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEndpoints {
    pub name: Cloud,
    /// ARM base URL, e.g. `https://management.azure.com`.
    pub resource_manager: String,
    /// Entra authority host, e.g. `https://login.microsoftonline.com`.
    pub active_directory: String,
    /// The resource (audience) ARM tokens are requested for, e.g. `https://management.azure.com/`.
    pub arm_resource: String,
    /// The AKS AAD server app ID (audience of kubelet tokens).
    pub aks_aad_server_app_id: String,
}

impl CloudEndpoints {
    /// The cloud's public endpoints.
    pub fn of(name: Cloud) -> Self {
        let (arm, aad, res) = match name {
            Cloud::AzurePublicCloud => (
                "https://management.azure.com",
                "https://login.microsoftonline.com",
                "https://management.azure.com/",
            ),
            Cloud::AzureUSGovernmentCloud => (
                "https://management.usgovcloudapi.net",
                "https://login.microsoftonline.us",
                "https://management.usgovcloudapi.net/",
            ),
            Cloud::AzureChinaCloud => (
                "https://management.chinacloudapi.cn",
                "https://login.chinacloudapi.cn",
                "https://management.chinacloudapi.cn/",
            ),
        };
        CloudEndpoints {
            name,
            resource_manager: arm.into(),
            active_directory: aad.into(),
            arm_resource: res.into(),
            aks_aad_server_app_id: AKS_AAD_SERVER_APP_ID.into(),
        }
    }

    /// Apply the config overrides; each is checked (https, or http on loopback only).
    /// The token audience stays the cloud's ARM resource: a custom ARM endpoint (Azure Stack, the emulator)
    /// is addressed by URL but tokens are still requested for the cloud's management resource.
    pub fn with_overrides(
        mut self,
        resource_manager: Option<&str>,
        active_directory: Option<&str>,
    ) -> Result<Self> {
        if let Some(u) = resource_manager {
            self.resource_manager =
                crate::azure::http::checked_base_url("azure.resourceManagerEndpoint", u)?;
        }
        if let Some(u) = active_directory {
            self.active_directory =
                crate::azure::http::checked_base_url("azure.activeDirectoryEndpoint", u)?;
        }
        Ok(self)
    }

    /// Entra v2 token URL for a tenant.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.active_directory)
    }

    /// Entra v2 device-code URL for a tenant.
    pub fn devicecode_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/devicecode", self.active_directory)
    }
}

/// Parse a cloud name as the config spells it (case-insensitive).
pub fn parse_cloud(s: &str) -> Result<Cloud> {
    Cloud::parse(s).ok_or_else(|| {
        AzureError::Config(format!(
            "azure.cloud: {s:?} is not a known cloud; allowed values: AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud"
        ))
    })
}

/// `resource` -> the v2 scope (`<resource>/.default`).
pub fn scope_for(resource: &str) -> String {
    format!("{}/.default", resource.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_cloud_endpoints_and_overrides() {
        let c = CloudEndpoints::of(Cloud::AzurePublicCloud);
        assert_eq!(
            c.token_url("t"),
            "https://login.microsoftonline.com/t/oauth2/v2.0/token"
        );
        assert_eq!(
            scope_for(&c.arm_resource),
            "https://management.azure.com/.default"
        );
        let c = c
            .with_overrides(Some("http://127.0.0.1:9/"), Some("http://localhost:9"))
            .unwrap();
        assert_eq!(c.resource_manager, "http://127.0.0.1:9");
        assert_eq!(
            c.devicecode_url("t"),
            "http://localhost:9/t/oauth2/v2.0/devicecode"
        );
        // The audience stays the cloud's.
        assert_eq!(c.arm_resource, "https://management.azure.com/");
    }

    #[test]
    fn sovereign_clouds() {
        let g = CloudEndpoints::of(parse_cloud("azureusgovernmentcloud").unwrap());
        assert_eq!(g.resource_manager, "https://management.usgovcloudapi.net");
        assert_eq!(g.active_directory, "https://login.microsoftonline.us");
        let c = CloudEndpoints::of(parse_cloud("AzureChinaCloud").unwrap());
        assert_eq!(c.active_directory, "https://login.chinacloudapi.cn");
        assert_eq!(c.name.azcmagent_cloud(), "AzureChinaCloud");
        assert!(parse_cloud("AzureGermanCloud")
            .unwrap_err()
            .to_string()
            .contains("allowed values"));
    }

    #[test]
    fn plain_http_to_a_remote_host_is_refused() {
        let err = CloudEndpoints::of(Cloud::AzurePublicCloud)
            .with_overrides(Some("http://arm.example.com"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("azure.resourceManagerEndpoint") && err.contains("https"),
            "{err}"
        );
    }
}
