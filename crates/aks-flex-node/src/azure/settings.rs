//! What the Azure code needs, derived from the config's `azure` section and an environment lookup, plus
//! the session (HTTP client, cached credential, ARM client) built from it. The config's own types are
//! used as they are; what lives here is what the environment overrides or adds (endpoints resolved,
//! programs to run, timing).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::azure::arm::{ArmClient, RetryPolicy};
use crate::azure::cloud::CloudEndpoints;
use crate::azure::credential::{
    AzureCliCredential, CachedCredential, ClientSecretCredential, DeviceCodeCredential,
    HimdsCredential, ImdsCredential, TokenCredential,
};
use crate::azure::roles::PrincipalRetry;
use crate::azure::{http, AzureError, Result};
use crate::config::{
    ArcConfig, AzureConfig, Config, ManagedIdentity, ServicePrincipal, TargetCluster,
};

/// How the agent authenticates to ARM for bootstrap/unbootstrap: the config's auth mode as one value.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// `azure.servicePrincipal`.
    ServicePrincipal(ServicePrincipal),
    /// Azure CLI login (neither auth section set); falls back to device code on a terminal when `az` has
    /// no usable login.
    AzureCli,
    /// `azure.managedIdentity`: Arc HIMDS when `IDENTITY_ENDPOINT`/`IMDS_ENDPOINT` are set or the Arc
    /// agent is installed, else Azure IMDS.
    ManagedIdentity(ManagedIdentity),
}

impl AuthMode {
    /// The mode the `azure` section selects (the config allows at most one of the two sections).
    pub fn of(a: &AzureConfig) -> Self {
        match (&a.service_principal, &a.managed_identity) {
            (Some(sp), _) => AuthMode::ServicePrincipal(sp.clone()),
            (None, Some(mi)) => AuthMode::ManagedIdentity(mi.clone()),
            (None, None) => AuthMode::AzureCli,
        }
    }
}

/// Waiting and retry knobs. `AKS_FLEX_NODE_AZURE_TIME_SCALE` (a factor, e.g. `0.01`) shrinks every delay
/// for simulations and tests; Retry-After from the server is still honoured (up to the cap).
#[derive(Debug, Clone)]
pub struct Timing {
    pub retry: RetryPolicy,
    pub principal: PrincipalRetry,
    /// How long to wait for the connected machine to show `identity.principalId`.
    pub identity_timeout: Duration,
    pub visibility_timeout: Duration,
    pub poll_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            retry: RetryPolicy::default(),
            principal: PrincipalRetry::default(),
            identity_timeout: Duration::from_secs(300),
            visibility_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(10),
        }
    }
}

impl Timing {
    /// Every delay multiplied by `f` (timeouts are kept at least a few seconds).
    pub fn scaled(f: f64) -> Self {
        let d = Timing::default();
        let s = |x: Duration| x.mul_f64(f);
        Timing {
            retry: RetryPolicy {
                max_attempts: d.retry.max_attempts,
                base_delay: s(d.retry.base_delay),
                max_delay: s(d.retry.max_delay).max(Duration::from_secs(2)),
                poll_interval: s(d.retry.poll_interval),
                lro_timeout: s(d.retry.lro_timeout).max(Duration::from_secs(30)),
                throttle_budget: s(d.retry.throttle_budget).max(Duration::from_secs(120)),
            },
            principal: PrincipalRetry {
                attempts: d.principal.attempts,
                base: s(d.principal.base),
                max: s(d.principal.max),
            },
            identity_timeout: s(d.identity_timeout).max(Duration::from_secs(30)),
            visibility_timeout: s(d.visibility_timeout).max(Duration::from_secs(30)),
            poll_interval: s(d.poll_interval),
        }
    }
}

/// Resolved Azure settings.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    /// `azure.tenantId`.
    pub tenant_id: String,
    /// `azure.subscriptionId`.
    pub subscription_id: String,
    /// `azure.cloud` with the endpoint overrides applied.
    pub endpoints: CloudEndpoints,
    /// `azure.caBundle`.
    pub ca_bundle: Option<PathBuf>,
    pub auth: AuthMode,
    /// `IDENTITY_ENDPOINT` (full HIMDS token URL).
    pub identity_endpoint: Option<String>,
    /// `IMDS_ENDPOINT`.
    pub imds_endpoint: Option<String>,
    /// `azure.arc`, with `adopt_existing` overridden by `AKS_FLEX_NODE_ARC_ADOPT=1|0`.
    pub arc: ArcConfig,
    /// `azure.targetCluster`.
    pub cluster: TargetCluster,
    /// The `azcmagent` program: `AKS_FLEX_NODE_AZCMAGENT`, else `azure.arc.azcmagentPath`, else `azcmagent`
    /// on PATH.
    pub azcmagent: String,
    /// Extra environment for `azcmagent` (the benchmark runs many simulated hosts in one process).
    pub azcmagent_env: BTreeMap<String, String>,
    /// The `az` program.
    pub az: String,
    /// A person can answer a device-code prompt (stderr is a terminal).
    pub interactive: bool,
    pub timing: Timing,
}

