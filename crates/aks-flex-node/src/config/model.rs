//! The effective, typed configuration: defaults applied, legacy shapes merged, validated.
//!
//! Everything outside `config` reads only these types. They serialise (camelCase) for
//! `config show`; secrets serialise as `"<redacted>"`, so a serialised `Config` is always safe
//! to print.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

/// The secret string type (defined in `model`: the Azure client's tokens use it too).
pub use crate::model::Secret;

/// The whole effective configuration.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Azure identity, Arc and target cluster.
    pub azure: AzureConfig,
    /// Agent logging and node name.
    pub agent: AgentConfig,
    /// Kubernetes binaries.
    pub kubernetes: KubernetesConfig,
    /// containerd.
    pub containerd: ContainerdConfig,
    /// runc.
    pub runc: RuncConfig,
    /// CNI plugins.
    pub cni: CniConfig,
    /// Node Problem Detector.
    pub npd: NpdConfig,
    /// Kubernetes node settings.
    pub node: NodeConfig,
    /// Cluster networking.
    pub networking: NetworkingConfig,
    /// Host paths.
    pub paths: PathsConfig,
    /// Bootstrap sources.
    pub bootstrap: BootstrapConfig,
    /// Artifact sources.
    pub artifacts: ArtifactsConfig,
}

impl Config {
    /// The configuration as JSON for `config show`; every secret is `"<redacted>"`.
    pub fn redacted_json(&self) -> serde_json::Value {
        // Secret's Serialize impl already redacts; serialising these plain types cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Azure cloud environment. Spellings are the original's; parsing is case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Cloud {
    /// Azure public cloud (default).
    #[default]
    AzurePublicCloud,
    /// Azure US Government.
    AzureUSGovernmentCloud,
    /// Azure China (21Vianet).
    AzureChinaCloud,
}

impl Cloud {
    /// All values, in the order shown to users.
    pub const ALL: [Cloud; 3] = [
        Cloud::AzurePublicCloud,
        Cloud::AzureUSGovernmentCloud,
        Cloud::AzureChinaCloud,
    ];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::AzurePublicCloud => "AzurePublicCloud",
            Cloud::AzureUSGovernmentCloud => "AzureUSGovernmentCloud",
            Cloud::AzureChinaCloud => "AzureChinaCloud",
        }
    }

    /// The `azcmagent connect --cloud` spelling.
    pub fn azcmagent_cloud(self) -> &'static str {
        match self {
            Cloud::AzurePublicCloud => "AzureCloud",
            Cloud::AzureUSGovernmentCloud => "AzureUSGovernment",
            Cloud::AzureChinaCloud => "AzureChinaCloud",
        }
    }

    /// Parses a config value case-insensitively (surrounding whitespace ignored).
    pub fn parse(s: &str) -> Option<Cloud> {
        let s = s.trim();
        Cloud::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

/// Azure settings.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AzureConfig {
    /// Subscription GUID (from `azure.subscriptionId`, or the cluster resource ID when absent).
    pub subscription_id: String,
    /// Entra tenant GUID.
    pub tenant_id: String,
    /// Cloud environment.
    pub cloud: Cloud,
    /// ARM endpoint override.
    pub resource_manager_endpoint: Option<String>,
    /// Entra authority override.
    pub active_directory_endpoint: Option<String>,
    /// Extra CA bundle for Azure endpoints.
    pub ca_bundle: Option<PathBuf>,
    /// Service principal auth; `None` with no managed identity means Azure CLI auth.
    pub service_principal: Option<ServicePrincipal>,
    /// Managed identity auth.
    pub managed_identity: Option<ManagedIdentity>,
    /// Arc registration.
    pub arc: ArcConfig,
    /// The target AKS cluster.
    pub target_cluster: TargetCluster,
    /// Agent pool name (newer shape).
    pub target_agent_pool_name: Option<String>,
}

