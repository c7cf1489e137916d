//! node-problem-detector's unit (the original's; it uses the kubelet's kubeconfig).

pub const BIN_PATH: &str = "/usr/bin/node-problem-detector";
pub const MONITOR_PATH: &str = "/etc/node-problem-detector/kernel-monitor.json";
pub const UNIT_PATH: &str = "/etc/systemd/system/node-problem-detector.service";

/// The unit. `--hostname-override` makes NPD report under the node name the kubelet registered
/// (`agent.nodeName`, the kubelet's `--hostname-override`), not the OS hostname; without it NPD's
/// conditions and events land on a node that does not exist. NPD needs the network and the kubelet's
/// kubeconfig (written before the unit starts), not the kubelet itself. It restarts like the kubelet:
/// every 10 s without a start limit, so an API server that is not reachable yet does not leave it
/// `failed` for good.
pub fn unit(server: &str, node_name: &str) -> String {
    format!(
        "[Unit]
Description=Node Problem Detector
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=0

[Service]
ExecStart={BIN_PATH} --hostname-override={node_name} --apiserver-override=\"{server}?inClusterConfig=false&auth=/var/lib/kubelet/kubeconfig\" --config.system-log-monitor={MONITOR_PATH}
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
"
    )
}

#[cfg(test)]
mod tests {
    const SERVER: &str = "https://flex-cluster.hcp.westus.azmk8s.io:443";

    #[test]
    fn unit_golden() {
        insta::assert_snapshot!(super::unit(SERVER, "flex-node-1"));
    }

    #[test]
    fn reports_under_the_node_name_and_keeps_restarting() {
        let u = super::unit(SERVER, "edge-7.example");
        assert!(u.contains(" --hostname-override=edge-7.example "), "{u}");
        let (unit_section, service) = u.split_once("[Service]").unwrap();
        assert!(unit_section.contains("StartLimitIntervalSec=0\n"), "{u}");
        assert!(
            unit_section.contains("After=network-online.target\n"),
            "{u}"
        );
        assert!(service.contains("Restart=always\nRestartSec=10\n"), "{u}");
    }
}
