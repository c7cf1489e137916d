//! Credentials: how the agent gets Entra ID access tokens.
//!
//! - [`ClientSecretCredential`]: a service principal (client credentials grant, Entra v2 endpoint).
//! - [`AzureCliCredential`]: `az account get-access-token` (under systemd the unit sets `AZURE_CONFIG_DIR`).
//! - [`DeviceCodeCredential`]: prints a code and URL to the terminal and polls; refuses without a terminal.
//! - [`HimdsCredential`]: the Arc machine's managed identity through HIMDS (challenge-file flow).
//! - [`ImdsCredential`]: an Azure VM's managed identity through IMDS.
//!
//! [`CachedCredential`] wraps any of them and keeps tokens in memory until shortly before they expire.
//! Errors name the fix ("run az login", "client secret is wrong or expired"); no message ever contains a
//! token or secret.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::Deserialize;

use crate::azure::cloud::scope_for;
use crate::azure::{http, AzureError, Result};
use crate::model::Secret;

/// The Azure CLI's public client ID, used for the device-code flow (as `az login --use-device-code` does).
pub const AZURE_CLI_CLIENT_ID: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";

/// Where the real HIMDS keeps its challenge key files; with the default endpoint nothing else is read.
pub const HIMDS_KEY_DIR: &str = "/var/opt/azcmagent/tokens";

/// An access token and when it expires (unix seconds).
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub token: Secret,
    pub expires_on: i64,
}

impl AccessToken {
    /// Seconds until expiry (negative when expired).
    pub fn remaining(&self) -> i64 {
        self.expires_on - now_unix()
    }
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Something that hands out tokens for a resource (audience), e.g. `https://management.azure.com/`.
#[async_trait::async_trait]
pub trait TokenCredential: Send + Sync {
    async fn get_token(&self, resource: &str) -> Result<AccessToken>;
    /// Short name for messages ("service principal 1234…", "Azure CLI").
    fn describe(&self) -> String;
}

/// Read `exp` from a JWT without verifying it (only to know when to refresh).
pub fn jwt_exp(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("exp")?.as_i64()
}

/// `expires_in`/`expires_on` arrive as numbers or strings depending on the endpoint.
fn num(v: Option<&serde_json::Value>) -> Option<i64> {
    match v? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Turn an Entra token response into an [`AccessToken`].
fn token_from_json(v: &serde_json::Value, who: &str) -> Result<AccessToken> {
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AzureError::auth(who, "the token response has no access_token"))?;
    let expires_on = num(v.get("expires_on"))
        .or_else(|| num(v.get("expires_in")).map(|s| now_unix() + s))
        .or_else(|| jwt_exp(token))
        .ok_or_else(|| AzureError::auth(who, "the token response says nothing about expiry"))?;
    Ok(AccessToken {
        token: Secret::new(token),
        expires_on,
    })
}

/// Map an Entra (AADSTS) error to what the operator should do.
pub fn explain_aad_error(error: &str, description: &str) -> String {
    let code = description
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| w.starts_with("AADSTS"))
        .unwrap_or("");
    let first_line = description.lines().next().unwrap_or("").trim();
    let hint = match code {
        "AADSTS7000215" => {
            "the client secret is wrong or expired: create a new secret for the app registration \
             (az ad app credential reset) and update azure.servicePrincipal.clientSecret / clientSecretFile"
        }
        "AADSTS7000222" => {
            "the client secret has expired: create a new one (az ad app credential reset) and update the config"
        }
        "AADSTS700016" => {
            "the application (client) ID is not known in this tenant: check azure.servicePrincipal.clientId \
             and azure.servicePrincipal.tenantId"
        }
        "AADSTS90002" => "the tenant was not found: check azure.tenantId",
        "AADSTS700082" | "AADSTS50173" => "the login has expired: sign in again (az login)",
        _ => match error {
            "invalid_client" => "the client credentials were rejected: check azure.servicePrincipal",
            "expired_token" => "the device code expired before sign-in completed: run the command again",
            "authorization_declined" => "sign-in was declined",
            _ => "",
        },
    };
    let base = if code.is_empty() {
        error.to_string()
    } else {
        code.to_string()
    };
    match (hint.is_empty(), first_line.is_empty()) {
        (false, _) => format!("{base}: {hint}"),
        (true, false) => format!("{base}: {first_line}"),
        (true, true) => base,
    }
}