impl AzureSettings {
    /// Resolve from the effective config and an environment lookup.
    pub fn from_config(cfg: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let a = &cfg.azure;
        let endpoints = CloudEndpoints::of(a.cloud).with_overrides(
            a.resource_manager_endpoint.as_deref(),
            a.active_directory_endpoint.as_deref(),
        )?;
        let timing = match env("AKS_FLEX_NODE_AZURE_TIME_SCALE") {
            Some(s) => {
                let f: f64 = s
                    .trim()
                    .parse()
                    .ok()
                    .filter(|f: &f64| *f > 0.0 && *f <= 1.0)
                    .ok_or_else(|| {
                        AzureError::Config(format!(
                            "AKS_FLEX_NODE_AZURE_TIME_SCALE={s:?} must be a number in (0, 1]"
                        ))
                    })?;
                Timing::scaled(f)
            }
            None => Timing::default(),
        };
        let adopt_existing = match env("AKS_FLEX_NODE_ARC_ADOPT").as_deref().map(str::trim) {
            None | Some("") => a.arc.adopt_existing,
            Some("1") | Some("true") => true,
            Some("0") | Some("false") => false,
            Some(v) => {
                return Err(AzureError::Config(format!(
                    "AKS_FLEX_NODE_ARC_ADOPT={v:?} must be 1, true, 0 or false (it overrides azure.arc.adoptExisting)"
                )))
            }
        };
        Ok(AzureSettings {
            tenant_id: a.tenant_id.clone(),
            subscription_id: a.subscription_id.clone(),
            endpoints,
            ca_bundle: a.ca_bundle.clone(),
            auth: AuthMode::of(a),
            identity_endpoint: env("IDENTITY_ENDPOINT").filter(|s| !s.is_empty()),
            imds_endpoint: env("IMDS_ENDPOINT").filter(|s| !s.is_empty()),
            arc: ArcConfig {
                adopt_existing,
                ..a.arc.clone()
            },
            cluster: a.target_cluster.clone(),
            // The environment wins over the config (tests and `make demo` point it at the stand-in).
            azcmagent: env("AKS_FLEX_NODE_AZCMAGENT")
                .filter(|s| !s.trim().is_empty())
                .or_else(|| {
                    a.arc
                        .azcmagent_path
                        .as_ref()
                        .map(|p| p.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "azcmagent".into()),
            azcmagent_env: BTreeMap::new(),
            az: "az".into(),
            interactive: std::io::stderr().is_terminal(),
            timing,
        })
    }

    /// The HybridCompute machine resource ID.
    pub fn machine_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.HybridCompute/machines/{}",
            self.subscription_id, self.arc.resource_group, self.arc.machine_name
        )
    }

    /// The credential bootstrap uses for ARM.
    pub fn credential(&self, http: &reqwest::Client) -> Result<Arc<dyn TokenCredential>> {
        Ok(match &self.auth {
            AuthMode::ServicePrincipal(sp) => Arc::new(ClientSecretCredential::new(
                http.clone(),
                self.endpoints.token_url(&sp.tenant_id),
                sp.client_id.clone(),
                sp.client_secret.clone(),
            )),
            AuthMode::AzureCli => Arc::new(CliOrDeviceCode {
                cli: AzureCliCredential::new(self.az.clone(), Some(self.tenant_id.clone())),
                device: DeviceCodeCredential::new(
                    http.clone(),
                    self.endpoints.devicecode_url(&self.tenant_id),
                    self.endpoints.token_url(&self.tenant_id),
                    self.interactive,
                ),
            }),
            AuthMode::ManagedIdentity(mi) => self.managed_identity(http, mi.client_id.clone())?,
        })
    }

    /// The machine's own identity (what the kubelet's `token` command uses): Arc HIMDS unless IMDS is
    /// explicitly selected by `IMDS_ENDPOINT` without `IDENTITY_ENDPOINT`.
    pub fn managed_identity(
        &self,
        http: &reqwest::Client,
        client_id: Option<String>,
    ) -> Result<Arc<dyn TokenCredential>> {
        let arc_installed = std::path::Path::new("/opt/azcmagent/bin/himds").exists();
        if self.identity_endpoint.is_some() || arc_installed || self.imds_endpoint.is_none() {
            if client_id.is_some() {
                tracing::warn!("azure.managedIdentity.clientId is ignored with Arc: HIMDS serves only the system-assigned identity");
            }
            Ok(Arc::new(HimdsCredential::new(
                http.clone(),
                self.identity_endpoint.as_deref(),
            )?))
        } else {
            Ok(Arc::new(ImdsCredential::new(
                http.clone(),
                self.imds_endpoint.as_deref(),
                client_id,
            )?))
        }
    }

