//! The `node` section: max pods, labels, taints and the kubelet settings (reservations, eviction
//! thresholds, verbosity, image GC, the API server and its CA, the node IP).

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine;

use super::check::{given, q, same_url, B};
use crate::config::file;
use crate::config::keys::join_map;
use crate::config::model::*;
use crate::config::parse;
use crate::config::Problem;

pub(super) fn node(b: &mut B, nodef: file::NodeFile) -> NodeConfig {
    let max_pods = match nodef.max_pods {
        None => 110,
        Some(m) if (1..=250).contains(&m) => m as u32,
        Some(m) => {
            b.bad(
                "node.maxPods",
                Some(&m.to_string()),
                "is out of range; expected a number from 1 to 250",
            );
            110
        }
    };
    let labels = nodef.labels.unwrap_or_default();
    check_labels(b, &labels);
    let taints = taints(b, nodef.taints.unwrap_or_default());
    let kubelet = kubelet(b, nodef.kubelet.unwrap_or_default());
    NodeConfig {
        max_pods,
        labels,
        taints,
        kubelet,
    }
}

/// Label keys and values must be valid, and keys ones a kubelet may set on its own Node.
fn check_labels(b: &mut B, labels: &BTreeMap<String, String>) {
    for (key, v) in labels {
        let field = join_map("node.labels", key);
        if !parse::is_label_key(key) {
            b.problems.push(Problem { field: field.clone(), value: Some(q(key)), expected: "is not a valid label key; expected [prefix/]name, name up to 63 characters of letters, digits, '-', '_', '.', prefix a DNS subdomain".into() });
        }
        if !parse::is_label_value(v) {
            b.bad(&field, Some(v), "is not a valid label value; expected up to 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit");
        }
        if parse::is_label_key(key) && !parse::kubelet_may_self_set_label(key) {
            b.problems.push(Problem {
                field: field.clone(),
                value: Some(q(key)),
                expected: format!(
                    "is in the kubernetes.io / k8s.io label namespace, which a kubelet may not set on its own Node (NodeRestriction admission): the kubelet refuses to start with it. Expected a label under kubelet.kubernetes.io/ or node.kubernetes.io/, one of {}, or another prefix (e.g. example.com/); or apply it after the node joined: kubectl label node <node> {key}={v}",
                    parse::KUBELET_SELF_LABELS.join(", ")
                ),
            });
        }
    }
}

fn taints(b: &mut B, list: Vec<String>) -> Vec<Taint> {
    let mut taints = Vec::new();
    for (i, t) in list.iter().enumerate() {
        match parse::parse_taint(t.trim()) {
            Ok(t) => taints.push(t),
            Err(why) => b.bad(&format!("node.taints[{i}]"), Some(t), format!("is not a taint ({why}); expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute")),
        }
    }
    taints
}

/// `node.kubelet`.
fn kubelet(b: &mut B, kl: file::KubeletFile) -> KubeletConfig {
    let kube_reserved = kl.kube_reserved.unwrap_or_default();
    let eviction_hard = kl.eviction_hard.unwrap_or_default();
    for (map, name) in [
        (&kube_reserved, "node.kubelet.kubeReserved"),
        (&eviction_hard, "node.kubelet.evictionHard"),
    ] {
        for (key, v) in map {
            if key.trim().is_empty()
                || v.trim().is_empty()
                || key.contains([',', '=', '<'])
                || v.contains([',', '=', '<'])
            {
                b.bad(&join_map(name, key), Some(v), "is not a usable entry; expected a non-empty name and value without ',', '=' or '<'");
            }
        }
    }
    let verbosity = match kl.verbosity {
        None | Some(0) => 2,
        Some(v) if (1..=10).contains(&v) => v as u32,
        Some(v) => {
            b.bad(
                "node.kubelet.verbosity",
                Some(&v.to_string()),
                "is out of range; expected 0 (default 2) to 10",
            );
            2
        }
    };
    let (high, low) = image_gc_thresholds(b, kl.image_gc_high_threshold, kl.image_gc_low_threshold);
    let server_url = server_url(b, kl.server_url, kl.cluster_fqdn);
    let ca_cert_data = given(kl.ca_cert_data).filter(|d| {
        let ok = is_base64_pem_cert(d);
        if !ok {
            b.bad(
                "node.kubelet.caCertData",
                Some(d),
                "is not a certificate; expected base64 of a PEM CERTIFICATE block",
            );
        }
        ok
    });
    let node_ip = given(kl.node_ip).and_then(|ip| match ip.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            b.bad(
                "node.kubelet.nodeIP",
                Some(&ip),
                "is not an IP address; expected IPv4 or IPv6, e.g. 192.168.1.10",
            );
            None
        }
    });
    KubeletConfig {
        kube_reserved,
        eviction_hard,
        verbosity,
        image_gc_high_threshold: high,
        image_gc_low_threshold: low,
        server_url,
        ca_cert_data,
        node_ip,
    }
}

