//! The cluster a node joins.

/// Where the cluster's API server is and which CA signs it: found by the identity phase
/// (`listClusterUserCredential`) or given in the config (`node.kubelet.serverURL` + `caCertData`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEndpoint {
    pub server: String,
    /// PEM bytes of the cluster CA.
    pub ca_pem: Vec<u8>,
    /// The cluster DNS service (`properties.networkProfile.dnsServiceIP` of the managed cluster), when
    /// the identity phase read it; the kubelet's `clusterDNS` unless `networking.dnsServiceIP` is set.
    pub dns_service_ip: Option<std::net::IpAddr>,
}
