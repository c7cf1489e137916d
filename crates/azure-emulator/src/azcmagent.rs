//! The `azcmagent` stand-in: the command-line contract of the Azure Connected Machine agent
//! that aks-flex-node relies on (`connect` with its flags or `--config` JSON file, `show` and
//! `show -j`, `disconnect [--force-local-only]`, `version`), acting on the emulator over HTTP.
//!
//! The emulator is found through `FLEXNODE_EMULATOR_URL` (base or control URL) and "this
//! host" through `FLEXNODE_EMULATOR_HOST` (default `default`), so many simulated hosts can share
//! one emulator. `connect` registers the machine with an ARM PUT made with the caller's token
//! (so permission checks apply to the caller) and records the host as connected, which enables
//! its HIMDS identity.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::state::HostAgent;

/// The agent version the stand-in reports.
pub const AGENT_VERSION: &str = "1.48.02881.1941";
/// api-version used for the machine resource.
const MACHINE_API_VERSION: &str = "2022-03-10";
/// Environment variable naming the emulator.
pub const ENV_URL: &str = "FLEXNODE_EMULATOR_URL";
/// Environment variable naming the simulated host.
pub const ENV_HOST: &str = "FLEXNODE_EMULATOR_HOST";

#[derive(Debug, Parser)]
#[command(
    name = "azcmagent",
    about = "Azure Connected Machine agent (flexnode-emulator stand-in)",
    disable_version_flag = true
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args, Default)]
struct Common {
    /// JSON file whose keys are flag names (e.g. "access-token"); command-line flags win.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output JSON.
    #[arg(short = 'j', long, global = true)]
    json: bool,
    /// Accepted for compatibility.
    #[arg(short = 'v', long, global = true)]
    verbose: bool,
    /// Write errors to stderr (they always are here).
    #[arg(long, global = true)]
    log_stderr: bool,
    /// Accepted for compatibility.
    #[arg(long, global = true)]
    no_color: bool,
}

// Parsed once per process; boxing the large variant would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Connect this machine to Azure Arc.
    Connect(ConnectArgs),
    /// Show the local agent status.
    Show,
    /// Disconnect this machine from Azure Arc.
    Disconnect(DisconnectArgs),
    /// Print the agent version.
    Version,
}

#[derive(Debug, Args, Default, Clone)]
struct ConnectArgs {
    /// ARM access token (prefer the config file: argv is visible to other users).
    #[arg(long)]
    access_token: Option<String>,
    /// Resource group for the machine resource.
    #[arg(short = 'g', long)]
    resource_group: Option<String>,
    /// Tenant id.
    #[arg(short = 't', long)]
    tenant_id: Option<String>,
    /// Region.
    #[arg(short = 'l', long)]
    location: Option<String>,
    /// Subscription id.
    #[arg(short = 's', long)]
    subscription_id: Option<String>,
    /// Machine resource name (default: the host name).
    #[arg(short = 'n', long)]
    resource_name: Option<String>,
    /// Tags, `Name=Value`, comma-separated or repeated.
    #[arg(long)]
    tags: Vec<String>,
    /// Cloud (`AzureCloud`).
    #[arg(long)]
    cloud: Option<String>,
    /// Correlation id.
    #[arg(long)]
    correlation_id: Option<String>,
    /// Service principal application id.
    #[arg(short = 'i', long)]
    service_principal_id: Option<String>,
    /// Service principal secret (prefer the config file).
    #[arg(short = 'p', long)]
    service_principal_secret: Option<String>,
    /// Not supported by the stand-in (use a token or a service principal).
    #[arg(long)]
    use_device_code: bool,
    /// Accepted and ignored.
    #[arg(long)]
    private_link_scope: Option<String>,
}

#[derive(Debug, Args, Default, Clone)]
struct DisconnectArgs {
    /// Only reset local state; leave the Azure resource alone.
    #[arg(long)]
    force_local_only: bool,
    /// ARM access token.
    #[arg(long)]
    access_token: Option<String>,
    /// Service principal application id.
    #[arg(short = 'i', long)]
    service_principal_id: Option<String>,
    /// Service principal secret.
    #[arg(short = 'p', long)]
    service_principal_secret: Option<String>,
}