async fn read_json(resp: reqwest::Response, who: &str) -> Result<(u16, serde_json::Value)> {
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| http::transport(format!("{who}: reading the response"), &e))?;
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Ok((status, v))
}

fn aad_error(who: &str, status: u16, v: &serde_json::Value) -> AzureError {
    let error = v.get("error").and_then(|e| e.as_str()).unwrap_or("");
    let desc = v
        .get("error_description")
        .and_then(|e| e.as_str())
        .unwrap_or("");
    if error.is_empty() && desc.is_empty() {
        return AzureError::auth(who, format!("the token endpoint answered HTTP {status}"));
    }
    AzureError::auth(who, explain_aad_error(error, desc))
}

// ---------------------------------------------------------------------------------------------------

/// A service principal with a client secret.
pub struct ClientSecretCredential {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    secret: Secret,
}

impl ClientSecretCredential {
    pub fn new(
        http: reqwest::Client,
        token_url: String,
        client_id: String,
        secret: Secret,
    ) -> Self {
        ClientSecretCredential {
            http,
            token_url,
            client_id,
            secret,
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for ClientSecretCredential {
    async fn get_token(&self, resource: &str) -> Result<AccessToken> {
        let who = self.describe();
        let scope = scope_for(resource);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.expose()),
            ("scope", scope.as_str()),
        ];
        let resp = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| http::transport(format!("{who}: token request"), &e))?;
        let (status, v) = read_json(resp, &who).await?;
        if status != 200 {
            return Err(aad_error(&who, status, &v));
        }
        token_from_json(&v, &who)
    }

    fn describe(&self) -> String {
        format!("service principal {}", self.client_id)
    }
}

// ---------------------------------------------------------------------------------------------------

/// The Azure CLI's login (`az account get-access-token`).
pub struct AzureCliCredential {
    program: String,
    tenant: Option<String>,
    timeout: Duration,
}

impl AzureCliCredential {
    /// `program` is normally `az`; tests put a fake on PATH or pass a path.
    pub fn new(program: impl Into<String>, tenant: Option<String>) -> Self {
        AzureCliCredential {
            program: program.into(),
            tenant,
            timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CliToken {
    access_token: String,
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
    /// Newer CLIs also give the POSIX timestamp.
    #[serde(default, rename = "expires_on")]
    expires_on_unix: Option<serde_json::Value>,
}

#[async_trait::async_trait]
impl TokenCredential for AzureCliCredential {
    async fn get_token(&self, resource: &str) -> Result<AccessToken> {
        let who = self.describe();
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args([
            "account",
            "get-access-token",
            "--resource",
            resource,
            "-o",
            "json",
        ]);
        if let Some(t) = &self.tenant {
            cmd.args(["--tenant", t]);
        }
        // Not through host::command: its trace logging would record the token printed on stdout.
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AzureError::auth(
                    &who,
                    format!(
                        "`{}` was not found: install the Azure CLI (https://aka.ms/InstallAzureCLIDeb) and run `az login`, \
                         or configure azure.servicePrincipal",
                        self.program
                    ),
                )
            } else {
                AzureError::auth(&who, format!("cannot run `{}`: {e}", self.program))
            }
        })?;
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                AzureError::auth(
                    &who,
                    "`az account get-access-token` did not answer within 60s",
                )
            })?
            .map_err(|e| AzureError::auth(&who, format!("`az` failed: {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tenant = self.tenant.as_deref().unwrap_or("<tenant>");
            let msg = if stderr.contains("az login")
                || stderr.contains("AADSTS700082")
                || stderr.contains("AADSTS50173")
                || stderr.to_ascii_lowercase().contains("expired")
            {
                format!(
                    "the Azure CLI is not logged in or its login expired: run `az login --tenant {tenant}` as the user whose \
                     Azure CLI profile the agent uses (under systemd: AZURE_CONFIG_DIR)"
                )
            } else {
                let last = stderr.trim().lines().last().unwrap_or("").trim();
                format!("`az account get-access-token` failed: {last}")
            };
            return Err(AzureError::auth(&who, msg));
        }
        let t: CliToken = serde_json::from_slice(&out.stdout).map_err(|_| {
            AzureError::auth(&who, "`az account get-access-token` printed no token JSON")
        })?;
        let expires_on = num(t.expires_on_unix.as_ref())
            .or_else(|| jwt_exp(&t.access_token))
            .or_else(|| {
                // "2024-01-01 12:00:00.000000" in local time; assume an hour if unparsable.
                t.expires_on.as_ref()?;
                Some(now_unix() + 3600)
            })
            .unwrap_or(now_unix() + 300);
        Ok(AccessToken {
            token: Secret::new(t.access_token),
            expires_on,
        })
    }

    fn describe(&self) -> String {
        "Azure CLI".into()
    }
}

