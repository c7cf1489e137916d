//! The bridge CNI config `/etc/cni/net.d/10-bridge.conf` (the original's, with a per-node pod range).

use std::net::IpAddr;

pub const CONF_PATH: &str = "/etc/cni/net.d/10-bridge.conf";
/// The original gave every node this range; kept only as the fallback when `networking.podCIDR` is unset.
pub const DEFAULT_POD_CIDR: &str = "10.244.0.0/16";

/// `(network address, gateway = first host)` of a CIDR, or an error naming the problem.
pub fn subnet_and_gateway(cidr: &str) -> Result<(String, String), String> {
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| format!("{cidr:?} is not a CIDR (expected e.g. 10.244.3.0/24)"))?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{cidr:?}: {addr:?} is not an IP address"))?;
    let len: u32 = len
        .parse()
        .map_err(|_| format!("{cidr:?}: bad prefix length"))?;
    match ip {
        IpAddr::V4(v4) => {
            if len > 30 {
                return Err(format!(
                    "{cidr:?}: a pod range needs a prefix of /30 or shorter"
                ));
            }
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let net = u32::from(v4) & mask;
            Ok((
                format!("{}/{len}", std::net::Ipv4Addr::from(net)),
                std::net::Ipv4Addr::from(net + 1).to_string(),
            ))
        }
        IpAddr::V6(v6) => {
            if len > 126 {
                return Err(format!(
                    "{cidr:?}: a pod range needs a prefix of /126 or shorter"
                ));
            }
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            let net = u128::from(v6) & mask;
            Ok((
                format!("{}/{len}", std::net::Ipv6Addr::from(net)),
                std::net::Ipv6Addr::from(net + 1).to_string(),
            ))
        }
    }
}

/// The bridge config for `pod_cidr`.
pub fn bridge_conf(pod_cidr: &str) -> Result<String, String> {
    let (subnet, gateway) = subnet_and_gateway(pod_cidr)?;
    let default_route = if subnet.contains(':') {
        "::/0"
    } else {
        "0.0.0.0/0"
    };
    let v = serde_json::json!({
        "cniVersion": "0.3.1",
        "name": "bridge",
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "ipMasq": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet, "gateway": gateway}]],
            "routes": [{"dst": default_route}]
        }
    });
    Ok(format!(
        "{}\n",
        serde_json::to_string_pretty(&v).unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bridge_conf_golden() {
        insta::assert_snapshot!(bridge_conf("10.244.3.0/24").unwrap());
    }

    #[test]
    fn host_bits_are_cleared_and_v6_works() {
        assert_eq!(
            subnet_and_gateway("10.244.3.77/24").unwrap(),
            ("10.244.3.0/24".into(), "10.244.3.1".into())
        );
        assert_eq!(
            subnet_and_gateway("fd00:1::/64").unwrap(),
            ("fd00:1::/64".into(), "fd00:1::1".into())
        );
        assert!(subnet_and_gateway("10.0.0.0/31").is_err());
        assert!(subnet_and_gateway("nonsense").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = subnet_and_gateway(&s);
        }
    }
}
