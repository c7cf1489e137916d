//! The on-disk shape of the config file.
//!
//! Every field is optional here: defaults, legacy-to-new mapping and validation happen in
//! `build`. Both the original (seed-era) keys and the newer shape (`components.*`,
//! `azure.bootstrapToken` (refused), `azure.managedIdentity`, `node.taints`, ...) are declared, so that the
//! JSON Schema printed by `config schema` (generated from these types) describes everything the
//! loader accepts. Keys are matched case-insensitively before these types see them (see `keys`),
//! so the spellings below are the canonical ones shown in the schema and in messages.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::model::Secret;

/// aks-flex-node configuration file (JSON). Keys are case-insensitive; map keys (labels, tags,
/// kubeReserved, evictionHard) are kept exactly as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "aks-flex-node configuration")]
pub struct ConfigFile {
    /// Azure identity, Arc registration and the target AKS cluster.
    pub azure: Option<AzureFile>,
    /// Agent behaviour: logging and node name.
    pub agent: Option<AgentFile>,
    /// Kubernetes binaries (kubelet, kubectl; kubeadm on request).
    pub kubernetes: Option<KubernetesFile>,
    /// Component versions in the newer shape (`components.kubernetes.version`, ...).
    pub components: Option<ComponentsFile>,
    /// containerd runtime.
    pub containerd: Option<ContainerdFile>,
    /// runc low-level runtime.
    pub runc: Option<RuncFile>,
    /// CNI plugins.
    pub cni: Option<CniFile>,
    /// Node Problem Detector.
    pub npd: Option<NpdFile>,
    /// Kubernetes node settings.
    pub node: Option<NodeFile>,
    /// Cluster networking.
    pub networking: Option<NetworkingFile>,
    /// Host paths used by Kubernetes components.
    pub paths: Option<PathsFile>,
    /// Bootstrap sources (offline artifact bundle).
    pub bootstrap: Option<BootstrapFile>,
    /// Where component artifacts are downloaded from.
    pub artifacts: Option<ArtifactsFile>,
    /// Accepted for compatibility with newer AKSFlexNode configs; not supported, ignored with a warning.
    pub host_routing: Option<serde_json::Value>,
}

/// Azure settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureFile {
    /// Subscription GUID used for Arc and role definitions. Derived from
    /// `targetCluster.resourceId` when absent.
    pub subscription_id: Option<String>,
    /// Entra tenant GUID. Required.
    pub tenant_id: Option<String>,
    /// Azure cloud: AzurePublicCloud (default), AzureUSGovernmentCloud or AzureChinaCloud.
    pub cloud: Option<String>,
    /// Override of the Azure Resource Manager endpoint (https URL).
    pub resource_manager_endpoint: Option<String>,
    /// Override of the Entra (Active Directory) authority endpoint (https URL).
    pub active_directory_endpoint: Option<String>,
    /// Absolute path of a PEM CA bundle to trust for Azure endpoints.
    pub ca_bundle: Option<String>,
    /// Service principal credentials. Mutually exclusive with managedIdentity.
    pub service_principal: Option<ServicePrincipalFile>,
    /// Managed identity (Azure VM IMDS). Mutually exclusive with servicePrincipal.
    pub managed_identity: Option<ManagedIdentityFile>,
    /// Newer-shape key for kubelet TLS bootstrapping with a Kubernetes bootstrap token. Not supported
    /// yet: a config that sets it is refused (the kubelet joins with the Arc identity's Entra tokens).
    pub bootstrap_token: Option<BootstrapTokenFile>,
    /// Azure Arc registration.
    pub arc: Option<ArcFile>,
    /// The AKS cluster this node joins. Required.
    pub target_cluster: Option<TargetClusterFile>,
    /// Agent pool the node belongs to (newer shape).
    pub target_agent_pool_name: Option<String>,
}

/// Service principal credentials. The secret comes from exactly one of `clientSecret`,
/// `clientSecretFile` or the environment variable AZURE_CLIENT_SECRET.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipalFile {
    /// Tenant GUID of the service principal; defaults to `azure.tenantId`.
    pub tenant_id: Option<String>,
    /// Application (client) GUID.
    pub client_id: Option<String>,
    /// Client secret inline. Prefer clientSecretFile or AZURE_CLIENT_SECRET.
    pub client_secret: Option<Secret>,
    /// Absolute path of a file holding the client secret (one trailing newline is ignored).
    pub client_secret_file: Option<String>,
}

/// Managed identity settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedIdentityFile {
    /// Client GUID of a user-assigned identity; absent means the system-assigned identity.
    pub client_id: Option<String>,
}

/// Kubernetes bootstrap token (not supported yet; refused).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapTokenFile {
    /// Token in the form `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub token: Option<Secret>,
}