/// Service principal credentials.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipal {
    /// Tenant GUID (falls back to `azure.tenantId`).
    pub tenant_id: String,
    /// Application (client) GUID.
    pub client_id: String,
    /// The client secret (from `clientSecret`, `clientSecretFile` or AZURE_CLIENT_SECRET).
    pub client_secret: Secret,
}

/// Managed identity.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedIdentity {
    /// User-assigned identity client GUID; `None` = system-assigned.
    pub client_id: Option<String>,
}

/// Arc registration.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArcConfig {
    /// Register with Arc (default true).
    pub enabled: bool,
    /// Arc machine name (default: host name).
    pub machine_name: String,
    /// Resource tags (keys keep their case).
    pub tags: BTreeMap<String, String>,
    /// Resource group (default: the cluster's).
    pub resource_group: String,
    /// Region (default: the cluster's).
    pub location: String,
    /// Assign roles to the Arc identity (default true); false = only verify an administrator did.
    pub auto_role_assignment: bool,
    /// Roles for the Arc identity at the cluster scope, resolved to role-definition GUIDs (default:
    /// the original's three), without duplicates; may be empty.
    pub roles: Vec<crate::model::RoleSpec>,
    /// Take over an existing machine resource this agent did not create (default false).
    pub adopt_existing: bool,
    /// Absolute path of `azcmagent`; `None` = `azcmagent` on PATH.
    pub azcmagent_path: Option<std::path::PathBuf>,
}

/// The target cluster, with the parts parsed from its resource ID.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetCluster {
    /// Full ARM resource ID as given.
    pub resource_id: String,
    /// Region.
    pub location: String,
    /// Subscription parsed from the resource ID.
    pub subscription_id: String,
    /// Resource group parsed from the resource ID.
    pub resource_group: String,
    /// Cluster name parsed from the resource ID.
    pub name: String,
}

/// Log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LogLevel {
    /// debug
    Debug,
    /// info (default)
    #[default]
    Info,
    /// warning (`warn` is accepted)
    Warning,
    /// error
    Error,
}

impl LogLevel {
    /// Parses case-insensitively, trimmed; `warn` means Warning.
    pub fn parse(s: &str) -> Option<LogLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warning" | "warn" => Some(LogLevel::Warning),
            "error" => Some(LogLevel::Error),
            _ => None,
        }
    }
}

/// Agent settings.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    /// Log level.
    pub log_level: LogLevel,
    /// Log directory.
    pub log_dir: PathBuf,
    /// Kubernetes node name (RFC 1123, lower case).
    pub node_name: String,
    /// Where the daemon serves metrics; `None` = off.
    pub metrics_address: Option<MetricsAddress>,
}

/// A listen address for the metrics endpoint: loopback TCP or a unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAddress {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl MetricsAddress {
    /// `IP:PORT` with a loopback IP, or `unix:/absolute/path`.
    pub fn parse(s: &str) -> Result<MetricsAddress, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            return if path.starts_with('/') && !path.contains('\0') {
                Ok(MetricsAddress::Unix(PathBuf::from(path)))
            } else {
                Err("is not a usable unix socket; expected unix:/ABSOLUTE/PATH".into())
            };
        }
        match s.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => Ok(MetricsAddress::Tcp(a)),
            Ok(_) => Err("is not a loopback address; the metrics endpoint has no authentication, so it listens only on 127.0.0.1, [::1] or a unix socket (unix:/run/aks-flex-node/metrics.sock)".into()),
            Err(_) => Err("is not an address; expected IP:PORT on loopback (e.g. 127.0.0.1:9469) or unix:/ABSOLUTE/PATH".into()),
        }
    }
}

impl std::fmt::Display for MetricsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddress::Tcp(a) => write!(f, "{a}"),
            MetricsAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Serialize for MetricsAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Kubernetes binaries.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesConfig {
    /// Full version `x.y.z` without a leading `v`.
    pub version: String,
    /// Download URL template (two `%s`: version, arch); `None` = artifacts default.
    pub url_template: Option<String>,
    /// Expected digests.
    pub sha256: KubeSha256,
    /// Install kubeadm too (default false; the agent never runs it).
    pub install_kubeadm: bool,
}