/// A failure, printed as `FATAL   <message>` with exit code 1.
#[derive(Debug)]
struct Fatal(String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal(e.to_string())
    }
}

fn fatal(msg: impl Into<String>) -> Fatal {
    Fatal(msg.into())
}

/// Run the stand-in with `args` (the first element is the program name). Returns the exit
/// code: 0 success, 1 failure, 2 usage error.
pub async fn run(args: Vec<OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match execute(cli).await {
        Ok(()) => 0,
        Err(Fatal(m)) => {
            eprintln!("FATAL   {m}");
            1
        }
    }
}

async fn execute(cli: Cli) -> Result<(), Fatal> {
    let config = match &cli.common.config {
        Some(path) => Some(read_config(path)?),
        None => None,
    };
    match cli.command {
        Command::Version => {
            println!("azcmagent version {AGENT_VERSION}");
            Ok(())
        }
        Command::Show => show(&Env::from_process()?, cli.common.json).await,
        Command::Connect(mut a) => {
            if let Some(c) = &config {
                merge_connect(&mut a, c)?;
            }
            connect(&Env::from_process()?, a).await
        }
        Command::Disconnect(mut a) => {
            if let Some(c) = &config {
                merge_disconnect(&mut a, c)?;
            }
            disconnect(&Env::from_process()?, a).await
        }
    }
}

fn read_config(path: &PathBuf) -> Result<serde_json::Map<String, Value>, Fatal> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| fatal(format!("cannot read config file {}: {e}", path.display())))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(fatal(format!(
            "config file {} must hold a JSON object of flag names to values",
            path.display()
        ))),
        Err(e) => Err(fatal(format!(
            "config file {} is not valid JSON: {e}",
            path.display()
        ))),
    }
}

fn config_string(key: &str, v: &Value) -> Result<String, Fatal> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(fatal(format!("config key '{key}' must be a string"))),
    }
}

fn config_bool(key: &str, v: &Value) -> Result<bool, Fatal> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
        _ => Err(fatal(format!("config key '{key}' must be true or false"))),
    }
}

fn set_if_none(slot: &mut Option<String>, key: &str, v: &Value) -> Result<(), Fatal> {
    if slot.is_none() {
        *slot = Some(config_string(key, v)?);
    }
    Ok(())
}

fn merge_connect(a: &mut ConnectArgs, c: &serde_json::Map<String, Value>) -> Result<(), Fatal> {
    for (k, v) in c {
        match k.as_str() {
            "access-token" => set_if_none(&mut a.access_token, k, v)?,
            "resource-group" => set_if_none(&mut a.resource_group, k, v)?,
            "tenant-id" => set_if_none(&mut a.tenant_id, k, v)?,
            "location" => set_if_none(&mut a.location, k, v)?,
            "subscription-id" => set_if_none(&mut a.subscription_id, k, v)?,
            "resource-name" => set_if_none(&mut a.resource_name, k, v)?,
            "cloud" => set_if_none(&mut a.cloud, k, v)?,
            "correlation-id" => set_if_none(&mut a.correlation_id, k, v)?,
            "service-principal-id" => set_if_none(&mut a.service_principal_id, k, v)?,
            "service-principal-secret" => set_if_none(&mut a.service_principal_secret, k, v)?,
            "private-link-scope" => set_if_none(&mut a.private_link_scope, k, v)?,
            "use-device-code" => a.use_device_code |= config_bool(k, v)?,
            "tags" if a.tags.is_empty() => match v {
                Value::String(s) => a.tags.push(s.clone()),
                Value::Array(items) => {
                    for i in items {
                        a.tags.push(config_string(k, i)?);
                    }
                }
                Value::Object(m) => {
                    for (tk, tv) in m {
                        a.tags.push(format!("{tk}={}", config_string(k, tv)?));
                    }
                }
                _ => return Err(fatal("config key 'tags' must be a string, list or object")),
            },
            "tags" | "verbose" | "json" | "log-stderr" | "no-color" => {}
            other => {
                return Err(fatal(format!(
                    "unknown key '{other}' in config file: keys are the long flag names of 'azcmagent connect'"
                )))
            }
        }
    }
    Ok(())
}

