//! node-problem-detector's unit (the original's; it uses the kubelet's kubeconfig).

pub const BIN_PATH: &str = "/usr/bin/node-problem-detector";
pub const MONITOR_PATH: &str = "/etc/node-problem-detector/kernel-monitor.json";
pub const UNIT_PATH: &str = "/etc/systemd/system/node-problem-detector.service";

pub fn unit(server: &str) -> String {
    format!(
        "[Unit]
Description=Node Problem Detector
After=network.target

[Service]
ExecStart={BIN_PATH} --apiserver-override=\"{server}?inClusterConfig=false&auth=/var/lib/kubelet/kubeconfig\" --config.system-log-monitor={MONITOR_PATH}
Restart=on-failure
RestartSec=5s

[Install]
WantedBy=multi-user.target
"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_golden() {
        insta::assert_snapshot!(super::unit("https://flex-cluster.hcp.westus.azmk8s.io:443"));
    }
}