/// Expected sha256 digests of the Kubernetes binaries (lower-case hex).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeSha256 {
    /// kubelet.
    pub kubelet: Option<String>,
    /// kubectl.
    pub kubectl: Option<String>,
    /// kubeadm.
    pub kubeadm: Option<String>,
}

/// containerd.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerdConfig {
    /// Version (default 1.7.20).
    pub version: String,
    /// Pause image (default mcr.microsoft.com/oss/kubernetes/pause:3.6).
    pub pause_image: String,
    /// Metrics address (default 127.0.0.1:1338, deliberately not the original's 0.0.0.0).
    pub metrics_address: String,
    /// Expected tarball digest.
    pub sha256: Option<String>,
}

/// runc.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuncConfig {
    /// Version (default 1.1.12).
    pub version: String,
    /// Expected binary digest.
    pub sha256: Option<String>,
}

/// CNI mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CniMode {
    /// Install the bridge plugin config (default).
    #[default]
    Bridge,
    /// Install the plugins but no network config (a cluster CNI provides it).
    None,
}

/// CNI plugins.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CniConfig {
    /// Version (default 1.5.1).
    pub version: String,
    /// Expected tarball digest.
    pub sha256: Option<String>,
    /// Mode.
    pub mode: CniMode,
}

/// Node Problem Detector.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NpdConfig {
    /// Not turned off (`npd.enabled: false`). Default true: installed when a verified digest is available,
    /// else skipped with a warning (see `enabled_explicitly`).
    pub enabled: bool,
    /// `npd.enabled` was given in the config. An explicit `true` with no digest source is refused instead
    /// of skipped.
    pub enabled_explicitly: bool,
    /// Version with leading `v` (default v1.35.1).
    pub version: String,
    /// Expected tarball digest.
    pub sha256: Option<String>,
}

/// Taint effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TaintEffect {
    /// NoSchedule
    NoSchedule,
    /// PreferNoSchedule
    PreferNoSchedule,
    /// NoExecute
    NoExecute,
}

impl TaintEffect {
    /// Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    /// Key (label-key syntax).
    pub key: String,
    /// Optional value (label-value syntax).
    pub value: Option<String>,
    /// Effect.
    pub effect: TaintEffect,
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}:{}", self.key, v, self.effect.as_str()),
            None => write!(f, "{}:{}", self.key, self.effect.as_str()),
        }
    }
}

/// Node settings.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfig {
    /// Max pods, 1..=250 (default 110).
    pub max_pods: u32,
    /// User labels as written. The kubelet renderer adds `kubernetes.azure.com/managed=false`.
    pub labels: BTreeMap<String, String>,
    /// Registration taints.
    pub taints: Vec<Taint>,
    /// kubelet settings.
    pub kubelet: KubeletConfig,
}

/// kubelet settings.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfig {
    /// --kube-reserved.
    pub kube_reserved: BTreeMap<String, String>,
    /// --eviction-hard (keys like `memory.available` kept as written).
    pub eviction_hard: BTreeMap<String, String>,
    /// Verbosity (default 2).
    pub verbosity: u32,
    /// Image GC high threshold (default 85).
    #[serde(rename = "imageGCHighThreshold")]
    pub image_gc_high_threshold: u8,
    /// Image GC low threshold (default 80), below high.
    #[serde(rename = "imageGCLowThreshold")]
    pub image_gc_low_threshold: u8,
    /// API server URL (absolute https), from serverURL or clusterFQDN.
    #[serde(rename = "serverURL")]
    pub server_url: Option<String>,
    /// Base64 PEM CA certificate of the API server.
    pub ca_cert_data: Option<String>,
    /// Node IP.
    #[serde(rename = "nodeIP")]
    pub node_ip: Option<IpAddr>,
}

