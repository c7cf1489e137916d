//! The bridge CNI network `/etc/cni/net.d/10-bridge.conflist`: a chain of `bridge` (with this node's pod
//! range, hairpin mode so a pod reaches its own Service VIP, NAT for traffic leaving the node) and
//! `portmap` (so `hostPort` works). The original wrote a single-plugin `10-bridge.conf`, which silently
//! ignored hostPort and had no hairpin; it is removed by CNISetup, since `10-bridge.conf` sorts before
//! `10-bridge.conflist` and the runtime uses the first network config by file name.

use std::net::IpAddr;

pub const CONFLIST_PATH: &str = "/etc/cni/net.d/10-bridge.conflist";
/// What the original (and this agent before the conflist) wrote; it would shadow the conflist.
pub const LEGACY_CONF_PATH: &str = "/etc/cni/net.d/10-bridge.conf";
/// CNI spec version of the conflist: 1.0.0 is supported by the plugins from 1.0 on (Debian 12's 1.1.1
/// included) and by containerd 1.6+.
pub const CNI_VERSION: &str = "1.0.0";

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

/// The bridge + portmap network list for `pod_cidr` (this node's own range).
pub fn bridge_conflist(pod_cidr: &str) -> Result<String, String> {
    let (subnet, gateway) = subnet_and_gateway(pod_cidr)?;
    let default_route = if subnet.contains(':') {
        "::/0"
    } else {
        "0.0.0.0/0"
    };
    let v = serde_json::json!({
        "cniVersion": CNI_VERSION,
        "name": "bridge",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                    "routes": [{"dst": default_route}]
                }
            },
            {
                "type": "portmap",
                "capabilities": {"portMappings": true}
            }
        ]
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
    fn bridge_conflist_golden() {
        insta::assert_snapshot!(bridge_conflist("10.245.3.0/24").unwrap());
    }

    #[test]
    fn conflist_chains_bridge_with_hairpin_and_portmap() {
        let v: serde_json::Value =
            serde_json::from_str(&bridge_conflist("10.245.3.9/24").unwrap()).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        let plugins = v["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 2);
        assert_eq!(plugins[0]["type"], "bridge");
        assert_eq!(plugins[0]["hairpinMode"], true);
        assert_eq!(plugins[0]["ipMasq"], true);
        assert_eq!(
            plugins[0]["ipam"]["ranges"][0][0]["subnet"],
            "10.245.3.0/24"
        );
        assert_eq!(plugins[1]["type"], "portmap");
        assert_eq!(plugins[1]["capabilities"]["portMappings"], true);
        // The legacy single-plugin name sorts first, so it must never be left next to the list.
        assert!(LEGACY_CONF_PATH < CONFLIST_PATH);
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
