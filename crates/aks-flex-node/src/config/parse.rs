//! Small, total parsers for values found in the config: AKS resource IDs, versions, taints,
//! node names, label keys/values, CIDRs, GUIDs and digests.
//!
//! Each returns a `Result`/`Option`/`bool` and never panics on any input (property-tested),
//! so `build` can turn every failure into a `Problem`.

use std::net::IpAddr;

use super::model::{Taint, TaintEffect};

/// The parts of an AKS managed-cluster resource ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterId {
    /// Subscription GUID.
    pub subscription_id: String,
    /// Resource group.
    pub resource_group: String,
    /// Cluster name.
    pub name: String,
}

/// The format shown in errors about `targetCluster.resourceId`.
pub const RESOURCE_ID_FORMAT: &str = "/subscriptions/<guid>/resourceGroups/<rg>/providers/Microsoft.ContainerService/managedClusters/<name>";

/// True for `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex, either case).
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// RG and cluster-name charset as the original's regex: `[a-zA-Z0-9_\-\.]+`.
fn is_arm_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Parses an AKS cluster resource ID. The fixed segments match case-insensitively (ARM IDs are
/// case-insensitive; the original's case-sensitive regex rejected `resourcegroups`).
pub fn parse_resource_id(s: &str) -> Option<ClusterId> {
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() != 9 || !parts[0].is_empty() {
        return None;
    }
    let fixed = [
        (1, "subscriptions"),
        (3, "resourceGroups"),
        (5, "providers"),
        (6, "Microsoft.ContainerService"),
        (7, "managedClusters"),
    ];
    if !fixed.iter().all(|(i, w)| parts[*i].eq_ignore_ascii_case(w)) {
        return None;
    }
    if !is_guid(parts[2]) || !is_arm_name(parts[4]) || !is_arm_name(parts[8]) {
        return None;
    }
    Some(ClusterId {
        subscription_id: parts[2].to_string(),
        resource_group: parts[4].to_string(),
        name: parts[8].to_string(),
    })
}

/// Why a version string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionError {
    /// Only `major.minor` (or `major`) was given.
    Partial,
    /// Not a version at all.
    Invalid,
}

fn is_numeric_part(s: &str) -> bool {
    !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses `x.y.z` with an optional leading `v` and an optional semver `-pre`/`+build` suffix.
/// Returns the version without the `v`.
pub fn parse_version(s: &str) -> Result<String, VersionError> {
    let s = s.trim();
    let s = s
        .strip_prefix('v')
        .or_else(|| s.strip_prefix('V'))
        .unwrap_or(s);
    let (core, suffix) = match s.find(['-', '+']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    if let Some(suffix) = suffix {
        let ok = !suffix.is_empty()
            && suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'));
        if !ok {
            return Err(VersionError::Invalid);
        }
    }
    let nums: Vec<&str> = core.split('.').collect();
    if !nums.iter().all(|n| is_numeric_part(n)) {
        return Err(VersionError::Invalid);
    }
    match nums.len() {
        3 => Ok(s.to_string()),
        1 | 2 if suffix.is_none() => Err(VersionError::Partial),
        _ => Err(VersionError::Invalid),
    }
}

/// True for a Kubernetes label value: empty, or up to 63 characters of `[A-Za-z0-9._-]`
/// starting and ending with an alphanumeric.
pub fn is_label_value(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    s.len() <= 63 && is_qualified_part(s)
}

fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// True for a Kubernetes label (or taint) key: `[prefix/]name`, prefix an RFC 1123 subdomain,
/// name up to 63 characters.
pub fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if !is_rfc1123_subdomain(p) {
            return false;
        }
    }
    name.len() <= 63 && is_qualified_part(name)
}

/// Label keys in the `kubernetes.io`/`k8s.io` namespaces that a kubelet may set on its own Node
/// (`KubeletLabels()` in the kubelet's `well_known_labels.go`).
pub const KUBELET_SELF_LABELS: [&str; 12] = [
    "kubernetes.io/hostname",
    "kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
];

