//! The `agent` section: log level and directory, the metrics endpoint, and the node name (from
//! `agent.nodeName` or the host name, normalised to RFC 1123 with a warning).

use super::check::{given, q, B, UNSUPPORTED};
use crate::config::file;
use crate::config::model::*;
use crate::config::parse;

const DEFAULT_LOG_DIR: &str = "/var/log/aks-flex-node";

pub(super) fn agent(b: &mut B, ag: file::AgentFile) -> AgentConfig {
    for (k, v) in [
        ("agent.machineClient", ag.machine_client.is_some()),
        (
            "agent.machineReconcileInterval",
            ag.machine_reconcile_interval.is_some(),
        ),
        (
            "agent.requireMachineRegistration",
            ag.require_machine_registration.is_some(),
        ),
        (
            "agent.machineOperationMode",
            ag.machine_operation_mode.is_some(),
        ),
    ] {
        b.ignored(k, v, UNSUPPORTED);
    }
    let log_level = match given(ag.log_level) {
        None => LogLevel::default(),
        Some(l) => LogLevel::parse(&l).unwrap_or_else(|| {
            b.bad(
                "agent.logLevel",
                Some(&l),
                "is not a log level; expected one of debug, info, warning (or warn), error",
            );
            LogLevel::default()
        }),
    };
    let log_dir = b.abs_path("agent.logDir", ag.log_dir, DEFAULT_LOG_DIR);
    let metrics_address = given(ag.metrics_address).and_then(|a| {
        MetricsAddress::parse(&a)
            .map_err(|e| b.bad("agent.metricsAddress", Some(&a), e))
            .ok()
    });
    let node_name = node_name(b, ag.node_name);
    AgentConfig {
        log_level,
        log_dir,
        node_name,
        metrics_address,
    }
}

/// `agent.nodeName`, else the host name; made a valid node name (RFC 1123, lower case) with a
/// warning, or a problem when it cannot be.
fn node_name(b: &mut B, v: Option<String>) -> String {
    let (name_src, name_field) = match given(v) {
        Some(n) => (n, "agent.nodeName"),
        None => (b.opts.hostname.trim().to_string(), "host name"),
    };
    match parse::normalize_node_name(&name_src) {
        Some(n) => {
            if n != name_src {
                b.warnings.push(format!(
                    "node name {} (from {name_field}) is not a valid Kubernetes node name; using {} (RFC 1123, lower case). Set agent.nodeName to choose another",
                    q(&name_src), q(&n)
                ));
            }
            n
        }
        None => {
            b.bad("agent.nodeName", Some(&name_src), format!("(from {name_field}) cannot be made a valid node name; expected lower-case letters, digits, '-' and '.'"));
            String::new()
        }
    }
}