// ---------------------------------------------------------------------------------------------------

/// Interactive device-code sign-in on the terminal.
pub struct DeviceCodeCredential {
    http: reqwest::Client,
    devicecode_url: String,
    token_url: String,
    client_id: String,
    interactive: bool,
    /// Upper bound on the polling interval (tests shorten it).
    pub max_interval: Duration,
    /// Where the sign-in instructions go: the terminal (stderr) unless replaced.
    prompt: Arc<dyn Fn(&str) + Send + Sync>,
}

impl DeviceCodeCredential {
    pub fn interactive(&self) -> bool {
        self.interactive
    }

    /// `interactive`: whether a person can see the terminal (stderr is a TTY).
    pub fn new(
        http: reqwest::Client,
        devicecode_url: String,
        token_url: String,
        interactive: bool,
    ) -> Self {
        DeviceCodeCredential {
            http,
            devicecode_url,
            token_url,
            client_id: AZURE_CLI_CLIENT_ID.into(),
            interactive,
            max_interval: Duration::from_secs(15),
            prompt: Arc::new(|m: &str| eprintln!("{m}")),
        }
    }

    /// Show the sign-in instructions through `prompt` instead of stderr (tests read the code from it).
    pub fn with_prompt(mut self, prompt: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.prompt = Arc::new(prompt);
        self
    }
}

#[async_trait::async_trait]
impl TokenCredential for DeviceCodeCredential {
    async fn get_token(&self, resource: &str) -> Result<AccessToken> {
        let who = self.describe();
        if !self.interactive {
            return Err(AzureError::auth(
                &who,
                "device-code sign-in needs a terminal, and there is none (running under systemd?): \
                 configure azure.servicePrincipal, or run `az login` for the Azure CLI profile the agent uses",
            ));
        }
        let scope = format!("{} offline_access", scope_for(resource));
        let resp = self
            .http
            .post(&self.devicecode_url)
            .form(&[
                ("client_id", self.client_id.as_str()),
                ("scope", scope.as_str()),
            ])
            .send()
            .await
            .map_err(|e| http::transport(format!("{who}: device code request"), &e))?;
        let (status, v) = read_json(resp, &who).await?;
        if status != 200 {
            return Err(aad_error(&who, status, &v));
        }
        let device_code = v
            .get("device_code")
            .and_then(|x| x.as_str())
            .ok_or_else(|| AzureError::auth(&who, "no device_code in the response"))?
            .to_string();
        let message = v
            .get("message")
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "To sign in, open {} and enter the code {}",
                    v.get("verification_uri")
                        .and_then(|x| x.as_str())
                        .unwrap_or("?"),
                    v.get("user_code").and_then(|x| x.as_str()).unwrap_or("?")
                )
            });
        (self.prompt)(&message);
        let mut interval = Duration::from_secs(num(v.get("interval")).unwrap_or(5).max(1) as u64)
            .min(self.max_interval);
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(num(v.get("expires_in")).unwrap_or(900).max(1) as u64);
        loop {
            if tokio::time::Instant::now() > deadline {
                return Err(AzureError::auth(
                    &who,
                    "the device code expired before sign-in completed: run the command again",
                ));
            }
            tokio::time::sleep(interval).await;
            let resp = self
                .http
                .post(&self.token_url)
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("client_id", self.client_id.as_str()),
                    ("device_code", device_code.as_str()),
                ])
                .send()
                .await
                .map_err(|e| http::transport(format!("{who}: polling"), &e))?;
            let (status, v) = read_json(resp, &who).await?;
            if status == 200 {
                return token_from_json(&v, &who);
            }
            match v.get("error").and_then(|e| e.as_str()) {
                Some("authorization_pending") => {}
                Some("slow_down") => {
                    interval = (interval + Duration::from_secs(5)).min(self.max_interval)
                }
                _ => return Err(aad_error(&who, status, &v)),
            }
        }
    }

    fn describe(&self) -> String {
        "device code sign-in".into()
    }
}