/// Label namespaces (with their subdomains) a kubelet may set on its own Node (`KubeletLabelNamespaces()`).
pub const KUBELET_SELF_LABEL_NAMESPACES: [&str; 2] =
    ["kubelet.kubernetes.io", "node.kubernetes.io"];

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
}

fn in_namespace(ns: &str, domain: &str) -> bool {
    ns == domain
        || ns
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// True when a node label key may be passed to the kubelet's `--node-labels`: the kubelet refuses to
/// start with a label in the `kubernetes.io` or `k8s.io` namespaces (`*.kubernetes.io/`, `*.k8s.io/`)
/// unless it is one it may set on its own Node under the NodeRestriction admission plugin (the same rule
/// as the kubelet's `IsKubeletLabel`). Every other prefix (`kubernetes.azure.com/`, `example.com/`, none)
/// is the user's.
pub fn kubelet_may_self_set_label(key: &str) -> bool {
    let ns = label_namespace(key);
    if !in_namespace(ns, "kubernetes.io") && !in_namespace(ns, "k8s.io") {
        return true;
    }
    KUBELET_SELF_LABELS.contains(&key)
        || KUBELET_SELF_LABEL_NAMESPACES
            .iter()
            .any(|allowed| in_namespace(ns, allowed))
}

/// True for an RFC 1123 DNS subdomain as Kubernetes uses it for node names: at most 253
/// characters, dot-separated labels of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, each at most 63.
pub fn is_rfc1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Normalises a host name to a valid node name: lower case, characters outside `[a-z0-9.-]`
/// become `-`, labels trimmed of leading/trailing `-` and cut to 63, empty labels dropped,
/// whole name cut to 253. `None` when nothing usable remains.
pub fn normalize_node_name(s: &str) -> Option<String> {
    let lowered: String = s
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out = String::new();
    for label in lowered.split('.') {
        let mut l: &str = label.trim_matches('-');
        if l.len() > 63 {
            l = l[..63].trim_end_matches('-');
        }
        if l.is_empty() {
            continue;
        }
        let extra = if out.is_empty() { 0 } else { 1 };
        if out.len() + extra + l.len() > 253 {
            let room = 253usize.saturating_sub(out.len() + extra);
            let cut = l[..room.min(l.len())].trim_end_matches('-');
            if !cut.is_empty() {
                if extra == 1 {
                    out.push('.');
                }
                out.push_str(cut);
            }
            break;
        }
        if extra == 1 {
            out.push('.');
        }
        out.push_str(l);
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

/// Parses a taint `key[=value]:Effect`.
pub fn parse_taint(s: &str) -> Result<Taint, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| "missing \":<effect>\"".to_string())?;
    let effect = match effect {
        "NoSchedule" => TaintEffect::NoSchedule,
        "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
        "NoExecute" => TaintEffect::NoExecute,
        _ => {
            return Err(format!(
                "unknown effect {effect:?} (allowed: NoSchedule, PreferNoSchedule, NoExecute)"
            ))
        }
    };
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (kv, None),
    };
    if !is_label_key(key) {
        return Err(format!("invalid key {key:?}"));
    }
    if let Some(v) = value {
        if !is_label_value(v) {
            return Err(format!("invalid value {v:?}"));
        }
    }
    Ok(Taint {
        key: key.to_string(),
        value: value.map(str::to_string),
        effect,
    })
}

/// True for a Kubernetes bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn is_bootstrap_token(s: &str) -> bool {
    let ok = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    matches!(s.split_once('.'), Some((a, b)) if ok(a, 6) && ok(b, 16))
}

