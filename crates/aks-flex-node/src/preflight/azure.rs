//! Azure checks: the Arc agent and its services, the endpoints (through the configured proxy), the
//! clock against Azure's, the sign-in, what the identity may do for bootstrap *and* unbootstrap, and the
//! cluster's Azure RBAC. Reads only: HEAD requests, a token, the permissions list, a cluster GET.
//!
//! Skipped, each with the reason, when bootstrap makes no Azure call (`azure.arc.enabled=false`, the
//! identity phase skipped).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{CheckResult, Severity};
use crate::azure::arc::INSTALL_HINT;
use crate::azure::credential::TokenCredential;
use crate::azure::permissions::{self, Need};
use crate::azure::settings::{AzureSession, AzureSettings};
use crate::azure::{aks, AzureError};
use crate::engine::journal::EntryStatus;
use crate::engine::{Context, UndoOp};
use crate::host::CommandSpec;
use crate::steps::arc_install;

/// Each Azure check gets at most this long (retries included).
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// The reachability probe's timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Above this skew a warning; above [`SKEW_ERROR`] an error (Entra tokens allow five minutes).
const SKEW_WARNING: Duration = Duration::from_secs(60);
const SKEW_ERROR: Duration = Duration::from_secs(300);
/// azcmagent 1.62 renamed the guest configuration service `gcarcservice` to `gcad`.
const GCAD_SINCE: (u32, u32) = (1, 62);

/// Every Azure check's name, in order (for skipping them all at once).
pub const NAMES: [(&str, Severity); 8] = [
    ("ArcAgent", Severity::Error),
    ("ArcServices", Severity::Warning),
    ("AzureEndpoints", Severity::Error),
    ("ClockSkew", Severity::Warning),
    ("AzureLogin", Severity::Error),
    ("AzurePermissions", Severity::Error),
    ("AzureUnbootstrapPermissions", Severity::Warning),
    ("ClusterAzureRBAC", Severity::Error),
];

fn all_skipped(reason: &str) -> Vec<CheckResult> {
    NAMES
        .iter()
        .map(|(n, s)| CheckResult::skipped(*n, *s, reason))
        .collect()
}

/// Run the Azure checks (`skip`: why they do not apply to this run).
pub async fn run(ctx: &Context, skip: Option<&str>) -> Vec<CheckResult> {
    if let Some(reason) = skip {
        return all_skipped(reason);
    }
    if !ctx.config.azure.arc.enabled {
        return all_skipped("azure.arc.enabled is false: bootstrap makes no Azure call");
    }
    let env = |k: &str| std::env::var(k).ok();
    let settings = match AzureSettings::from_config(&ctx.config, &env) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            let mut v = all_skipped("the Azure settings are unusable (see AzureLogin)");
            v[4] = CheckResult::problem(
                "AzureLogin",
                Severity::Error,
                e.to_string(),
                "fix the azure section of the configuration",
            );
            return v;
        }
    };
    let session = match settings.session() {
        Ok(s) => s,
        Err(e) => {
            let mut v = all_skipped("no Azure session (see AzureLogin)");
            v[4] = CheckResult::problem(
                "AzureLogin",
                Severity::Error,
                e.to_string(),
                "fix the azure section of the configuration (caBundle, endpoints)",
            );
            return v;
        }
    };
    let mut out = Vec::new();
    let (agent, version) = arc_agent(ctx, &settings).await;
    out.push(agent);
    out.push(arc_services(ctx, version).await);
    let (endpoints, date) = endpoints(&session, &settings).await;
    out.push(endpoints);
    out.push(match date {
        Some(d) => clock_skew(SystemTime::now(), d),
        None => CheckResult::skipped(
            "ClockSkew",
            Severity::Warning,
            "no Date header from Azure Resource Manager to compare with (see AzureEndpoints)",
        ),
    });
    let login = login(&session, &settings).await;
    let logged_in = login.status == super::Status::Pass;
    out.push(login);
    if logged_in {
        out.extend(permissions_checks(ctx, &session, &settings).await);
        out.push(cluster_rbac(&session, &settings).await);
    } else {
        for (n, s) in &NAMES[5..] {
            out.push(CheckResult::skipped(
                *n,
                *s,
                "no Azure token (see AzureLogin)",
            ));
        }
    }
    out
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, AzureError>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
    }
}