fn merge_disconnect(
    a: &mut DisconnectArgs,
    c: &serde_json::Map<String, Value>,
) -> Result<(), Fatal> {
    for (k, v) in c {
        match k.as_str() {
            "access-token" => set_if_none(&mut a.access_token, k, v)?,
            "service-principal-id" => set_if_none(&mut a.service_principal_id, k, v)?,
            "service-principal-secret" => set_if_none(&mut a.service_principal_secret, k, v)?,
            "force-local-only" => a.force_local_only |= config_bool(k, v)?,
            "verbose" | "json" | "log-stderr" | "no-color" => {}
            other => {
                return Err(fatal(format!(
                    "unknown key '{other}' in config file: keys are the long flag names of 'azcmagent disconnect'"
                )))
            }
        }
    }
    Ok(())
}

struct Env {
    base: String,
    host: String,
    http: reqwest::Client,
}

impl Env {
    fn from_process() -> Result<Env, Fatal> {
        let url = std::env::var(ENV_URL).map_err(|_| {
            fatal(format!(
                "{ENV_URL} is not set: point it at the emulator (the base or control URL printed by 'flexnode-emulator serve')"
            ))
        })?;
        let base = url
            .trim_end_matches('/')
            .trim_end_matches("/_emulator")
            .to_string();
        let host = std::env::var(ENV_HOST).unwrap_or_else(|_| "default".to_string());
        if !crate::himds::valid_host(&host) {
            return Err(fatal(format!(
                "{ENV_HOST}='{host}' is not a valid host name (1-64 letters, digits, '-', '_', '.')"
            )));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Env { base, host, http })
    }

    async fn host_state(&self) -> Result<HostAgent, Fatal> {
        let url = format!("{}/_emulator/hosts/{}", self.base, self.host);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| fatal(format!("cannot reach the emulator at {}: {e}", self.base)))?;
        if !resp.status().is_success() {
            return Err(fatal(format!(
                "the emulator refused the host state request: HTTP {}",
                resp.status()
            )));
        }
        Ok(resp.json().await?)
    }

    async fn set_host_state(&self, state: &HostAgent) -> Result<(), Fatal> {
        let url = format!("{}/_emulator/hosts/{}", self.base, self.host);
        let resp = self
            .http
            .put(&url)
            .json(state)
            .send()
            .await
            .map_err(|e| fatal(format!("cannot reach the emulator at {}: {e}", self.base)))?;
        if !resp.status().is_success() {
            return Err(fatal(format!(
                "the emulator refused the host state update: HTTP {}",
                resp.status()
            )));
        }
        Ok(())
    }

    /// An ARM token: the given one, or one obtained for the service principal.
    async fn token(
        &self,
        access_token: Option<String>,
        sp_id: Option<String>,
        sp_secret: Option<String>,
        tenant: Option<&str>,
    ) -> Result<String, Fatal> {
        if let Some(t) = access_token.filter(|t| !t.trim().is_empty()) {
            return Ok(t.trim().to_string());
        }
        let (Some(id), Some(secret)) = (sp_id, sp_secret) else {
            return Err(fatal(
                "no credentials: give --access-token (or \"access-token\" in --config) or --service-principal-id with --service-principal-secret; interactive and device code login are not supported by the emulator's azcmagent",
            ));
        };
        let tenant =
            tenant.ok_or_else(|| fatal("--tenant-id is required with a service principal"))?;
        let resp = self
            .http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string([
                ("grant_type", "client_credentials"),
                ("client_id", id.as_str()),
                ("client_secret", secret.as_str()),
                ("scope", "https://management.azure.com/.default"),
            ])?)
            .send()
            .await
            .map_err(|e| fatal(format!("cannot reach the emulator at {}: {e}", self.base)))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        match body.get("access_token").and_then(Value::as_str) {
            Some(t) if status.is_success() => Ok(t.to_string()),
            _ => Err(fatal(format!(
                "AZCM0041: The credentials supplied are invalid: {}",
                body.get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or("token request failed")
            ))),
        }
    }
}