/// True for 64 hex characters.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Validates an IPv4/IPv6 CIDR `addr/prefix`.
pub fn is_cidr(s: &str) -> bool {
    let Some((addr, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return false;
    };
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match addr {
        IpAddr::V4(_) => prefix <= 32,
        IpAddr::V6(_) => prefix <= 128,
    }
}

/// An IP network: the address with its host bits cleared, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x::/n` (see [`is_cidr`]); host bits are cleared.
    pub fn parse(s: &str) -> Option<Cidr> {
        if !is_cidr(s) {
            return None;
        }
        let (addr, len) = s.split_once('/')?;
        let len: u8 = len.parse().ok()?;
        let addr: IpAddr = addr.parse().ok()?;
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Some(Cidr { addr, len })
    }

    /// True when every address of `other` is in `self` (same family only).
    pub fn contains(&self, other: &Cidr) -> bool {
        if self.len > other.len {
            return false;
        }
        match (self.addr, other.addr) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(a) == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(a) == u128::from(b) & mask
            }
            _ => false,
        }
    }

    /// True when the two networks share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// AKS's default pod CIDR (kubenet and Azure CNI overlay): the default of `networking.clusterPodCIDR`.
pub const AKS_DEFAULT_POD_CIDR: &str = "10.244.0.0/16";
/// The block a bridge-mode node's /24 is derived from when `networking.podCIDR` is unset: next to, not
/// inside, AKS's default pod CIDR, and outside AKS's default service (10.0.0.0/16) and VNet
/// (10.224.0.0/12) ranges.
pub const DERIVED_POD_RANGE_BLOCK: &str = "10.245.0.0/16";

/// The /24 in [`DERIVED_POD_RANGE_BLOCK`] for a node name: `10.245.<n>.0/24` with `n` from an FNV-1a
/// hash of the name, so the same node always gets the same range.
pub fn derived_pod_range(node_name: &str) -> Cidr {
    let mut h: u32 = 0x811c_9dc5;
    for b in node_name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let third = (h % 256) as u8;
    Cidr {
        addr: IpAddr::V4(std::net::Ipv4Addr::new(10, 245, third, 0)),
        len: 24,
    }
}

