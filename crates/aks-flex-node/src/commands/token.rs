//! `aks-flex-node token`: the kubelet's exec credential plugin.
//!
//! Reads `KUBERNETES_EXEC_INFO` to answer in the API version the kubelet asked for
//! (`client.authentication.k8s.io/v1` or `v1beta1`), gets an Entra token for the AKS AAD server app from
//! the machine's managed identity (Arc HIMDS; `IDENTITY_ENDPOINT` overrides the URL, `IMDS_ENDPOINT` alone
//! selects Azure IMDS) and prints an ExecCredential on stdout and nothing else. The token is cached in
//! `<root>/run/aks-flex-node/token-cache.json` (0600) until 5 minutes before it expires, keyed by the
//! audience and by the identity it was issued to (see [`identity`]): a token of an Arc machine that has
//! since been deleted and registered again is never presented. `ArcInstall` also deletes the cache when it
//! connects the machine and on unbootstrap
//! ([`crate::steps::arc_install::clear_token_cache`]). No config file is needed; nothing is logged
//! to a file.

use std::path::Path;

use anyhow::{anyhow, Context as _};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{CliError, CmdResult};
use crate::azure::cloud::AKS_AAD_SERVER_APP_ID;
use crate::azure::credential::{
    now_unix, AccessToken, HimdsCredential, ImdsCredential, TokenCredential,
};
use crate::azure::http;
use crate::host::Host;
use crate::model::Secret;

// The cache file; `ArcInstall` deletes it when it connects the machine and on unbootstrap.
use crate::steps::arc_install::TOKEN_CACHE_FILE as CACHE_FILE;

/// The Arc agent's local registration (subscription, resource group, name, tenant and `vmId` of the
/// machine resource it is connected to), rewritten by every `azcmagent connect`.
pub const ARC_AGENT_CONFIG: &str = "/var/opt/azcmagent/agentconfig.json";
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

/// The identity a token is for, known without a network call: the token endpoint and the Arc machine
/// this host is registered as. A machine deleted and registered again (same name) gets a new `vmId`, and
/// with it a new managed identity, so its key differs. Without the Arc agent's config (Azure IMDS, or no
/// agent) only the endpoint counts; deleting the cache on connect and unbootstrap covers that case.
pub fn identity(host: &Host, endpoint: &str) -> String {
    let arc = match host.fs.read(Path::new(ARC_AGENT_CONFIG)) {
        Ok(Some(bytes)) => arc_registration(&bytes),
        _ => "none".to_string(),
    };
    format!("{endpoint} arc:{arc}")
}

/// The registration fields of `agentconfig.json` (key case varies between agent versions), hashed; the
/// whole file's hash when they cannot be read.
fn arc_registration(bytes: &[u8]) -> String {
    const FIELDS: [&str; 5] = [
        "subscriptionid",
        "resourcegroup",
        "resourcename",
        "tenantid",
        "vmid",
    ];
    let fields = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .map(|o| {
            FIELDS
                .iter()
                .map(|f| {
                    o.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(f))
                        .and_then(|(_, v)| v.as_str())
                        .unwrap_or("")
                        .to_ascii_lowercase()
                })
                .collect::<Vec<_>>()
        })
        .filter(|f| f.iter().any(|s| !s.is_empty()));
    let digest = match fields {
        Some(f) => Sha256::digest(f.join("\n").as_bytes()),
        None => Sha256::digest(bytes),
    };
    hex::encode(&digest[..16])
}

fn read_cache(host: &Host, resource: &str, identity: &str) -> Option<AccessToken> {
    let text = host.fs.read_to_string(Path::new(CACHE_FILE)).ok()??;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    if v["resource"].as_str()? != resource || v["identity"].as_str()? != identity {
        return None;
    }
    let t = AccessToken {
        token: Secret::new(v["accessToken"].as_str()?),
        expires_on: v["expiresOn"].as_i64()?,
    };
    (t.expires_on - now_unix() > MARGIN_SECS).then_some(t)
}