fn arm_message(status: reqwest::StatusCode, body: &Value) -> String {
    let code = body
        .pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("HTTP {} {code}: {message}", status.as_u16())
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

async fn connect(env: &Env, a: ConnectArgs) -> Result<(), Fatal> {
    if a.use_device_code {
        return Err(fatal(
            "--use-device-code is not supported by the emulator's azcmagent; pass an access token",
        ));
    }
    let require = |v: &Option<String>, flag: &str| {
        v.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            fatal(format!(
                "required flag --{flag} is missing (or set \"{flag}\" in --config)"
            ))
        })
    };
    let sub = require(&a.subscription_id, "subscription-id")?;
    let rg = require(&a.resource_group, "resource-group")?;
    let location = require(&a.location, "location")?;
    let name = a
        .resource_name
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            if std::env::var(ENV_HOST).is_ok() {
                env.host.clone()
            } else {
                local_hostname()
            }
        });
    let local = env.host_state().await?;
    if local.connected {
        return Err(fatal(format!(
            "The machine is already connected to Azure (resource {}). Run 'azcmagent disconnect' first.",
            local.resource_id
        )));
    }
    let token = env
        .token(
            a.access_token.clone(),
            a.service_principal_id.clone(),
            a.service_principal_secret.clone(),
            a.tenant_id.as_deref(),
        )
        .await?;
    let mut tags = serde_json::Map::new();
    for t in a.tags.iter().flat_map(|t| t.split(',')) {
        let t = t.trim();
        if t.is_empty() {
            continue;
        }
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| fatal(format!("tag '{t}' is not in the form Name=Value")))?;
        tags.insert(k.to_string(), json!(v));
    }
    println!("INFO    Connecting machine to Azure... This might take a few minutes.");
    let id = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{name}"
    );
    let resp = env
        .http
        .put(format!(
            "{}{id}?api-version={MACHINE_API_VERSION}",
            env.base
        ))
        .bearer_auth(&token)
        .json(&json!({
            "location": location,
            "identity": {"type": "SystemAssigned"},
            "tags": tags,
            "properties": {
                "osName": "linux",
                "osType": "linux",
                "agentVersion": AGENT_VERSION,
                "machineFqdn": name,
            }
        }))
        .send()
        .await
        .map_err(|e| fatal(format!("cannot reach the emulator at {}: {e}", env.base)))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(fatal(format!(
            "AZCM0041: The credentials supplied are invalid: {}",
            arm_message(status, &body)
        )));
    }
    if !status.is_success() {
        return Err(fatal(format!(
            "Failed to create the machine resource in Azure: {}",
            arm_message(status, &body)
        )));
    }
    let tenant = body
        .pointer("/identity/tenantId")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(a.tenant_id.clone())
        .unwrap_or_default();
    let state = HostAgent {
        connected: true,
        resource_id: body
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or(&id)
            .to_string(),
        resource_name: name.clone(),
        resource_group: rg,
        subscription_id: sub,
        tenant_id: tenant,
        location,
        cloud: a.cloud.unwrap_or_else(|| "AzureCloud".to_string()),
        correlation_id: a
            .correlation_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        vm_id: body
            .pointer("/properties/vmId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        last_heartbeat: crate::state::now_rfc3339(),
    };
    env.set_host_state(&state).await?;
    println!("INFO    Connected machine to Azure");
    println!(
        "INFO    Machine overview page: {}{}",
        env.base, state.resource_id
    );
    Ok(())
}