/// Networking.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkingConfig {
    /// This node's pod range as written (validated IPv4/IPv6 CIDR).
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    /// The cluster's whole pod CIDR (default AKS's 10.244.0.0/16), normalised.
    #[serde(rename = "clusterPodCIDR")]
    pub cluster_pod_cidr: String,
    /// The bridge CNI's range for this node (`None` with `cni.mode: none`).
    pub node_pod_range: Option<NodePodRange>,
    /// Cluster DNS service IP.
    #[serde(rename = "dnsServiceIP")]
    pub dns_service_ip: Option<IpAddr>,
}

/// The pod range of this node's bridge network and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePodRange {
    /// Network address/prefix, host bits cleared (e.g. `10.245.17.0/24`).
    pub cidr: String,
    /// Where it came from, for `plan` and `config show`: `networking.podCIDR`, or derived from the node name.
    pub source: String,
}

/// Host paths.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathsConfig {
    /// Kubernetes paths.
    pub kubernetes: KubernetesPaths,
}

/// Kubernetes host paths (original defaults).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesPaths {
    /// /etc/kubernetes
    pub config_dir: PathBuf,
    /// /etc/kubernetes/certs
    pub certs_dir: PathBuf,
    /// /etc/kubernetes/manifests
    pub manifests_dir: PathBuf,
    /// /etc/kubernetes/volumeplugins
    pub volume_plugin_dir: PathBuf,
    /// /var/lib/kubelet
    pub kubelet_dir: PathBuf,
}

/// Bootstrap sources.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapConfig {
    /// Offline bundle: absolute directory or `file://` URL.
    pub offline_artifacts: Option<String>,
}

/// Artifact sources.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactsConfig {
    /// Mirror base URL (http or https).
    pub mirror: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_parse_case_insensitively() {
        assert_eq!(
            Cloud::parse(" azurechinacloud "),
            Some(Cloud::AzureChinaCloud)
        );
        assert_eq!(Cloud::parse("public"), None);
        assert_eq!(LogLevel::parse("WARN"), Some(LogLevel::Warning));
        assert_eq!(LogLevel::parse("trace"), None);
        assert_eq!(
            serde_json::to_string(&Cloud::AzureUSGovernmentCloud)
                .ok()
                .as_deref(),
            Some("\"AzureUSGovernmentCloud\"")
        );
    }
}

#[cfg(test)]
mod metrics_address_tests {
    use super::MetricsAddress;
    use proptest::prelude::*;

    #[test]
    fn loopback_and_unix_sockets_only() {
        assert_eq!(
            MetricsAddress::parse("127.0.0.1:9469").unwrap().to_string(),
            "127.0.0.1:9469"
        );
        assert_eq!(
            MetricsAddress::parse("[::1]:9469").unwrap().to_string(),
            "[::1]:9469"
        );
        assert_eq!(
            MetricsAddress::parse("unix:/run/aks-flex-node/metrics.sock").unwrap(),
            MetricsAddress::Unix("/run/aks-flex-node/metrics.sock".into())
        );
        for (bad, why) in [
            ("0.0.0.0:9469", "not a loopback"),
            ("10.0.0.4:9469", "not a loopback"),
            ("unix:metrics.sock", "ABSOLUTE"),
            ("localhost:9469", "not an address"),
            ("127.0.0.1", "not an address"),
        ] {
            let e = MetricsAddress::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    proptest! {
        #[test]
        fn any_socket_address_is_accepted_exactly_when_loopback(ip in any::<std::net::IpAddr>(), port in any::<u16>()) {
            let a = std::net::SocketAddr::new(ip, port);
            let parsed = MetricsAddress::parse(&a.to_string());
            prop_assert_eq!(parsed.is_ok(), ip.is_loopback());
            if let Ok(m) = parsed {
                prop_assert_eq!(MetricsAddress::parse(&m.to_string()).unwrap(), m);
            }
        }
    }
}
