//! The `networking` section: this node's pod range (given, or derived from the node name), the
//! cluster's pod CIDR, and the cluster DNS service IP.

use std::net::IpAddr;

use super::check::{given, q, B};
use crate::config::file;
use crate::config::model::*;
use crate::config::parse;

/// `networking`, without `cniVersion` (read with `cni`). The bridge CNI (`cni_mode`) needs a pod range.
pub(super) fn networking(
    b: &mut B,
    nf: file::NetworkingFile,
    cni_mode: CniMode,
    node_name: &str,
) -> NetworkingConfig {
    let pod_cidr = given(nf.pod_cidr).filter(|c| {
        let ok = parse::is_cidr(c);
        if !ok {
            b.bad(
                "networking.podCIDR",
                Some(c),
                "is not a CIDR; expected e.g. 10.245.1.0/24 or fd00:10:244:1::/64",
            );
        }
        ok
    });
    let cluster_pod_cidr = match given(nf.cluster_pod_cidr) {
        None => parse::Cidr::parse(parse::AKS_DEFAULT_POD_CIDR),
        Some(c) => {
            let parsed = parse::Cidr::parse(&c);
            if parsed.is_none() {
                b.bad(
                    "networking.clusterPodCIDR",
                    Some(&c),
                    "is not a CIDR; expected the cluster's pod CIDR, e.g. 10.244.0.0/16",
                );
            }
            parsed
        }
    };
    let node_pod_range = if cni_mode == CniMode::Bridge {
        node_pod_range(b, pod_cidr.as_deref(), cluster_pod_cidr, node_name)
    } else {
        None
    };
    let dns_service_ip = given(nf.dns_service_ip).and_then(|ip| match ip.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            b.bad(
                "networking.dnsServiceIP",
                Some(&ip),
                "is not an IP address; expected e.g. 10.0.0.10",
            );
            None
        }
    });
    NetworkingConfig {
        pod_cidr,
        cluster_pod_cidr: cluster_pod_cidr.map(|c| c.to_string()).unwrap_or_default(),
        node_pod_range,
        dns_service_ip,
    }
}

/// The bridge network's range for this node: `networking.podCIDR`, or a /24 derived from the node name.
/// A range that equals or contains the cluster's pod CIDR is a problem (this node's pods would take
/// addresses of pods on other nodes); one inside it is warned about (the cluster may hand the same range
/// to another node).
fn node_pod_range(
    b: &mut B,
    pod_cidr: Option<&str>,
    cluster: Option<parse::Cidr>,
    node_name: &str,
) -> Option<NodePodRange> {
    const FIELD: &str = "networking.podCIDR";
    let (range, source) = match pod_cidr {
        Some(c) => {
            let range = parse::Cidr::parse(c)?;
            let too_small = match range.addr {
                IpAddr::V4(_) => range.len > 30,
                IpAddr::V6(_) => range.len > 126,
            };
            if too_small {
                b.bad(
                    FIELD,
                    Some(c),
                    "is too small for a pod range; expected a prefix of /30 or shorter (/126 for IPv6), usually /24",
                );
                return None;
            }
            (range, FIELD.to_string())
        }
        None => {
            let range = parse::derived_pod_range(node_name);
            (
                range,
                format!(
                    "derived from the node name {} ({FIELD} is unset)",
                    q(node_name)
                ),
            )
        }
    };
    if let Some(cluster) = cluster {
        if range.contains(&cluster) {
            let what = if range == cluster { "is" } else { "contains" };
            b.bad(
                FIELD,
                pod_cidr,
                format!(
                    "{what} the cluster's whole pod CIDR {cluster} (networking.clusterPodCIDR): this node's pods would take addresses of pods on other nodes. Expected this node's own range, e.g. a /24 outside {cluster}, or leave it unset to derive one"
                ),
            );
            return None;
        }
        if cluster.overlaps(&range) {
            if pod_cidr.is_none() {
                b.bad(
                    FIELD,
                    None,
                    format!(
                        "is unset, and the range derived from the node name ({range}) overlaps networking.clusterPodCIDR {cluster}; expected this node's own range outside {cluster}"
                    ),
                );
                return None;
            }
            b.warnings.push(format!(
                "{FIELD} {range} lies inside the cluster's pod CIDR {cluster} (networking.clusterPodCIDR): the cluster may assign the same range to another node; a range outside it cannot collide"
            ));
        }
    }
    Some(NodePodRange {
        cidr: range.to_string(),
        source,
    })
}