fn show_fields(h: &HostAgent) -> Vec<(&'static str, &'static str, String)> {
    let status = if h.connected {
        "Connected"
    } else {
        "Disconnected"
    };
    let namespace = if h.connected {
        "Microsoft.HybridCompute"
    } else {
        ""
    };
    vec![
        ("Resource Name", "resourceName", h.resource_name.clone()),
        (
            "Resource Group Name",
            "resourceGroup",
            h.resource_group.clone(),
        ),
        (
            "Resource Namespace",
            "resourceNamespace",
            namespace.to_string(),
        ),
        ("Resource Id", "resourceId", h.resource_id.clone()),
        (
            "Subscription ID",
            "subscriptionId",
            h.subscription_id.clone(),
        ),
        ("Tenant ID", "tenantId", h.tenant_id.clone()),
        ("VM ID", "vmId", h.vm_id.clone()),
        ("Correlation ID", "correlationId", h.correlation_id.clone()),
        ("Location", "location", h.location.clone()),
        ("Cloud", "cloud", h.cloud.clone()),
        ("Agent Version", "agentVersion", AGENT_VERSION.to_string()),
        ("Agent Status", "status", status.to_string()),
        (
            "Agent Last Heartbeat",
            "lastHeartbeat",
            h.last_heartbeat.clone(),
        ),
        ("Agent Error Code", "agentErrorCode", String::new()),
        ("Agent Error Details", "agentErrorDetails", String::new()),
        (
            "Agent Error Timestamp",
            "agentErrorTimestamp",
            String::new(),
        ),
        ("Using HTTPS Proxy", "httpsProxy", String::new()),
        ("Proxy Bypass List", "proxyBypassList", String::new()),
        ("Cloud Provider", "cloudProvider", "N/A".to_string()),
        (
            "Manufacturer",
            "manufacturer",
            "flexnode-emulator".to_string(),
        ),
        ("Model", "model", "emulated".to_string()),
    ]
}

async fn show(env: &Env, as_json: bool) -> Result<(), Fatal> {
    let h = env.host_state().await?;
    let fields = show_fields(&h);
    if as_json {
        let mut out: BTreeMap<&str, Value> =
            fields.iter().map(|(_, k, v)| (*k, json!(v))).collect();
        let svc = if h.connected { "running" } else { "stopped" };
        out.insert(
            "services",
            json!({"himds": svc, "gcarcservice": svc, "extd": svc}),
        );
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (label, _, value) in &fields {
            println!("{label:<40}: {value}");
        }
        let svc = if h.connected { "running" } else { "stopped" };
        println!("Dependent Service Status");
        println!("  {:<38}: {svc}", "Agent Service (himds)");
        println!("  {:<38}: {svc}", "GC Service (gcarcservice)");
        println!("  {:<38}: {svc}", "Extension Service (extd)");
    }
    Ok(())
}

async fn disconnect(env: &Env, a: DisconnectArgs) -> Result<(), Fatal> {
    let local = env.host_state().await?;
    if a.force_local_only {
        env.set_host_state(&HostAgent::default()).await?;
        println!("INFO    Local agent state reset (the Azure resource, if any, was left in place)");
        return Ok(());
    }
    if !local.connected {
        return Err(fatal(
            "The machine is not connected to Azure; nothing to disconnect (use --force-local-only to reset local state)",
        ));
    }
    let token = env
        .token(
            a.access_token,
            a.service_principal_id,
            a.service_principal_secret,
            Some(local.tenant_id.as_str()).filter(|t| !t.is_empty()),
        )
        .await?;
    let resp = env
        .http
        .delete(format!(
            "{}{}?api-version={MACHINE_API_VERSION}",
            env.base, local.resource_id
        ))
        .bearer_auth(&token)
        .send()
        .await
        .map_err(|e| fatal(format!("cannot reach the emulator at {}: {e}", env.base)))?;
    let status = resp.status();
    if !status.is_success() {
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        return Err(fatal(format!(
            "Failed to delete the machine resource in Azure: {}",
            arm_message(status, &body)
        )));
    }
    env.set_host_state(&HostAgent::default()).await?;
    println!("INFO    Disconnected machine from Azure");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fills_only_missing_flags() {
        let mut a = ConnectArgs {
            location: Some("westus".into()),
            ..Default::default()
        };
        let c: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"location":"eastus","access-token":"tok","tags":{"a":"b"},"resource-group":"rg"}"#,
        )
        .unwrap();
        merge_connect(&mut a, &c).unwrap();
        assert_eq!(a.location.as_deref(), Some("westus"));
        assert_eq!(a.access_token.as_deref(), Some("tok"));
        assert_eq!(a.resource_group.as_deref(), Some("rg"));
        assert_eq!(a.tags, vec!["a=b".to_string()]);
    }

    #[test]
    fn unknown_config_key_is_named() {
        let mut a = ConnectArgs::default();
        let c: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"acess-token":"x"}"#).unwrap();
        let err = merge_connect(&mut a, &c).unwrap_err();
        assert!(err.0.contains("acess-token"), "{}", err.0);
    }
}