// ---------------------------------------------------------------------------------------------------

/// The Arc machine's system-assigned identity through HIMDS.
///
/// Flow: GET the token URL with `Metadata: true`; HIMDS answers 401 with `WWW-Authenticate: Basic
/// realm=<key file>`; read that file (root or the `himds` group can) and repeat with
/// `Authorization: Basic <contents>`.
///
/// Whoever binds the HIMDS port first (any local process, when himdsd is down) chooses the realm, and the
/// agent runs as root: so the named file is read only when it is a regular `*.key` file of at most
/// [`HIMDS_KEY_MAX_BYTES`] directly inside the key directory (the Azure SDKs' rule), whatever the
/// endpoint (`IDENTITY_ENDPOINT` included).
pub struct HimdsCredential {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    /// Key files are read only when they sit directly in this directory.
    key_dir: PathBuf,
}

/// The largest key file HIMDS writes is far smaller; the Azure SDKs refuse anything above this.
pub const HIMDS_KEY_MAX_BYTES: u64 = 4096;

/// Debug builds only: the directory HIMDS key files must be in, instead of [`HIMDS_KEY_DIR`]. The
/// integration tests and the emulator demo run the debug binary against an emulated HIMDS whose key files
/// live in a temp directory (`flexnode-emulator --himds-key-dir`). Release builds ignore it (the code that
/// reads it is not compiled in), so no environment can widen what a production agent reads and sends.
pub const TEST_KEY_DIR_ENV: &str = "AKS_FLEX_NODE_TEST_HIMDS_KEY_DIR";

