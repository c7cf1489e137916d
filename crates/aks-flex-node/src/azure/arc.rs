//! The Arc agent (`azcmagent`): status, connect and local disconnect.
//!
//! `connect` never puts the access token on the command line: it goes into a 0600 JSON file in a private
//! 0700 directory, handed to `azcmagent connect --config <file>` (azcmagent reads flag values from a JSON
//! file whose keys are the long flag names), and removed right after.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use crate::azure::{AzureError, Result};
use crate::host::{CommandSpec, Host};
use crate::model::Secret;

/// How to install azcmagent, for the "missing" error.
pub const INSTALL_HINT: &str = "install the Azure Connected Machine agent first: \
    curl -fsSLo /tmp/install_linux_azcmagent.sh https://gbl.his.arc.azure.com/azcmagent-linux && sudo bash /tmp/install_linux_azcmagent.sh";

/// What `azcmagent show -j` says about this machine. Every field but `connected` is optional: an empty or
/// missing value (older agents, a disconnected machine) reads as `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    pub connected: bool,
    pub resource_id: Option<String>,
    /// `resourceName`: the Arc machine's name.
    pub resource_name: Option<String>,
    /// `resourceGroup`.
    pub resource_group: Option<String>,
    /// `location`.
    pub location: Option<String>,
    /// `lastHeartbeat`, as printed (RFC 3339).
    pub last_heartbeat: Option<String>,
}

/// Parse the JSON `azcmagent show -j` prints.
pub fn parse_show(v: &serde_json::Value) -> AgentStatus {
    let text = |k: &str| {
        v[k].as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    AgentStatus {
        connected: v["status"]
            .as_str()
            .unwrap_or("")
            .eq_ignore_ascii_case("Connected"),
        resource_id: text("resourceId"),
        resource_name: text("resourceName"),
        resource_group: text("resourceGroup"),
        location: text("location"),
        last_heartbeat: text("lastHeartbeat"),
    }
}

/// Arguments for `azcmagent connect` (besides the token).
#[derive(Debug, Clone)]
pub struct ConnectArgs {
    pub resource_group: String,
    pub tenant_id: String,
    pub location: String,
    pub subscription_id: String,
    pub resource_name: String,
    pub tags: BTreeMap<String, String>,
    pub cloud: String,
}

/// The azcmagent program and the environment to run it with.
pub struct Azcmagent<'a> {
    pub host: &'a Host,
    pub program: &'a str,
    pub env: &'a BTreeMap<String, String>,
}

impl Azcmagent<'_> {
    fn spec(&self) -> CommandSpec {
        let mut s = CommandSpec::new(self.program).timeout(Duration::from_secs(600));
        for (k, v) in self.env {
            s = s.env(k, v);
        }
        s
    }

    fn missing(&self, e: &crate::host::HostError) -> AzureError {
        let text = e.to_string();
        if text.contains("could not be started") {
            AzureError::Other(format!(
                "`{}` (the Azure Arc agent) is not installed or not on PATH: {INSTALL_HINT}",
                self.program
            ))
        } else {
            AzureError::Other(text)
        }
    }

    /// `azcmagent show -j`.
    pub async fn show(&self) -> Result<AgentStatus> {
        // Read-only; runs for real even in a sandbox root.
        let spec = self.spec().args(["show", "-j"]);
        let out = self.host.run(&spec).await.map_err(|e| self.missing(&e))?;
        if !out.success() {
            return Err(AzureError::Other(format!(
                "`{} show -j` failed (exit {}): {}",
                self.program,
                out.code,
                out.stderr.trim()
            )));
        }
        let v: serde_json::Value = serde_json::from_str(&out.stdout).map_err(|e| {
            AzureError::Other(format!("`{} show -j` printed no JSON: {e}", self.program))
        })?;
        Ok(parse_show(&v))
    }

    /// `azcmagent connect --config <0600 file>`; the file holds every flag including the token.
    ///
    /// azcmagent registers the machine in Azure and configures the local agent services. It is run for
    /// real even in a sandbox root (the sandbox cannot simulate an Azure registration); tests put the
    /// emulator's stand-in in its place (`AKS_FLEX_NODE_AZCMAGENT`).
    pub async fn connect(&self, args: &ConnectArgs, token: &Secret) -> Result<()> {
        let dir = tempfile::Builder::new()
            .prefix("aks-flex-node-arc-")
            .tempdir()
            .map_err(|e| AzureError::Other(format!("cannot create a private temp dir: {e}")))?;
        let path = dir.path().join("connect.json");
        let body = serde_json::json!({
            "resource-group": args.resource_group,
            "tenant-id": args.tenant_id,
            "location": args.location,
            "subscription-id": args.subscription_id,
            "resource-name": args.resource_name,
            "cloud": args.cloud,
            "tags": args.tags,
            "access-token": token.expose(),
        });
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| AzureError::Other(format!("cannot write {}: {e}", path.display())))?;
            f.write_all(body.to_string().as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| AzureError::Other(format!("cannot write {}: {e}", path.display())))?;
        }
        let spec = self
            .spec()
            .args(["connect", "--config"])
            .arg(path.to_string_lossy())
            .redact(token.expose());
        let res = self.host.run(&spec).await;
        // Remove the token file before looking at the result.
        let _ = std::fs::remove_file(&path);
        drop(dir);
        let out = res.map_err(|e| self.missing(&e))?;
        if !out.success() {
            let text = if out.stderr.trim().is_empty() {
                out.stdout.trim()
            } else {
                out.stderr.trim()
            };
            return Err(AzureError::Program {
                message: format!(
                    "`azcmagent connect` failed (exit {}): {}\n  hint: run `azcmagent show` and check /var/opt/azcmagent/log/azcmagent.log",
                    out.code, text
                ),
                // What azcmagent's own ARM request got (throttled? token expired?), for retry decisions.
                arm: crate::azure::arm::ArmError::reported_by("azcmagent connect", text).map(Box::new),
            });
        }
        Ok(())
    }

    /// `azcmagent disconnect --force-local-only`: local state only (the Azure resource is deleted via ARM).
    pub async fn disconnect_local(&self) -> Result<()> {
        let spec = self.spec().args(["disconnect", "--force-local-only"]);
        let out = self.host.run(&spec).await.map_err(|e| self.missing(&e))?;
        if !out.success() {
            return Err(AzureError::Other(format!(
                "`azcmagent disconnect --force-local-only` failed (exit {}): {}",
                out.code,
                out.stderr.trim()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_output_is_read_tolerantly() {
        let full = serde_json::json!({
            "resourceName": "edge-1", "resourceGroup": "rg", "location": "westus",
            "resourceId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/edge-1",
            "status": "Connected", "lastHeartbeat": "2026-12-03T10:00:00Z", "agentVersion": "1.50"
        });
        let st = parse_show(&full);
        assert!(st.connected);
        assert_eq!(st.resource_name.as_deref(), Some("edge-1"));
        assert_eq!(st.resource_group.as_deref(), Some("rg"));
        assert_eq!(st.location.as_deref(), Some("westus"));
        assert_eq!(st.last_heartbeat.as_deref(), Some("2026-12-03T10:00:00Z"));
        assert!(st.resource_id.unwrap().ends_with("/machines/edge-1"));

        // A disconnected agent prints empty strings; an older one leaves fields out.
        let sparse =
            serde_json::json!({"status": "Disconnected", "resourceName": "", "location": 7});
        assert_eq!(parse_show(&sparse), AgentStatus::default());
    }
}