/// The image GC thresholds (default 85 and 80), percentages with low below high.
fn image_gc_thresholds(b: &mut B, high: Option<i64>, low: Option<i64>) -> (u8, u8) {
    let mut pct = |field: &str, v: Option<i64>, d: u8| -> u8 {
        match v {
            None => d,
            Some(v) if (0..=100).contains(&v) => v as u8,
            Some(v) => {
                b.bad(
                    field,
                    Some(&v.to_string()),
                    "is out of range; expected a percentage from 0 to 100",
                );
                d
            }
        }
    };
    let high = pct("node.kubelet.imageGCHighThreshold", high, 85);
    let low = pct("node.kubelet.imageGCLowThreshold", low, 80);
    if low >= high {
        b.bad(
            "node.kubelet.imageGCLowThreshold",
            Some(&low.to_string()),
            format!("is not below node.kubelet.imageGCHighThreshold ({high}); expected low < high"),
        );
    }
    (high, low)
}

/// The API server URL: `node.kubelet.serverURL`, or `https://<clusterFQDN>:443`.
fn server_url(
    b: &mut B,
    server_url: Option<String>,
    cluster_fqdn: Option<String>,
) -> Option<String> {
    let fqdn_url = given(cluster_fqdn).and_then(|h| {
        let host = h.to_ascii_lowercase();
        if parse::is_rfc1123_subdomain(&host) {
            Some(format!("https://{host}:443"))
        } else {
            b.bad("node.kubelet.clusterFQDN", Some(&h), "is not a host name; expected the API server's DNS name without scheme or port, e.g. mycluster-dns-1234.hcp.westus.azmk8s.io");
            None
        }
    });
    let server_url = b.url("node.kubelet.serverURL", server_url, false);
    b.merge(
        ("node.kubelet.serverURL", server_url),
        ("node.kubelet.clusterFQDN", fqdn_url),
        same_url,
    )
    .map(|(_, v)| v)
}

fn is_base64_pem_cert(data: &str) -> bool {
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(cleaned) else {
        return false;
    };
    let Ok(pem) = String::from_utf8(bytes) else {
        return false;
    };
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let Some(start) = pem.find(BEGIN) else {
        return false;
    };
    let rest = &pem[start + BEGIN.len()..];
    let Some(end) = rest.find(END) else {
        return false;
    };
    let body: String = rest[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    !body.is_empty()
        && base64::engine::general_purpose::STANDARD
            .decode(body)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_cert_data_must_be_base64_pem_certificate() {
        let e = &base64::engine::general_purpose::STANDARD;
        let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
        assert!(is_base64_pem_cert(&e.encode(pem)));
        assert!(!is_base64_pem_cert(&e.encode(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
        )));
        assert!(!is_base64_pem_cert("not base64!"));
        assert!(!is_base64_pem_cert(&e.encode(
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----"
        )));
    }
}