// ---------------------------------------------------------------------------------------------------
// The Arc agent

/// `major.minor` of `azcmagent version` output ("azcmagent version 1.45.02742.1234").
pub fn parse_azcmagent_version(text: &str) -> Option<(u32, u32)> {
    let v = text
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.'))?;
    let mut it = v.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The Arc agent's services for its version: HIMDS (`himdsd`) and the guest configuration service
/// (`gcad` from 1.62, `gcarcservice` before).
pub fn arc_services_for(version: Option<(u32, u32)>) -> [&'static str; 2] {
    match version {
        Some(v) if v < GCAD_SINCE => ["himdsd", "gcarcservice"],
        _ => ["himdsd", "gcad"],
    }
}

/// `ArcAgent`: azcmagent is installed, and which version.
async fn arc_agent(ctx: &Context, st: &AzureSettings) -> (CheckResult, Option<(u32, u32)>) {
    const NAME: &str = "ArcAgent";
    let sev = Severity::Error;
    let mut spec = CommandSpec::new(&st.azcmagent)
        .arg("version")
        .timeout(Duration::from_secs(30));
    for (k, v) in &st.azcmagent_env {
        spec = spec.env(k, v);
    }
    // Read-only: runs for real even in a sandbox root (as `azcmagent show` does).
    match ctx.host.run(&spec).await {
        Ok(out) if out.success() => {
            let v = parse_azcmagent_version(&out.stdout);
            let shown = v.map_or_else(|| out.stdout.trim().to_string(), |(a, b)| format!("{a}.{b}"));
            (
                CheckResult::pass(NAME, sev, format!("azcmagent {shown} ({})", st.azcmagent)),
                v,
            )
        }
        Ok(out) => (
            CheckResult::problem(
                NAME,
                sev,
                format!(
                    "`{} version` failed (exit {}): {}",
                    st.azcmagent,
                    out.code,
                    out.stderr.trim()
                ),
                "check the Arc agent's installation (azcmagent show; /var/opt/azcmagent/log/azcmagent.log)",
            ),
            None,
        ),
        Err(e) => (
            CheckResult::problem(
                NAME,
                sev,
                format!(
                    "`{}` (the Azure Arc agent) is not installed or not on PATH: {e}",
                    st.azcmagent
                ),
                INSTALL_HINT,
            ),
            None,
        ),
    }
}

/// `ArcServices`: the Arc agent's services are running.
async fn arc_services(ctx: &Context, version: Option<(u32, u32)>) -> CheckResult {
    const NAME: &str = "ArcServices";
    let sev = Severity::Warning;
    if ctx.host.is_sandbox() {
        return CheckResult::skipped(NAME, sev, "sandbox root: its services are simulated");
    }
    let units = arc_services_for(version);
    let mut down = Vec::new();
    for u in units {
        match ctx.host.unit_state(&format!("{u}.service")).await {
            Ok(s) if s.active => {}
            Ok(_) => down.push(u),
            Err(e) => return CheckResult::skipped(NAME, sev, format!("systemctl: {e}")),
        }
    }
    if down.is_empty() {
        CheckResult::pass(NAME, sev, format!("{} are active", units.join(", ")))
    } else {
        CheckResult::problem(
            NAME,
            sev,
            format!(
                "not active: {} (HIMDS serves the node's identity to the kubelet)",
                down.join(", ")
            ),
            format!(
                "systemctl start {}; if that fails, see `azcmagent show` and /var/opt/azcmagent/log/",
                down.join(" ")
            ),
        )
    }
}

// ---------------------------------------------------------------------------------------------------
// Network and clock

fn proxy_note() -> &'static str {
    let set = |k: &str| {
        std::env::var(k).is_ok_and(|v| !v.is_empty())
            || std::env::var(k.to_ascii_lowercase()).is_ok_and(|v| !v.is_empty())
    };
    if set("HTTPS_PROXY") {
        " through HTTPS_PROXY"
    } else {
        ""
    }
}