/// Azure Arc registration settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArcFile {
    /// Register the machine with Azure Arc (default true).
    pub enabled: Option<bool>,
    /// Arc machine resource name (default: the host name).
    pub machine_name: Option<String>,
    /// Tags put on the Arc machine resource.
    pub tags: Option<BTreeMap<String, String>>,
    /// Resource group of the Arc machine (default: the cluster's resource group).
    pub resource_group: Option<String>,
    /// Azure region of the Arc machine (default: targetCluster.location).
    pub location: Option<String>,
    /// Assign the Arc identity its roles on the cluster automatically (default true). With false the
    /// agent assigns nothing but checks that an administrator did, and fails listing what is missing.
    pub auto_role_assignment: Option<bool>,
    /// Roles the Arc identity gets on the cluster: built-in role names or role-definition GUIDs.
    /// Default: Reader, Azure Kubernetes Service RBAC Cluster Admin, Azure Kubernetes Service Cluster
    /// Admin Role (the original's three).
    pub roles: Option<Vec<String>>,
    /// Take over an existing Arc machine resource of the same name that this agent did not create
    /// (default false: refuse, it may belong to another host). `AKS_FLEX_NODE_ARC_ADOPT=1|0` overrides.
    pub adopt_existing: Option<bool>,
    /// Path of the `azcmagent` program (default: `azcmagent` on PATH). `AKS_FLEX_NODE_AZCMAGENT`
    /// overrides.
    pub azcmagent_path: Option<String>,
}

/// The target AKS cluster.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetClusterFile {
    /// `/subscriptions/<guid>/resourceGroups/<rg>/providers/Microsoft.ContainerService/managedClusters/<name>`
    pub resource_id: Option<String>,
    /// Azure region of the cluster, e.g. `westus`.
    pub location: Option<String>,
}

/// Agent settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentFile {
    /// Log level: debug, info (default), warning (or warn), error. Case-insensitive.
    pub log_level: Option<String>,
    /// Log directory (default /var/log/aks-flex-node).
    pub log_dir: Option<String>,
    /// Kubernetes node name (default: the host name), normalised to RFC 1123 lower case.
    pub node_name: Option<String>,
    /// Serve Prometheus metrics here: a loopback `IP:PORT` (e.g. `127.0.0.1:9469`) or
    /// `unix:/ABSOLUTE/PATH`. Off when absent. The endpoint has no authentication, so other addresses are
    /// refused.
    pub metrics_address: Option<String>,
    /// Newer-shape key accepted for compatibility; not supported, ignored with a warning.
    pub machine_client: Option<serde_json::Value>,
    /// Newer-shape key accepted for compatibility; not supported, ignored with a warning.
    pub machine_reconcile_interval: Option<serde_json::Value>,
    /// Newer-shape key accepted for compatibility; not supported, ignored with a warning.
    pub require_machine_registration: Option<serde_json::Value>,
    /// Newer-shape key accepted for compatibility; not supported, ignored with a warning.
    pub machine_operation_mode: Option<serde_json::Value>,
}

/// Kubernetes binaries.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesFile {
    /// Full Kubernetes version `x.y.z` (a leading `v` is accepted). Required.
    pub version: Option<String>,
    /// Download URL template with two `%s`: version (without v), then architecture.
    pub url_template: Option<String>,
    /// Expected sha256 digests of the binaries.
    pub sha256: Option<KubeSha256File>,
    /// Also install `/usr/local/bin/kubeadm` (default false). The agent never runs kubeadm: it joins the
    /// node itself; this only puts the tool on the machine for operators.
    pub install_kubeadm: Option<bool>,
}

/// Expected sha256 digests (64 hex characters) of the Kubernetes binaries.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeSha256File {
    /// kubelet digest.
    pub kubelet: Option<String>,
    /// kubectl digest.
    pub kubectl: Option<String>,
    /// kubeadm digest.
    pub kubeadm: Option<String>,
}

/// Newer-shape component block.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentsFile {
    /// Same as `kubernetes.version`.
    pub kubernetes: Option<ComponentVersionFile>,
    /// Same as `containerd.version`.
    pub containerd: Option<ComponentVersionFile>,
    /// Same as `runc.version`.
    pub runc: Option<ComponentVersionFile>,
    /// Same as `containerd.pauseImage`.
    pub sandbox_image: Option<String>,
}

/// A component version.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentVersionFile {
    /// Full version `x.y.z`.
    pub version: Option<String>,
}

/// containerd settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerdFile {
    /// containerd version (default 1.7.20).
    pub version: Option<String>,
    /// Pause (sandbox) image (default mcr.microsoft.com/oss/kubernetes/pause:3.6).
    pub pause_image: Option<String>,
    /// containerd metrics listen address (default 127.0.0.1:1338; avoid the ports Kubernetes components use).
    pub metrics_address: Option<String>,
    /// Expected sha256 of the containerd tarball.
    pub sha256: Option<String>,
}