/// The directory HIMDS key files must be directly inside: [`HIMDS_KEY_DIR`] (in debug builds
/// [`TEST_KEY_DIR_ENV`] can replace it).
pub fn himds_key_dir() -> PathBuf {
    #[cfg(debug_assertions)]
    if let Some(d) = std::env::var_os(TEST_KEY_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    PathBuf::from(HIMDS_KEY_DIR)
}

impl HimdsCredential {
    /// `identity_endpoint`: `IDENTITY_ENDPOINT` when set (full token URL), else the default HIMDS URL.
    pub fn new(http: reqwest::Client, identity_endpoint: Option<&str>) -> Result<Self> {
        let url = identity_endpoint.unwrap_or(crate::azure::cloud::HIMDS_DEFAULT_ENDPOINT);
        let endpoint = http::checked_url("IDENTITY_ENDPOINT", url)?;
        Ok(HimdsCredential {
            http,
            endpoint,
            key_dir: himds_key_dir(),
        })
    }

    /// Accept key files from `dir` instead (in-process tests against an emulated HIMDS). Code must ask for
    /// it explicitly; the agent itself never does.
    pub fn with_key_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.key_dir = dir.into();
        self
    }

    /// Check the challenge's key file and read it. Every rule is checked before the file is opened, and
    /// the open itself refuses a symlink swapped in after the check.
    fn read_key(&self, realm: &str) -> Result<String> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;

        use rustix::fs::OFlags;

        let who = self.describe();
        let dir = self.key_dir.display();
        let refuse = |why: String| {
            AzureError::auth(
                &who,
                format!(
                    "HIMDS pointed at the key file {realm:?}, which {why}; refusing to read it \
                     (a HIMDS key file is a regular *.key file of at most {HIMDS_KEY_MAX_BYTES} bytes directly in {dir})"
                ),
            )
        };
        let path = Path::new(realm);
        if !path.is_absolute() {
            return Err(refuse("is a relative path".into()));
        }
        // Path::components would quietly drop "." segments: look at the text.
        if realm.split('/').any(|c| c == ".." || c == ".") {
            return Err(refuse("contains a \"..\" or \".\" component".into()));
        }
        if path.parent() != Some(self.key_dir.as_path()) {
            return Err(refuse(format!("is not directly inside {dir}")));
        }
        if path.extension().and_then(|e| e.to_str()) != Some("key") {
            return Err(refuse("does not end in .key".into()));
        }
        let unreadable = |e: std::io::Error| {
            AzureError::auth(&who, format!("cannot read the HIMDS key file {realm}: {e} (the agent must run as root or in the himds group)"))
        };
        let check = |meta: &std::fs::Metadata| {
            if meta.file_type().is_symlink() {
                Err(refuse("is a symbolic link".into()))
            } else if !meta.is_file() {
                Err(refuse("is not a regular file".into()))
            } else if meta.len() > HIMDS_KEY_MAX_BYTES {
                Err(refuse(format!(
                    "is {} bytes, larger than {HIMDS_KEY_MAX_BYTES}",
                    meta.len()
                )))
            } else {
                Ok(())
            }
        };
        check(&std::fs::symlink_metadata(path).map_err(unreadable)?)?;
        // O_NOFOLLOW: a symlink swapped in after the check fails the open; O_NONBLOCK: so does a FIFO
        // (instead of hanging the agent), through the re-check below.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
            .open(path)
            .map_err(unreadable)?;
        // The file that was opened, in case it was replaced between the check and the open.
        check(&f.metadata().map_err(unreadable)?)?;
        let mut key = String::new();
        f.take(HIMDS_KEY_MAX_BYTES)
            .read_to_string(&mut key)
            .map_err(unreadable)?;
        Ok(key.trim().to_string())
    }
}

#[async_trait::async_trait]
impl TokenCredential for HimdsCredential {
    async fn get_token(&self, resource: &str) -> Result<AccessToken> {
        let who = self.describe();
        let query = [("api-version", "2019-11-01"), ("resource", resource)];
        let first = self
            .http
            .get(self.endpoint.clone())
            .query(&query)
            .header("Metadata", "true")
            .send()
            .await
            .map_err(|e| {
                let mut err = http::transport(format!("{who}: {}", self.endpoint), &e);
                if let AzureError::Transport { message, .. } = &mut err {
                    message.push_str(
                        " (is the Arc agent connected and himdsd running? `azcmagent show`)",
                    );
                }
                err
            })?;
        let resp = if first.status().as_u16() == 401 {
            let challenge = first
                .headers()
                .get("www-authenticate")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string();
            let realm = challenge
                .split_once("realm=")
                .map(|(_, r)| r.trim().trim_matches('"').to_string())
                .ok_or_else(|| {
                    AzureError::auth(&who, "HIMDS answered 401 without a Basic realm challenge")
                })?;
            let key = Secret::new(self.read_key(&realm)?);
            self.http
                .get(self.endpoint.clone())
                .query(&query)
                .header("Metadata", "true")
                .header("Authorization", format!("Basic {}", key.expose()))
                .send()
                .await
                .map_err(|e| http::transport(format!("{who}: {}", self.endpoint), &e))?
        } else {
            first
        };
        let (status, v) = read_json(resp, &who).await?;
        if status != 200 {
            let detail = v
                .get("error_description")
                .or_else(|| v.get("error"))
                .or_else(|| v.get("message"))
                .and_then(|x| x.as_str())
                .unwrap_or("");
            return Err(AzureError::auth(
                &who,
                format!("HIMDS answered HTTP {status} {detail} (is the machine connected to Arc? `azcmagent show`)"),
            ));
        }
        token_from_json(&v, &who)
    }