/// True when a host is a loopback name or address (plain http is allowed only there, so tests
/// can point the agent at the local emulator).
pub fn is_loopback_host(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SUB: &str = "00000000-1111-2222-3333-444444444444";

    #[test]
    fn resource_id_parses_and_matches_case_insensitively() {
        let id = format!("/subscriptions/{SUB}/resourceGroups/my.rg_1/providers/Microsoft.ContainerService/managedClusters/c-1");
        let c = parse_resource_id(&id).expect("valid");
        assert_eq!(c.subscription_id, SUB);
        assert_eq!(c.resource_group, "my.rg_1");
        assert_eq!(c.name, "c-1");
        let lower = id.to_ascii_lowercase();
        assert_eq!(
            parse_resource_id(&lower).map(|c| c.name),
            Some("c-1".into())
        );
    }

    #[test]
    fn resource_id_rejects_wrong_shapes() {
        for bad in [
            "",
            "/subscriptions/x/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c",
            &format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/c"),
            &format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c/"),
            &format!("/subscriptions/{SUB}/resourceGroups/r g/providers/Microsoft.ContainerService/managedClusters/c"),
            &format!("subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c"),
        ] {
            assert_eq!(parse_resource_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.30.4"), Ok("1.30.4".into()));
        assert_eq!(parse_version("v1.30.4"), Ok("1.30.4".into()));
        assert_eq!(parse_version(" 1.31.0-rc.1 "), Ok("1.31.0-rc.1".into()));
        assert_eq!(parse_version("1.30"), Err(VersionError::Partial));
        assert_eq!(parse_version("v1"), Err(VersionError::Partial));
        assert_eq!(parse_version("1.30.x"), Err(VersionError::Invalid));
        assert_eq!(
            parse_version("your-kubernetes-version"),
            Err(VersionError::Invalid)
        );
        assert_eq!(parse_version("1.2.3.4"), Err(VersionError::Invalid));
        assert_eq!(parse_version(""), Err(VersionError::Invalid));
    }

    #[test]
    fn taints() {
        let t = parse_taint("kubernetes.azure.com/flex=true:NoSchedule").expect("valid");
        assert_eq!(t.key, "kubernetes.azure.com/flex");
        assert_eq!(t.value.as_deref(), Some("true"));
        assert_eq!(t.effect, TaintEffect::NoSchedule);
        assert_eq!(t.to_string(), "kubernetes.azure.com/flex=true:NoSchedule");
        let t = parse_taint("gpu:NoExecute").expect("valid");
        assert_eq!(t.value, None);
        assert!(parse_taint("gpu").is_err());
        assert!(parse_taint("gpu=x:Sometimes").is_err());
        assert!(parse_taint("=x:NoSchedule").is_err());
    }

    #[test]
    fn node_names() {
        assert_eq!(
            normalize_node_name("MyHost_01").as_deref(),
            Some("myhost-01")
        );
        assert_eq!(
            normalize_node_name("edge.Example.COM").as_deref(),
            Some("edge.example.com")
        );
        assert_eq!(normalize_node_name("-a..b-").as_deref(), Some("a.b"));
        assert_eq!(normalize_node_name("___"), None);
        assert!(is_rfc1123_subdomain("node-1.example"));
        assert!(!is_rfc1123_subdomain("Node"));
    }

    #[test]
    fn labels_tokens_cidrs() {
        assert!(is_label_key("kubernetes.azure.com/role"));
        assert!(is_label_key("env"));
        assert!(!is_label_key("Bad Key"));
        assert!(!is_label_key("UPPER.example/x"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
        assert!(is_bootstrap_token("abcdef.0123456789abcdef"));
        assert!(!is_bootstrap_token("ABCDEF.0123456789abcdef"));
        assert!(is_cidr("10.244.0.0/16"));
        assert!(is_cidr("fd00::/64"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("10.0.0.0"));
        assert!(is_guid(SUB));
        assert!(!is_guid("your-subscription-id"));
    }

    #[test]
    fn cidrs_clear_host_bits_and_compare() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        assert_eq!(c("10.244.3.77/24").to_string(), "10.244.3.0/24");
        assert_eq!(c("fd00:1::5/64").to_string(), "fd00:1::/64");
        assert_eq!(c("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert!(c("10.244.0.0/16").contains(&c("10.244.3.0/24")));
        assert!(c("10.244.0.0/16").contains(&c("10.244.0.0/16")));
        assert!(!c("10.244.3.0/24").contains(&c("10.244.0.0/16")));
        assert!(c("10.0.0.0/8").overlaps(&c("10.244.0.0/16")));
        assert!(!c("10.245.0.0/16").overlaps(&c("10.244.0.0/16")));
        assert!(!c("10.0.0.0/8").overlaps(&c("fd00::/8")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }

    #[test]
    fn derived_pod_ranges_are_stable_slash_24s_outside_the_aks_default() {
        let aks = Cidr::parse(AKS_DEFAULT_POD_CIDR).unwrap();
        let block = Cidr::parse(DERIVED_POD_RANGE_BLOCK).unwrap();
        assert_eq!(
            derived_pod_range("flex-node-1"),
            derived_pod_range("flex-node-1")
        );
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..64 {
            let r = derived_pod_range(&format!("node-{i}"));
            assert_eq!(r.len, 24);
            assert!(block.contains(&r) && !aks.overlaps(&r), "{r}");
            seen.insert(r.to_string());
        }
        assert!(seen.len() > 40, "the hash spreads names: {}", seen.len());
    }

    #[test]
    fn kubelet_self_settable_labels_follow_node_restriction() {
        for (key, ok) in [
            ("env", true),
            ("example.com/team", true),
            ("kubernetes.azure.com/agentpool", true),
            ("kubernetes.azure.com/managed", true),
            ("notkubernetes.io/x", true),
            ("k8s.io.example.com/x", true),
            ("kubernetes.io/hostname", true),
            ("kubernetes.io/arch", true),
            ("beta.kubernetes.io/os", true),
            ("failure-domain.beta.kubernetes.io/zone", true),
            ("topology.kubernetes.io/region", true),
            ("node.kubernetes.io/instance-type", true),
            ("node.kubernetes.io/anything", true),
            ("kubelet.kubernetes.io/anything", true),
            ("a.b.node.kubernetes.io/x", true),
            ("x.kubelet.kubernetes.io/y", true),
            ("node-role.kubernetes.io/worker", false),
            ("node-role.kubernetes.io/agent", false),
            ("kubernetes.io/role", false),
            ("topology.kubernetes.io/rack", false),
            ("node-restriction.kubernetes.io/pool", false),
            ("k8s.io/x", false),
            ("sigs.k8s.io/x", false),
            ("nodekubernetes.io/x", true),
            ("xnode.kubernetes.io/x", false),
        ] {
            assert_eq!(kubelet_may_self_set_label(key), ok, "{key}");
        }
    }

    proptest! {
        #[test]
        fn labels_outside_the_kubernetes_namespaces_are_always_allowed(
            prefix in "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
            name in "[a-zA-Z0-9]([a-zA-Z0-9._-]{0,20}[a-zA-Z0-9])?",
        ) {
            let key = format!("{prefix}/{name}");
            let k8s = |d: &str| prefix == d || prefix.ends_with(&format!(".{d}"));
            let expected = !(k8s("kubernetes.io") || k8s("k8s.io"));
            if expected {
                prop_assert!(kubelet_may_self_set_label(&key), "{}", key);
            }
            prop_assert!(kubelet_may_self_set_label(&name));
        }

        #[test]
        fn kubernetes_namespace_labels_are_allowed_exactly_under_the_kubelet_namespaces(
            sub in "([a-z][a-z0-9-]{0,8}\\.){0,2}",
            domain in prop::sample::select(vec!["kubernetes.io", "k8s.io"]),
            name in "[a-z]([a-z0-9-]{0,10}[a-z0-9])?",
        ) {
            let ns = format!("{sub}{domain}");
            let key = format!("{ns}/{name}");
            let allowed_ns = ["kubelet.kubernetes.io", "node.kubernetes.io"]
                .iter()
                .any(|a| ns == *a || ns.ends_with(&format!(".{a}")));
            let expected = allowed_ns || KUBELET_SELF_LABELS.contains(&key.as_str());
            prop_assert_eq!(kubelet_may_self_set_label(&key), expected, "{}", key);
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = parse_resource_id(&s);
            let _ = parse_version(&s);
            let _ = parse_taint(&s);
            let _ = normalize_node_name(&s);
            let _ = is_cidr(&s);
            let _ = is_label_key(&s);
        }

        #[test]
        fn structured_inputs_never_panic(s in "[/a-zA-Z0-9.:=_-]{0,80}") {
            let _ = parse_resource_id(&s);
            let _ = parse_version(&s);
            let _ = parse_taint(&s);
        }

        #[test]
        fn normalised_node_names_are_rfc1123(s in "\\PC{0,300}") {
            if let Some(n) = normalize_node_name(&s) {
                prop_assert!(is_rfc1123_subdomain(&n), "{n:?}");
            }
        }

        #[test]
        fn long_dotted_names_stay_valid(s in "[A-Za-z0-9._-]{0,400}") {
            if let Some(n) = normalize_node_name(&s) {
                prop_assert!(is_rfc1123_subdomain(&n), "{n:?}");
            }
        }

        #[test]
        fn valid_names_are_fixed_points(s in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?") {
            prop_assert_eq!(normalize_node_name(&s), Some(s.clone()));
        }

        #[test]
        fn full_versions_parse(a in 0u32..100, b in 0u32..100, c in 0u32..100, v in proptest::bool::ANY) {
            let s = format!("{}{a}.{b}.{c}", if v { "v" } else { "" });
            prop_assert_eq!(parse_version(&s), Ok(format!("{a}.{b}.{c}")));
        }
    }
}