/// `AzureEndpoints`: ARM and Entra ID answer (any HTTP status), through the proxy if one is set. Returns
/// ARM's `Date` header for the clock check.
async fn endpoints(s: &AzureSession, st: &AzureSettings) -> (CheckResult, Option<SystemTime>) {
    const NAME: &str = "AzureEndpoints";
    let sev = Severity::Error;
    let mut bad = Vec::new();
    let mut date = None;
    for (what, url) in [
        ("Azure Resource Manager", &st.endpoints.resource_manager),
        ("Entra ID (login)", &st.endpoints.active_directory),
    ] {
        match s
            .http
            .head(url.as_str())
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
        {
            Ok(r) => {
                if date.is_none() {
                    date = r
                        .headers()
                        .get(reqwest::header::DATE)
                        .and_then(|d| d.to_str().ok())
                        .and_then(|d| httpdate::parse_http_date(d).ok());
                }
            }
            Err(e) => bad.push(format!(
                "{what} {url}: {}",
                crate::azure::http::transport("HEAD", &e)
            )),
        }
    }
    let proxy = proxy_note();
    let r = if bad.is_empty() {
        CheckResult::pass(
            NAME,
            sev,
            format!(
                "{} and {} answer{proxy}",
                st.endpoints.resource_manager, st.endpoints.active_directory
            ),
        )
    } else {
        CheckResult::problem(
            NAME,
            sev,
            format!("not reachable{proxy}: {}", bad.join("; ")),
            "allow HTTPS to these hosts (firewall), or set HTTPS_PROXY/NO_PROXY for the agent",
        )
    };
    (r, date)
}

/// `ClockSkew`: this clock against Azure's `Date` header.
pub fn clock_skew(now: SystemTime, azure: SystemTime) -> CheckResult {
    const NAME: &str = "ClockSkew";
    let skew = now
        .duration_since(azure)
        .or_else(|_| azure.duration_since(now))
        .unwrap_or_default();
    let secs = skew.as_secs();
    let fix = "synchronise the clock: timedatectl set-ntp true (systemd-timesyncd or chrony)";
    if skew > SKEW_ERROR {
        CheckResult::problem(
            NAME,
            Severity::Error,
            format!("this clock is {secs}s off Azure's: Entra ID tokens would be refused"),
            fix,
        )
    } else if skew > SKEW_WARNING {
        CheckResult::problem(
            NAME,
            Severity::Warning,
            format!("this clock is {secs}s off Azure's"),
            fix,
        )
    } else {
        CheckResult::pass(
            NAME,
            Severity::Warning,
            format!("within {}s of Azure's clock", SKEW_WARNING.as_secs()),
        )
    }
}

// ---------------------------------------------------------------------------------------------------
// Identity and permissions

/// `AzureLogin`: the configured credential gets an ARM token.
async fn login(s: &AzureSession, st: &AzureSettings) -> CheckResult {
    const NAME: &str = "AzureLogin";
    let sev = Severity::Error;
    let who = s.arm.credential().describe();
    match timed(s.arm.credential().get_token_for(&st.endpoints.arm_resource)).await {
        Ok(_) => CheckResult::pass(NAME, sev, format!("signed in ({who})")),
        Err(e) => CheckResult::problem(
            NAME,
            sev,
            format!("cannot sign in to Azure ({who}): {e}"),
            "fix the credential in azure.servicePrincipal / azure.managedIdentity, or `az login` for the Azure CLI",
        ),
    }
}

fn rg_scope(st: &AzureSettings) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}",
        st.subscription_id, st.arc.resource_group
    )
}

/// What bootstrap's Azure writes need (as `ArcInstall` checks before its first write), and whether the
/// journal says they were already done (a converged node needs them only to repair drift).
pub fn bootstrap_needs(st: &AzureSettings) -> Vec<Need> {
    let mut v = vec![Need {
        action: "Microsoft.HybridCompute/machines/write".into(),
        scope: rg_scope(st),
        purpose: format!("register the Arc machine {}", st.machine_id()),
    }];
    if st.arc.auto_role_assignment {
        v.extend(st.arc.roles.iter().map(|r| Need {
            action: "Microsoft.Authorization/roleAssignments/write".into(),
            scope: st.cluster.resource_id.clone(),
            purpose: format!("assign {} to the Arc identity", r.name),
        }));
    }
    v
}

/// What unbootstrap's deletes need: the Arc machine and the role assignments the agent created.
pub fn unbootstrap_needs(st: &AzureSettings) -> Vec<Need> {
    let mut v = vec![Need {
        action: "Microsoft.HybridCompute/machines/delete".into(),
        scope: rg_scope(st),
        purpose: format!("delete the Arc machine {} (unbootstrap)", st.machine_id()),
    }];
    if st.arc.auto_role_assignment {
        v.push(Need {
            action: "Microsoft.Authorization/roleAssignments/delete".into(),
            scope: st.cluster.resource_id.clone(),
            purpose: "delete the role assignments it created (unbootstrap)".into(),
        });
    }
    v
}