    fn describe(&self) -> String {
        "Arc managed identity (HIMDS)".into()
    }
}

/// An Azure VM's managed identity through IMDS.
pub struct ImdsCredential {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    client_id: Option<String>,
}

impl ImdsCredential {
    pub fn new(
        http: reqwest::Client,
        endpoint: Option<&str>,
        client_id: Option<String>,
    ) -> Result<Self> {
        let endpoint = match endpoint {
            Some(u) => http::checked_url("IMDS endpoint", u)?,
            // 169.254.169.254 is link-local, not loopback: it is the one fixed http endpoint we accept.
            None => reqwest::Url::parse(crate::azure::cloud::IMDS_DEFAULT_ENDPOINT)
                .map_err(|e| AzureError::Config(e.to_string()))?,
        };
        Ok(ImdsCredential {
            http,
            endpoint,
            client_id,
        })
    }
}

#[async_trait::async_trait]
impl TokenCredential for ImdsCredential {
    async fn get_token(&self, resource: &str) -> Result<AccessToken> {
        let who = self.describe();
        let mut query = vec![("api-version", "2018-02-01"), ("resource", resource)];
        if let Some(c) = &self.client_id {
            query.push(("client_id", c));
        }
        let resp = self
            .http
            .get(self.endpoint.clone())
            .query(&query)
            .header("Metadata", "true")
            .send()
            .await
            .map_err(|e| http::transport(format!("{who}: {}", self.endpoint), &e))?;
        let (status, v) = read_json(resp, &who).await?;
        if status != 200 {
            return Err(aad_error(&who, status, &v));
        }
        token_from_json(&v, &who)
    }

    fn describe(&self) -> String {
        "managed identity (IMDS)".into()
    }
}

// ---------------------------------------------------------------------------------------------------

struct Cached {
    token: AccessToken,
    fetched: i64,
}

/// Keeps tokens per resource until shortly before expiry (5 minutes, or a quarter of a short lifetime).
pub struct CachedCredential {
    inner: Arc<dyn TokenCredential>,
    cache: tokio::sync::Mutex<HashMap<String, Cached>>,
}