    /// HTTP client + cached credential + ARM client.
    pub fn session(&self) -> Result<AzureSession> {
        let http = http::client(self.ca_bundle.as_deref())?;
        let cred = Arc::new(CachedCredential::new(self.credential(&http)?));
        let arm = ArmClient::new(
            http.clone(),
            self.endpoints.resource_manager.clone(),
            self.endpoints.arm_resource.clone(),
            cred,
        )
        .with_policy(self.timing.retry.clone());
        Ok(AzureSession { http, arm })
    }
}

/// What talks to Azure during one run.
pub struct AzureSession {
    pub http: reqwest::Client,
    pub arm: ArmClient,
}

/// Azure CLI first; when it has no usable login and a person is at the terminal, device code.
struct CliOrDeviceCode {
    cli: AzureCliCredential,
    device: DeviceCodeCredential,
}

#[async_trait::async_trait]
impl TokenCredential for CliOrDeviceCode {
    async fn get_token(&self, resource: &str) -> Result<crate::azure::credential::AccessToken> {
        match self.cli.get_token(resource).await {
            Ok(t) => Ok(t),
            Err(cli_err) => {
                if self.device.interactive() {
                    tracing::warn!("{cli_err}; falling back to device-code sign-in");
                    self.device.get_token(resource).await
                } else {
                    Err(cli_err)
                }
            }
        }
    }

    fn describe(&self) -> String {
        "Azure CLI".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, LoadOptions};

    fn config(arc_extra: serde_json::Value) -> Config {
        let mut v: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/config/seed-example.json"
        ))
        .unwrap();
        for (k, x) in arc_extra.as_object().unwrap() {
            v["azure"]["arc"][k] = x.clone();
        }
        let none = |_: &str| None;
        load_str(
            &v.to_string(),
            "t.json",
            &LoadOptions {
                hostname: "h".into(),
                env: &none,
            },
        )
        .unwrap()
        .config
    }

    fn settings(cfg: &Config, vars: &[(&str, &str)]) -> Result<AzureSettings> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AzureSettings::from_config(cfg, &|k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn adopt_existing_comes_from_config_and_the_env_overrides_it() {
        let off = config(serde_json::json!({}));
        let on = config(serde_json::json!({"adoptExisting": true}));
        assert!(!settings(&off, &[]).unwrap().arc.adopt_existing);
        assert!(settings(&on, &[]).unwrap().arc.adopt_existing);
        assert!(
            settings(&off, &[("AKS_FLEX_NODE_ARC_ADOPT", "1")])
                .unwrap()
                .arc
                .adopt_existing
        );
        assert!(
            !settings(&on, &[("AKS_FLEX_NODE_ARC_ADOPT", "false")])
                .unwrap()
                .arc
                .adopt_existing
        );
        let e = settings(&on, &[("AKS_FLEX_NODE_ARC_ADOPT", "yes")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("AKS_FLEX_NODE_ARC_ADOPT") && e.contains("adoptExisting"),
            "{e}"
        );
    }

    #[test]
    fn azcmagent_path_from_config_unless_the_env_names_one() {
        let plain = config(serde_json::json!({}));
        assert_eq!(settings(&plain, &[]).unwrap().azcmagent, "azcmagent");
        let cfg = config(serde_json::json!({"azcmagentPath": "/opt/azcmagent/bin/azcmagent"}));
        assert_eq!(
            settings(&cfg, &[]).unwrap().azcmagent,
            "/opt/azcmagent/bin/azcmagent"
        );
        assert_eq!(
            settings(&cfg, &[("AKS_FLEX_NODE_AZCMAGENT", "/tmp/stand-in")])
                .unwrap()
                .azcmagent,
            "/tmp/stand-in"
        );
    }

    #[test]
    fn configured_roles_reach_the_settings() {
        let cfg = config(serde_json::json!({"roles": ["Azure Kubernetes Service RBAC Reader"]}));
        let s = settings(&cfg, &[]).unwrap();
        assert_eq!(s.arc.roles.len(), 1);
        assert_eq!(s.arc.roles[0].guid, "7f6c6a51-bcf8-42ba-9220-52d62157d7db");
    }
}