/// Whether this agent's journal records a finished identity phase for this machine.
fn identity_converged(ctx: &Context, st: &AzureSettings) -> bool {
    let j = ctx.journal_snapshot();
    let done = j
        .steps
        .get(arc_install::NAME)
        .is_some_and(|r| r.status == EntryStatus::Done);
    let machine = st.machine_id();
    done && j.undo_for(arc_install::NAME).iter().any(|e| {
        matches!(&e.op, UndoOp::Custom { kind, data } if kind == "arcMachine"
            && data["resourceId"].as_str().is_some_and(|r| r.eq_ignore_ascii_case(&machine)))
    })
}

/// `AzurePermissions` (bootstrap's writes) and `AzureUnbootstrapPermissions` (unbootstrap's deletes),
/// from one permissions list per scope.
async fn permissions_checks(
    ctx: &Context,
    s: &AzureSession,
    st: &AzureSettings,
) -> Vec<CheckResult> {
    let boot = bootstrap_needs(st);
    let unboot = unbootstrap_needs(st);
    let all: Vec<Need> = boot.iter().chain(unboot.iter()).cloned().collect();
    let missing = match timed(permissions::missing(&s.arm, &all)).await {
        Ok(m) => m,
        Err(e) => {
            let why = format!("cannot list the identity's permissions: {e}");
            return vec![
                CheckResult::skipped("AzurePermissions", Severity::Error, &why),
                CheckResult::skipped("AzureUnbootstrapPermissions", Severity::Warning, &why),
            ];
        }
    };
    let (miss_boot, miss_unboot): (Vec<Need>, Vec<Need>) =
        missing.into_iter().partition(|n| boot.contains(n));
    vec![
        bootstrap_permissions(ctx, st, &miss_boot),
        unbootstrap_permissions(&miss_unboot),
    ]
}

fn bootstrap_permissions(ctx: &Context, st: &AzureSettings, missing: &[Need]) -> CheckResult {
    const NAME: &str = "AzurePermissions";
    if missing.is_empty() {
        return CheckResult::pass(
            NAME,
            Severity::Error,
            "the identity may register the Arc machine and assign its roles",
        );
    }
    let fix =
        "grant the identity the roles named above, or run bootstrap with an identity that has them";
    if identity_converged(ctx, st) {
        CheckResult::problem(
            NAME,
            Severity::Warning,
            format!(
                "{}\n(this node's Arc machine and roles are already set up: these are needed only to repair them)",
                permissions::report(missing)
            ),
            fix,
        )
    } else {
        CheckResult::problem(NAME, Severity::Error, permissions::report(missing), fix)
    }
}

fn unbootstrap_permissions(missing: &[Need]) -> CheckResult {
    const NAME: &str = "AzureUnbootstrapPermissions";
    if missing.is_empty() {
        return CheckResult::pass(
            NAME,
            Severity::Warning,
            "the identity may delete the Arc machine and the role assignments (unbootstrap)",
        );
    }
    let mut lines = vec![format!(
        "unbootstrap could not remove what bootstrap creates in Azure; the identity lacks {} permission(s):",
        missing.len()
    )];
    for n in missing {
        lines.push(format!(
            "  - {} on {} (to {})",
            n.action, n.scope, n.purpose
        ));
    }
    let mut fix = Vec::new();
    if missing
        .iter()
        .any(|n| n.action.starts_with("Microsoft.HybridCompute/"))
    {
        fix.push(
            "Azure Connected Machine Resource Administrator (or Contributor) on the resource group",
        );
    }
    if missing
        .iter()
        .any(|n| n.action.starts_with("Microsoft.Authorization/"))
    {
        fix.push(
            "User Access Administrator (or Role Based Access Control Administrator) on the cluster",
        );
    }
    CheckResult::problem(
        NAME,
        Severity::Warning,
        lines.join("\n"),
        format!(
            "grant the identity {} before you need unbootstrap",
            fix.join(", and ")
        ),
    )
}