impl CachedCredential {
    pub fn new(inner: Arc<dyn TokenCredential>) -> Self {
        CachedCredential {
            inner,
            cache: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A token for `resource` (same as [`TokenCredential::get_token`], without importing the trait).
    pub async fn get_token_for(&self, resource: &str) -> Result<AccessToken> {
        self.get_token(resource).await
    }

    /// Forget a token the server rejected (e.g. expired early), so the next call fetches a new one.
    pub async fn invalidate(&self, resource: &str) {
        self.cache.lock().await.remove(resource);
    }
}

#[async_trait::async_trait]
impl TokenCredential for CachedCredential {
    async fn get_token(&self, resource: &str) -> Result<AccessToken> {
        // One lock for the whole fetch: concurrent callers wait for one request instead of each sending one.
        let mut cache = self.cache.lock().await;
        let now = now_unix();
        if let Some(c) = cache.get(resource) {
            let lifetime = (c.token.expires_on - c.fetched).max(0);
            let margin = (lifetime / 4).min(300);
            if now < c.token.expires_on - margin {
                return Ok(c.token.clone());
            }
        }
        let token = self.inner.get_token(resource).await?;
        cache.insert(
            resource.to_string(),
            Cached {
                token: token.clone(),
                fetched: now,
            },
        );
        Ok(token)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Counting(AtomicU32, i64);
    #[async_trait::async_trait]
    impl TokenCredential for Counting {
        async fn get_token(&self, _r: &str) -> Result<AccessToken> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Ok(AccessToken {
                token: Secret::new(format!("t{n}")),
                expires_on: now_unix() + self.1,
            })
        }
        fn describe(&self) -> String {
            "counting".into()
        }
    }

    #[tokio::test]
    async fn cache_reuses_until_near_expiry_and_invalidates() {
        let inner = Arc::new(Counting(AtomicU32::new(0), 3600));
        let c = CachedCredential::new(inner.clone());
        assert_eq!(c.get_token("r").await.unwrap().token.expose(), "t0");
        assert_eq!(c.get_token("r").await.unwrap().token.expose(), "t0");
        assert_eq!(c.get_token("other").await.unwrap().token.expose(), "t1");
        c.invalidate("r").await;
        assert_eq!(c.get_token("r").await.unwrap().token.expose(), "t2");
        // A token about to expire is refetched.
        let short = CachedCredential::new(Arc::new(Counting(AtomicU32::new(0), 0)));
        short.get_token("r").await.unwrap();
        assert_eq!(short.get_token("r").await.unwrap().token.expose(), "t1");
    }

    #[test]
    fn aad_errors_are_explained() {
        let m = explain_aad_error(
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided. Trace ID: x",
        );
        assert!(
            m.contains("AADSTS7000215") && m.contains("client secret is wrong or expired"),
            "{m}"
        );
        let m = explain_aad_error(
            "unauthorized_client",
            "AADSTS700016: Application with identifier 'x' was not found",
        );
        assert!(m.contains("clientId"), "{m}");
        let m = explain_aad_error("weird", "Something odd\nmore");
        assert_eq!(m, "weird: Something odd");
    }

    #[test]
    fn jwt_expiry_and_token_json() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1234}"#);
        assert_eq!(jwt_exp(&format!("h.{payload}.s")), Some(1234));
        assert_eq!(jwt_exp("garbage"), None);
        let t = token_from_json(
            &serde_json::json!({"access_token":"a","expires_on":"99"}),
            "w",
        )
        .unwrap();
        assert_eq!(t.expires_on, 99);
        let t = token_from_json(
            &serde_json::json!({"access_token":"a","expires_in":60}),
            "w",
        )
        .unwrap();
        assert!(t.remaining() > 50);
        assert!(token_from_json(&serde_json::json!({}), "w").is_err());
        assert_eq!(format!("{:?}", t.token), "<redacted>");
    }

