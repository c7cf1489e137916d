//! `aks-flex-node token`: the kubelet's exec credential plugin.
//!
//! Reads `KUBERNETES_EXEC_INFO` to answer in the API version the kubelet asked for
//! (`client.authentication.k8s.io/v1` or `v1beta1`), gets an Entra token for the AKS AAD server app from
//! the machine's managed identity (Arc HIMDS; `IDENTITY_ENDPOINT` overrides the URL, `IMDS_ENDPOINT` alone
//! selects Azure IMDS) and prints an ExecCredential on stdout and nothing else. The token is cached in
//! `<root>/run/aks-flex-node/token-cache.json` (0600) until 5 minutes before it expires. No config file is
//! needed; nothing is logged to a file.

use std::path::Path;

use anyhow::{anyhow, Context as _};
use serde_json::json;

use super::{CliError, CmdResult};
use crate::azure::cloud::AKS_AAD_SERVER_APP_ID;
use crate::azure::credential::{
    now_unix, AccessToken, HimdsCredential, ImdsCredential, TokenCredential,
};
use crate::azure::{http, SecretString};
use crate::host::Host;

pub const CACHE_FILE: &str = "/run/aks-flex-node/token-cache.json";
/// Refresh this long before expiry.
const MARGIN_SECS: i64 = 300;

const V1: &str = "client.authentication.k8s.io/v1";
const V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// The API version to answer in, from `KUBERNETES_EXEC_INFO` (v1 when absent).
pub fn requested_api_version(exec_info: Option<&str>) -> Result<&'static str, String> {
    let Some(raw) = exec_info.filter(|s| !s.trim().is_empty()) else {
        return Ok(V1);
    };
    let v: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("KUBERNETES_EXEC_INFO is not JSON: {e}"))?;
    match v["apiVersion"].as_str() {
        Some(V1) | None => Ok(V1),
        Some(V1BETA1) => Ok(V1BETA1),
        Some(other) => Err(format!(
            "KUBERNETES_EXEC_INFO asks for {other:?}; supported: {V1}, {V1BETA1} (set the exec apiVersion in the kubeconfig)"
        )),
    }
}

/// The ExecCredential JSON.
pub fn render_exec_credential(api_version: &str, token: &AccessToken) -> String {
    let exp = chrono::DateTime::from_timestamp(token.expires_on, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({
        "kind": "ExecCredential",
        "apiVersion": api_version,
        "spec": {"interactive": false},
        "status": {"token": token.token.expose(), "expirationTimestamp": exp},
    })
    .to_string()
}

fn read_cache(host: &Host, resource: &str) -> Option<AccessToken> {
    let text = host.fs.read_to_string(Path::new(CACHE_FILE)).ok()??;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    if v["resource"].as_str()? != resource {
        return None;
    }
    let t = AccessToken {
        token: SecretString::new(v["accessToken"].as_str()?),
        expires_on: v["expiresOn"].as_i64()?,
    };
    (t.expires_on - now_unix() > MARGIN_SECS).then_some(t)
}

fn write_cache(host: &Host, resource: &str, t: &AccessToken) -> anyhow::Result<()> {
    let body =
        json!({"resource": resource, "accessToken": t.token.expose(), "expiresOn": t.expires_on});
    let path = Path::new(CACHE_FILE);
    if let Some(dir) = path.parent() {
        host.fs.create_dir_all(dir, 0o755)?;
    }
    host.fs
        .write_atomic(path, body.to_string().as_bytes(), 0o600, None)
        .context("writing the token cache")?;
    Ok(())
}

/// Get a token (cache first) and print the ExecCredential.
pub async fn run(root: &Path) -> CmdResult {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let api_version = requested_api_version(env("KUBERNETES_EXEC_INFO").as_deref())
        .map_err(|e| CliError::usage(anyhow!(e)))?;
    let host =
        Host::new(root).map_err(|e| CliError::usage(anyhow!("--root {}: {e}", root.display())))?;
    let resource =
        env("AKS_FLEX_NODE_TOKEN_RESOURCE").unwrap_or_else(|| AKS_AAD_SERVER_APP_ID.to_string());
    let token = match read_cache(&host, &resource) {
        Some(t) => t,
        None => {
            let client = http::client(None).map_err(CliError::failed)?;
            let cred: Box<dyn TokenCredential> =
                match (env("IDENTITY_ENDPOINT"), env("IMDS_ENDPOINT")) {
                    (None, Some(imds)) => Box::new(
                        ImdsCredential::new(client, Some(&imds), None).map_err(CliError::failed)?,
                    ),
                    (identity, _) => Box::new(
                        HimdsCredential::new(client, identity.as_deref())
                            .map_err(CliError::failed)?,
                    ),
                };
            let t = cred.get_token(&resource).await.map_err(CliError::failed)?;
            // A cache write failure costs one extra HIMDS call next time; the kubelet still gets its token.
            if let Err(e) = write_cache(&host, &resource, &t) {
                eprintln!("warning: {e:#}");
            }
            t
        }
    };
    println!("{}", render_exec_credential(api_version, &token));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_follows_exec_info() {
        assert_eq!(requested_api_version(None).unwrap(), V1);
        assert_eq!(
            requested_api_version(Some(r#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","spec":{"interactive":false}}"#)).unwrap(),
            V1BETA1
        );
        assert!(requested_api_version(Some(
            r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1"}"#
        ))
        .unwrap_err()
        .contains("supported"));
        assert!(requested_api_version(Some("{")).is_err());
    }

    #[test]
    fn exec_credential_shape() {
        let t = AccessToken {
            token: SecretString::new("abc"),
            expires_on: 1_700_000_000,
        };
        let v: serde_json::Value =
            serde_json::from_str(&render_exec_credential(V1BETA1, &t)).unwrap();
        assert_eq!(v["kind"], "ExecCredential");
        assert_eq!(v["apiVersion"], V1BETA1);
        assert_eq!(v["status"]["token"], "abc");
        assert_eq!(v["status"]["expirationTimestamp"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn cache_is_0600_and_expires_with_margin() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        let good = AccessToken {
            token: SecretString::new("t"),
            expires_on: now_unix() + 3600,
        };
        write_cache(&host, "r", &good).unwrap();
        let meta =
            std::fs::metadata(dir.path().join("run/aks-flex-node/token-cache.json")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(read_cache(&host, "r").unwrap().token.expose(), "t");
        assert!(read_cache(&host, "other").is_none());
        let near = AccessToken {
            token: SecretString::new("t"),
            expires_on: now_unix() + 200,
        };
        write_cache(&host, "r", &near).unwrap();
        assert!(read_cache(&host, "r").is_none());
    }
}