/// `ClusterAzureRBAC`: the cluster exists, is visible, and authorises nodes through Azure RBAC.
async fn cluster_rbac(s: &AzureSession, st: &AzureSettings) -> CheckResult {
    const NAME: &str = "ClusterAzureRBAC";
    let sev = Severity::Error;
    let id = &st.cluster.resource_id;
    match timed(aks::get_cluster(&s.arm, id)).await {
        Err(e) => CheckResult::problem(
            NAME,
            sev,
            format!("cannot read the cluster: {e}"),
            "check azure.targetCluster.resourceId and that the identity may read the cluster",
        ),
        Ok(info) => match aks::require_azure_rbac(&info, id) {
            Ok(()) => CheckResult::pass(NAME, sev, format!("{id} uses Azure RBAC")),
            Err(e) => {
                let text = e.to_string();
                let fix = text
                    .split_once("Enable it with: ")
                    .map(|(_, f)| f.to_string())
                    .unwrap_or_else(|| "enable Azure RBAC on the cluster".into());
                CheckResult::problem(NAME, sev, text, fix)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azcmagent_versions_and_their_services() {
        assert_eq!(
            parse_azcmagent_version("azcmagent version 1.45.02742.1234\n"),
            Some((1, 45))
        );
        assert_eq!(
            parse_azcmagent_version("azcmagent version 1.62.0"),
            Some((1, 62))
        );
        assert_eq!(parse_azcmagent_version("nothing here"), None);
        assert_eq!(arc_services_for(Some((1, 45))), ["himdsd", "gcarcservice"]);
        assert_eq!(arc_services_for(Some((1, 62))), ["himdsd", "gcad"]);
        assert_eq!(arc_services_for(Some((2, 0))), ["himdsd", "gcad"]);
        assert_eq!(arc_services_for(None), ["himdsd", "gcad"]);
    }

    #[test]
    fn missing_bootstrap_permissions_are_an_error_until_the_journal_shows_the_identity_set_up() {
        let d = tempfile::tempdir().unwrap();
        let cfg = crate::engine::test_config(serde_json::json!({}));
        let host = Arc::new(crate::host::Host::new(d.path()).unwrap());
        let env = |_: &str| None;
        let st = AzureSettings::from_config(&cfg, &env).unwrap();
        let needs = bootstrap_needs(&st);
        // The machine write plus one role assignment write per default role.
        assert_eq!(needs.len(), 1 + st.arc.roles.len());
        assert!(unbootstrap_needs(&st)
            .iter()
            .any(|n| n.action == "Microsoft.HybridCompute/machines/delete"));

        let ctx = Context::new(cfg.clone(), host.clone()).unwrap();
        let r = bootstrap_permissions(&ctx, &st, &needs);
        assert_eq!(r.status, super::super::Status::Fail);
        assert!(
            r.message
                .contains("Microsoft.HybridCompute/machines/write on"),
            "{}",
            r.message
        );

        // A converged node: the journal records the Arc machine this agent registered.
        let mut j = ctx.journal_snapshot();
        std::fs::create_dir_all(d.path().join("var/lib/aks-flex-node")).unwrap();
        j.record_custom(
            &host,
            arc_install::NAME,
            "arcMachine",
            serde_json::json!({"resourceId": st.machine_id()}),
        )
        .unwrap();
        j.set_step(&host, arc_install::NAME, 4, None).unwrap();
        let ctx = Context::new(cfg, host).unwrap();
        let r = bootstrap_permissions(&ctx, &st, &needs);
        assert_eq!(
            (r.status, r.severity),
            (super::super::Status::Warn, Severity::Warning)
        );
        assert!(r.message.contains("already set up"), "{}", r.message);
        assert_eq!(
            bootstrap_permissions(&ctx, &st, &[]).status,
            super::super::Status::Pass
        );
    }

    #[test]
    fn clock_skew_thresholds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let c = clock_skew(t, t + Duration::from_secs(5));
        assert_eq!(c.status, super::super::Status::Pass);
        let c = clock_skew(t + Duration::from_secs(120), t);
        assert_eq!(c.status, super::super::Status::Warn);
        assert!(c.message.contains("120s"), "{}", c.message);
        let c = clock_skew(t, t + Duration::from_secs(600));
        assert_eq!(c.status, super::super::Status::Fail);
        assert!(c.remediation.contains("timedatectl"));
    }
}