/// runc settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuncFile {
    /// runc version (default 1.1.12).
    pub version: Option<String>,
    /// Unused by the original; accepted and ignored with a warning.
    pub url: Option<String>,
    /// Expected sha256 of the runc binary.
    pub sha256: Option<String>,
}

/// CNI settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CniFile {
    /// CNI plugins version (default 1.5.1).
    pub version: Option<String>,
    /// Expected sha256 of the CNI plugins tarball.
    pub sha256: Option<String>,
    /// CNI mode: bridge (default) or none.
    pub mode: Option<String>,
}

/// Node Problem Detector settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NpdFile {
    /// Install and run NPD. Unset: installed when a verified digest is available (npd.sha256, an offline
    /// bundle, a mirror), else skipped with a warning; true: required (refused without a digest).
    pub enabled: Option<bool>,
    /// NPD version (default v1.35.1); a missing leading v is added.
    pub version: Option<String>,
    /// Expected sha256 of the NPD tarball.
    pub sha256: Option<String>,
}

/// Kubernetes node settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeFile {
    /// Maximum pods on this node, 1..=250 (default 110).
    pub max_pods: Option<i64>,
    /// Node labels (keys keep their case and dots).
    pub labels: Option<BTreeMap<String, String>>,
    /// Registration taints in the form `key[=value]:Effect`.
    pub taints: Option<Vec<String>>,
    /// kubelet settings.
    pub kubelet: Option<KubeletFile>,
}

/// kubelet settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeletFile {
    /// --kube-reserved entries, e.g. {"cpu": "100m"}.
    pub kube_reserved: Option<BTreeMap<String, String>>,
    /// --eviction-hard entries, e.g. {"memory.available": "100Mi"}.
    pub eviction_hard: Option<BTreeMap<String, String>>,
    /// kubelet log verbosity (default 2; 0 means default).
    pub verbosity: Option<i64>,
    /// Image GC high threshold percent (default 85).
    #[serde(rename = "imageGCHighThreshold")]
    pub image_gc_high_threshold: Option<i64>,
    /// Image GC low threshold percent (default 80); must be below the high threshold.
    #[serde(rename = "imageGCLowThreshold")]
    pub image_gc_low_threshold: Option<i64>,
    /// API server URL (absolute https).
    #[serde(rename = "serverURL")]
    pub server_url: Option<String>,
    /// API server host name; same as serverURL `https://<clusterFQDN>:443`.
    #[serde(rename = "clusterFQDN")]
    pub cluster_fqdn: Option<String>,
    /// Base64-encoded PEM CA certificate of the API server.
    pub ca_cert_data: Option<String>,
    /// Node IP address to advertise.
    #[serde(rename = "nodeIP")]
    pub node_ip: Option<String>,
}

/// Cluster networking.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkingFile {
    /// This node's own pod range for the bridge CNI (IPv4 or IPv6), e.g. 10.245.3.0/24. Must not equal
    /// or contain clusterPodCIDR. Unset: a /24 in 10.245.0.0/16 derived from the node name.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    /// The cluster's whole pod CIDR (default 10.244.0.0/16, AKS's default); only used to check that
    /// this node's range cannot collide with the pods of other nodes.
    #[serde(rename = "clusterPodCIDR")]
    pub cluster_pod_cidr: Option<String>,
    /// Cluster DNS service IP.
    #[serde(rename = "dnsServiceIP")]
    pub dns_service_ip: Option<String>,
    /// Same as `cni.version`.
    pub cni_version: Option<String>,
}

/// Host paths.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathsFile {
    /// Kubernetes paths.
    pub kubernetes: Option<KubernetesPathsFile>,
}

/// Kubernetes host paths (absolute).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesPathsFile {
    /// Default /etc/kubernetes.
    pub config_dir: Option<String>,
    /// Default /etc/kubernetes/certs.
    pub certs_dir: Option<String>,
    /// Default /etc/kubernetes/manifests.
    pub manifests_dir: Option<String>,
    /// Default /etc/kubernetes/volumeplugins.
    pub volume_plugin_dir: Option<String>,
    /// Default /var/lib/kubelet.
    pub kubelet_dir: Option<String>,
}

/// Bootstrap sources.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapFile {
    /// Offline artifact bundle.
    pub offline_artifacts: Option<OfflineArtifactsFile>,
    /// Newer-shape key accepted for compatibility; not supported, ignored with a warning.
    pub oci_image: Option<serde_json::Value>,
    /// Newer-shape key accepted for compatibility; not supported, ignored with a warning.
    pub additional_host_devices: Option<serde_json::Value>,
}

/// Offline artifact bundle.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfflineArtifactsFile {
    /// Absolute directory path or `file://` URL of the bundle.
    pub source: Option<String>,
}

/// Artifact download settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactsFile {
    /// http(s) base URL of a mirror of the upstream artifacts.
    pub mirror: Option<String>,
}