    #[tokio::test]
    async fn cli_credential_reads_az_output_and_explains_expired_login() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("az-ok");
        std::fs::write(
            &ok,
            "#!/bin/sh\necho '{\"accessToken\":\"tok\",\"expiresOn\":\"2030-01-01 00:00:00.000000\",\"expires_on\":1893456000}'\n",
        )
        .unwrap();
        let bad = dir.path().join("az-bad");
        std::fs::write(
            &bad,
            "#!/bin/sh\necho \"ERROR: AADSTS700082: The refresh token has expired. Please run 'az login' to setup account.\" >&2\nexit 1\n",
        )
        .unwrap();
        for p in [&ok, &bad] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let t = AzureCliCredential::new(ok.to_string_lossy(), None)
            .get_token("https://management.azure.com/")
            .await
            .unwrap();
        assert_eq!(t.token.expose(), "tok");
        assert_eq!(t.expires_on, 1893456000);
        let e = AzureCliCredential::new(bad.to_string_lossy(), Some("tid".into()))
            .get_token("r")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("az login --tenant tid"), "{e}");
        let e = AzureCliCredential::new("/nonexistent/az", None)
            .get_token("r")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("install the Azure CLI"), "{e}");
    }

    #[tokio::test]
    async fn device_code_refuses_without_terminal() {
        let c = DeviceCodeCredential::new(
            reqwest::Client::new(),
            "http://127.0.0.1:9/d".into(),
            "http://127.0.0.1:9/t".into(),
            false,
        );
        let e = c.get_token("r").await.unwrap_err().to_string();
        assert!(e.contains("needs a terminal"), "{e}");
    }

    #[test]
    fn himds_default_endpoint_only_reads_key_files_in_the_azcmagent_dir() {
        let c = HimdsCredential::new(reqwest::Client::new(), None).unwrap();
        let e = c.read_key("/etc/shadow").unwrap_err().to_string();
        assert!(e.contains("refusing"), "{e}");
        let e = c.read_key("relative.key").unwrap_err().to_string();
        assert!(e.contains("relative"), "{e}");
    }

    /// A key directory with a valid key file, and a root-only secret outside it.
    struct KeyDir {
        _tmp: tempfile::TempDir,
        keys: PathBuf,
        secret: PathBuf,
    }

    fn key_dir() -> KeyDir {
        let tmp = tempfile::tempdir().unwrap();
        let keys = tmp.path().join("tokens");
        std::fs::create_dir_all(keys.join("sub")).unwrap();
        std::fs::write(keys.join("good.key"), "k3y\n").unwrap();
        std::fs::write(keys.join("sub/nested.key"), "NESTED-CONTENT").unwrap();
        std::fs::write(keys.join("wrong.txt"), "txt").unwrap();
        std::fs::write(keys.join("big.key"), "x".repeat(4097)).unwrap();
        let secret = tmp.path().join("private.key");
        std::fs::write(&secret, "TOP-SECRET").unwrap();
        std::os::unix::fs::symlink(&secret, keys.join("link.key")).unwrap();
        KeyDir {
            _tmp: tmp,
            keys,
            secret,
        }
    }

    fn himds_in(dir: &Path, endpoint: Option<&str>) -> HimdsCredential {
        HimdsCredential::new(reqwest::Client::new(), endpoint)
            .unwrap()
            .with_key_dir(dir)
    }

    #[test]
    fn himds_key_file_must_be_a_small_regular_key_file_directly_in_the_key_dir() {
        let d = key_dir();
        let k = |n: &str| d.keys.join(n).to_string_lossy().into_owned();
        // With IDENTITY_ENDPOINT set as well as without: the endpoint does not relax the rule.
        for endpoint in [
            None,
            Some("http://127.0.0.1:40342/metadata/identity/oauth2/token"),
        ] {
            let c = himds_in(&d.keys, endpoint);
            assert_eq!(c.read_key(&k("good.key")).unwrap(), "k3y");
            let cases = [
                // Traversal out of the key directory to a file that exists and ends in .key.
                (
                    format!("{}/../private.key", d.keys.display()),
                    "contains a \"..\" or \".\" component",
                ),
                (
                    format!("{}/./good.key", d.keys.display()),
                    "contains a \"..\" or \".\" component",
                ),
                (k("link.key"), "is a symbolic link"),
                (k("wrong.txt"), "does not end in .key"),
                (k("big.key"), "is 4097 bytes, larger than 4096"),
                (k("sub/nested.key"), "is not directly inside"),
                (
                    d.secret.to_string_lossy().into_owned(),
                    "is not directly inside",
                ),
                (k("sub"), "does not end in .key"),
            ];
            for (realm, rule) in cases {
                let e = c.read_key(&realm).unwrap_err().to_string();
                assert!(
                    e.contains(&format!("{realm:?}"))
                        && e.contains(rule)
                        && e.contains("refusing to read it"),
                    "{realm}: {e}"
                );
                assert!(
                    !e.contains("TOP-SECRET") && !e.contains("NESTED-CONTENT"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn himds_traversal_from_the_real_key_dir_is_refused_with_identity_endpoint_set() {
        // Before: IDENTITY_ENDPOINT switched the check off, and starts_with let this pass without it.
        let c = HimdsCredential::new(
            reqwest::Client::new(),
            Some("http://127.0.0.1:40342/metadata/identity/oauth2/token"),
        )
        .unwrap();
        for realm in [
            "/var/opt/azcmagent/tokens/../../../etc/ssl/private/x.key",
            "/etc/ssl/private/x.key",
        ] {
            let e = c.read_key(realm).unwrap_err().to_string();
            assert!(
                e.contains("refusing to read it") && e.contains(realm),
                "{e}"
            );
        }
    }
}