fn write_cache(host: &Host, resource: &str, identity: &str, t: &AccessToken) -> anyhow::Result<()> {
    let body = json!({
        "resource": resource,
        "identity": identity,
        "accessToken": t.token.expose(),
        "expiresOn": t.expires_on,
    });
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
    let endpoint = match (env("IDENTITY_ENDPOINT"), env("IMDS_ENDPOINT")) {
        (None, Some(imds)) => format!("imds:{imds}"),
        (Some(identity), _) => format!("himds:{identity}"),
        (None, None) => "himds:default".to_string(),
    };
    let identity = identity(&host, &endpoint);
    let token = match read_cache(&host, &resource, &identity) {
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
            if let Err(e) = write_cache(&host, &resource, &identity, &t) {
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
            token: Secret::new("abc"),
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
            token: Secret::new("t"),
            expires_on: now_unix() + 3600,
        };
        write_cache(&host, "r", "id", &good).unwrap();
        let meta =
            std::fs::metadata(dir.path().join("run/aks-flex-node/token-cache.json")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(read_cache(&host, "r", "id").unwrap().token.expose(), "t");
        assert!(read_cache(&host, "other", "id").is_none());
        let near = AccessToken {
            token: Secret::new("t"),
            expires_on: now_unix() + 200,
        };
        write_cache(&host, "r", "id", &near).unwrap();
        assert!(read_cache(&host, "r", "id").is_none());
    }

    fn arc_config(root: &Path, vm_id: &str) {
        let p = root.join(ARC_AGENT_CONFIG.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let body = json!({
            "subscriptionId": "8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8",
            "resourceGroup": "rg",
            "resourceName": "node-1",
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "vmId": vm_id,
        });
        std::fs::write(p, body.to_string()).unwrap();
    }

    /// The machine was deleted and registered again under the same name: the cached token belongs to
    /// the deleted identity and must not be used.
    #[test]
    fn a_cached_token_of_another_identity_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        let t = AccessToken {
            token: Secret::new("old-identity"),
            expires_on: now_unix() + 3600,
        };
        arc_config(dir.path(), "11111111-1111-1111-1111-111111111111");
        let before = identity(&host, "himds:default");
        write_cache(&host, "r", &before, &t).unwrap();
        assert_eq!(
            read_cache(&host, "r", &identity(&host, "himds:default"))
                .unwrap()
                .token
                .expose(),
            "old-identity"
        );
        // Another endpoint is another identity.
        assert!(read_cache(&host, "r", &identity(&host, "imds:http://169.254.169.254")).is_none());

        arc_config(dir.path(), "22222222-2222-2222-2222-222222222222");
        let after = identity(&host, "himds:default");
        assert_ne!(before, after);
        assert!(read_cache(&host, "r", &after).is_none());

        // A cache written before identities were recorded is not used either.
        let legacy = json!({"resource": "r", "accessToken": "x", "expiresOn": now_unix() + 3600});
        std::fs::write(
            dir.path().join(CACHE_FILE.trim_start_matches('/')),
            legacy.to_string(),
        )
        .unwrap();
        assert!(read_cache(&host, "r", &after).is_none());
    }

    #[test]
    fn the_identity_ignores_key_case_and_unrelated_fields() {
        let a = br#"{"subscriptionId":"S","resourceGroup":"rg","resourceName":"n","tenantId":"t","vmId":"v","lastHeartbeat":"1"}"#;
        let b = br#"{"subscriptionid":"s","resourcegroup":"RG","resourcename":"n","tenantid":"t","vmid":"v","lastHeartbeat":"2"}"#;
        assert_eq!(arc_registration(a), arc_registration(b));
        let c = br#"{"subscriptionId":"S","resourceGroup":"rg","resourceName":"n","tenantId":"t","vmId":"w"}"#;
        assert_ne!(arc_registration(a), arc_registration(c));
    }

    #[test]
    fn clear_cache_removes_the_file_and_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        crate::steps::arc_install::clear_token_cache(&host).unwrap();
        let t = AccessToken {
            token: Secret::new("t"),
            expires_on: now_unix() + 3600,
        };
        write_cache(&host, "r", "id", &t).unwrap();
        crate::steps::arc_install::clear_token_cache(&host).unwrap();
        assert!(!dir.path().join("run/aks-flex-node").exists());
        assert!(dir.path().join("run").exists());
    }
}
