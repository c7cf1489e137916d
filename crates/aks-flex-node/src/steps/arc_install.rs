//! `ArcInstall` (phase identity): Arc registration, the cluster's Azure RBAC check, role assignments for
//! the Arc identity (one planned action per role), waiting until they are visible, and the cluster's API
//! server + CA (`listClusterUserCredential`, fetched while planning because it is read-only, and handed to
//! the kubelet steps through [`Context::set_cluster_endpoint`]).
//!
//! Undo deletes exactly the role assignments this agent created (deterministic names recorded before
//! creation), the HybridCompute machine, and the local agent state (`azcmagent disconnect
//! --force-local-only`), each tolerant of "already gone".

use std::sync::Arc;

use serde_json::json;
use tokio::sync::{Mutex, OnceCell};

use super::{Action, Context, Step, StepError, StepResult};
use crate::azure::arc::{AgentStatus, Azcmagent, ConnectArgs};
use crate::azure::arm::api;
use crate::azure::settings::{AzureSession, AzureSettings};
use crate::azure::{aks, permissions, roles, AzureError};
use crate::model::Phase;
use crate::model::RoleSpec;

pub const NAME: &str = "ArcInstall";

/// The kubelet's token cache (written by `aks-flex-node token`): it holds a token of this machine's Arc
/// identity, so it is deleted when that identity may change (connect) and when it is deleted (undo).
pub const TOKEN_CACHE_FILE: &str = "/run/aks-flex-node/token-cache.json";

/// Delete the token cache, and its directory when that is left empty.
pub fn clear_token_cache(host: &crate::host::Host) -> Result<(), crate::host::FsError> {
    let path = std::path::Path::new(TOKEN_CACHE_FILE);
    host.fs.remove_file(path)?;
    if let Some(dir) = path.parent() {
        host.fs.remove_dir_if_empty(dir)?;
    }
    Ok(())
}

/// The step. Settings come from the context's config and the process environment unless given.
#[derive(Default)]
pub struct ArcInstall {
    settings: Option<Arc<AzureSettings>>,
    state: OnceCell<Arc<Session>>,
    principal: Mutex<Option<String>>,
}

struct Session {
    settings: Arc<AzureSettings>,
    azure: AzureSession,
}

fn az(e: AzureError) -> StepError {
    StepError::failed(e.to_string())
}

impl ArcInstall {
    /// With explicit settings (the scale benchmark runs many agents in one process).
    pub fn with_settings(settings: Arc<AzureSettings>) -> Self {
        ArcInstall {
            settings: Some(settings),
            ..Default::default()
        }
    }

    async fn session(&self, ctx: &Context) -> StepResult<Arc<Session>> {
        self.state
            .get_or_try_init(|| async {
                let settings = match &self.settings {
                    Some(s) => s.clone(),
                    None => {
                        let env = |k: &str| std::env::var(k).ok();
                        Arc::new(AzureSettings::from_config(&ctx.config, &env).map_err(az)?)
                    }
                };
                let azure = settings.session().map_err(az)?;
                Ok(Arc::new(Session { settings, azure }))
            })
            .await
            .cloned()
    }

    /// Total ARM write requests this step sent (for the benchmark).
    pub fn arm_writes(&self) -> u64 {
        self.state.get().map(|s| s.azure.arm.writes()).unwrap_or(0)
    }
}

impl Session {
    fn agent<'a>(&'a self, ctx: &'a Context) -> Azcmagent<'a> {
        Azcmagent {
            host: &ctx.host,
            program: &self.settings.azcmagent,
            env: &self.settings.azcmagent_env,
        }
    }

    async fn machine(&self) -> StepResult<Option<serde_json::Value>> {
        self.azure
            .arm
            .get(&self.settings.machine_id(), api::HYBRID_COMPUTE)
            .await
            .map_err(az)
    }

    fn principal_of(machine: &serde_json::Value) -> Option<String> {
        machine["identity"]["principalId"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    fn ours(&self, status: &AgentStatus) -> bool {
        status.connected
            && status
                .resource_id
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case(&self.settings.machine_id()))
    }
}

/// What to do after `azcmagent connect` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectRetry {
    /// The token handed to azcmagent expired: once, with a fresh one.
    FreshToken,
    /// Throttled or a transient server error: again after a backoff, within the throttle budget.
    Backoff,
    /// Anything else: report it.
    Fail,
}

/// Decided by the ARM error azcmagent reported (HTTP status and ARM error code), never by words in its
/// output: a message that merely mentions "429" is not throttling.
fn connect_retry(e: &AzureError, renewed: bool) -> ConnectRetry {
    match e.arm_error() {
        Some(a) if a.is_expired_token() && !renewed => ConnectRetry::FreshToken,
        Some(a) if a.is_transient() => ConnectRetry::Backoff,
        _ => ConnectRetry::Fail,
    }
}

/// What the planned Azure writes need from the identity running bootstrap.
fn preflight_needs(st: &AzureSettings, actions: &[Action]) -> Vec<permissions::Need> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ArcConnect {
                resource_id,
                resource_group,
                ..
            } => Some(permissions::Need {
                action: "Microsoft.HybridCompute/machines/write".into(),
                scope: format!(
                    "/subscriptions/{}/resourceGroups/{resource_group}",
                    st.subscription_id
                ),
                purpose: format!("register the Arc machine {resource_id}"),
            }),
            Action::AssignRole { role, scope, .. } => Some(permissions::Need {
                action: "Microsoft.Authorization/roleAssignments/write".into(),
                scope: scope.clone(),
                purpose: format!("assign {role} to the Arc identity"),
            }),
            _ => None,
        })
        .collect()
}

/// Whether the journal says this agent registered `machine_id`.
fn journaled_machine(ctx: &Context, machine_id: &str) -> bool {
    ctx.journal_snapshot().undo_for(NAME).iter().any(|e| {
        matches!(&e.op, super::UndoOp::Custom { kind, data } if kind == "arcMachine"
            && data["resourceId"].as_str().is_some_and(|r| r.eq_ignore_ascii_case(machine_id)))
    })
}

#[async_trait::async_trait]
impl Step for ArcInstall {
    fn name(&self) -> &'static str {
        NAME
    }

    fn phase(&self) -> Phase {
        Phase::Identity
    }

    async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
        let s = self.session(ctx).await?;
        let st = &s.settings;
        if !st.arc.enabled {
            return Ok(Vec::new());
        }
        let mut actions = Vec::new();
        let status = s.agent(ctx).show().await.map_err(az)?;
        let machine = s.machine().await?;
        let machine_id = st.machine_id();
        let connected = s.ours(&status);
        if status.connected && !connected {
            return Err(StepError::failed(format!(
                "the Arc agent on this machine is connected to {}, not to {machine_id} (azure.arc.*). \
                 Disconnect it first (`azcmagent disconnect`) or fix the config",
                status.resource_id.as_deref().unwrap_or("another resource")
            )));
        }
        let principal = if connected {
            machine.as_ref().and_then(Session::principal_of)
        } else {
            None
        };
        if !connected {
            if machine.is_some() && !journaled_machine(ctx, &machine_id) && !st.arc.adopt_existing {
                return Err(StepError::failed(format!(
                    "the Arc machine resource {machine_id} already exists but this host's Arc agent is not connected to it and this agent \
                     did not create it: it may belong to another host. Choose another azure.arc.machineName, delete the resource, \
                     or set azure.arc.adoptExisting=true to take it over"
                )));
            }
            actions.push(Action::ArcConnect {
                resource_id: machine_id.clone(),
                machine_name: st.arc.machine_name.clone(),
                resource_group: st.arc.resource_group.clone(),
                location: st.arc.location.clone(),
                tags: st.arc.tags.clone(),
                reconnect: machine.is_some(),
            });
        }
        // The cluster must authorise nodes through Azure RBAC.
        let info = aks::get_cluster(&s.azure.arm, &st.cluster.resource_id)
            .await
            .map_err(az)?;
        aks::require_azure_rbac(&info, &st.cluster.resource_id).map_err(az)?;

        let scope = &st.cluster.resource_id;
        let missing: Vec<&RoleSpec> = match &principal {
            Some(p) => roles::missing_roles(&s.azure.arm, scope, p, &st.arc.roles)
                .await
                .map_err(az)?,
            None => st.arc.roles.iter().collect(),
        };
        if missing.is_empty() {
            // Converged: every configured role is assigned.
        } else if st.arc.auto_role_assignment {
            for role in &missing {
                actions.push(Action::AssignRole {
                    role: role.name.clone(),
                    role_definition_id: roles::role_definition_id(&st.subscription_id, &role.guid),
                    scope: scope.clone(),
                    principal_id: principal.clone(),
                    assignment_name: principal
                        .as_deref()
                        .map(|p| roles::assignment_name(scope, p, &role.guid)),
                });
            }
            actions.push(Action::WaitRoles {
                scope: scope.clone(),
                timeout_seconds: st.timing.visibility_timeout.as_secs(),
            });
        } else {
            // azure.arc.autoRoleAssignment=false: an administrator assigns; we only check.
            let names: Vec<&str> = missing.iter().map(|r| r.name.as_str()).collect();
            actions.push(Action::VerifyRoles {
                scope: scope.clone(),
                roles: names.iter().map(|n| n.to_string()).collect(),
                principal_id: principal.clone(),
            });
        }

        // The "can I?" preflight: every write this run will make, checked at once before the first one.
        let needs = preflight_needs(st, &actions);
        if !needs.is_empty() {
            match permissions::missing(&s.azure.arm, &needs).await {
                Ok(missing) if !missing.is_empty() => {
                    return Err(StepError::failed(permissions::report(&missing)))
                }
                Ok(_) => {}
                // Some clouds may not serve the list: the writes themselves still explain a 403.
                Err(e) => tracing::warn!("cannot check permissions before writing: {e}"),
            }
        }

        // Cluster API server + CA: read-only, so fetched now (once per run) for the kubelet steps.
        if ctx.cluster_endpoint().is_none() {
            let mut ep = aks::user_credentials(&s.azure.arm, &st.cluster.resource_id)
                .await
                .map_err(az)?;
            ep.dns_service_ip = info.dns_service_ip;
            if !actions.is_empty() {
                actions.push(Action::UseClusterEndpoint {
                    server: ep.server.clone(),
                    cluster: st.cluster.resource_id.clone(),
                });
            }
            ctx.set_cluster_endpoint(ep);
        }
        if let Some(p) = principal {
            *self.principal.lock().await = Some(p);
        }
        Ok(actions)
    }

    async fn apply_remote(&self, ctx: &Context, action: &Action) -> StepResult<()> {
        let s = self.session(ctx).await?;
        let st = &s.settings;
        match action {
            Action::ArcConnect {
                resource_id,
                machine_name,
                resource_group,
                location,
                tags,
                ..
            } => {
                let machine_id = resource_id.clone();
                ctx.record_undo(
                    NAME,
                    "arcMachine",
                    json!({"resourceId": machine_id, "azcmagent": st.azcmagent}),
                )?;
                // The kubelet's cached token may belong to an identity this connect replaces.
                clear_token_cache(&ctx.host)?;
                let args = ConnectArgs {
                    resource_group: resource_group.clone(),
                    tenant_id: st.tenant_id.clone(),
                    location: location.clone(),
                    subscription_id: st.subscription_id.clone(),
                    resource_name: machine_name.clone(),
                    tags: tags.clone(),
                    cloud: st.endpoints.name.azcmagent_cloud().into(),
                };
                // azcmagent's own ARM calls can be throttled (429) or meet a transient 5xx: retry those.
                // A token that expires while azcmagent runs (short lifetimes, clock skew) is replaced
                // once with a fresh one.
                let mut attempt = 0;
                let mut renewed = false;
                let started = std::time::Instant::now();
                loop {
                    attempt += 1;
                    let token = s
                        .azure
                        .arm
                        .credential()
                        .get_token_for(&st.endpoints.arm_resource)
                        .await
                        .map_err(az)?;
                    match s.agent(ctx).connect(&args, &token.token).await {
                        Ok(()) => break,
                        Err(e) if connect_retry(&e, renewed) == ConnectRetry::FreshToken => {
                            renewed = true;
                            tracing::info!(
                                "the token handed to azcmagent expired; retrying with a fresh one"
                            );
                            s.azure
                                .arm
                                .credential()
                                .invalidate(&st.endpoints.arm_resource)
                                .await;
                        }
                        Err(e)
                            if connect_retry(&e, renewed) == ConnectRetry::Backoff
                                && started.elapsed() < st.timing.retry.throttle_budget =>
                        {
                            let d = st
                                .timing
                                .retry
                                .backoff(attempt)
                                .max(std::time::Duration::from_secs(1));
                            tracing::info!(
                                attempt,
                                "azcmagent connect hit a transient Azure error; retrying: {e}"
                            );
                            tokio::time::sleep(d).await;
                        }
                        Err(e) => return Err(az(e)),
                    }
                }
                // Wait for the system-assigned identity.
                let deadline = tokio::time::Instant::now() + st.timing.identity_timeout;
                loop {
                    if let Some(p) = s.machine().await?.as_ref().and_then(Session::principal_of) {
                        tracing::info!(principal = %p, "Arc machine connected with its managed identity");
                        *self.principal.lock().await = Some(p);
                        return Ok(());
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(StepError::failed(format!(
                            "{machine_id} has no identity.principalId {:?} after connecting; check `azcmagent show`",
                            st.timing.identity_timeout
                        )));
                    }
                    tokio::time::sleep(st.timing.poll_interval).await;
                }
            }
            Action::AssignRole {
                role: role_name,
                role_definition_id,
                scope,
                ..
            } => {
                let principal = self.current_principal(&s).await?;
                let role = RoleSpec::new(role_name, &roles::guid_of(role_definition_id));
                let id = roles::assignment_id(
                    scope,
                    &roles::assignment_name(scope, &principal, &role.guid),
                );
                ctx.record_undo(
                    NAME,
                    "roleAssignment",
                    json!({"id": id, "role": role.name, "principalId": principal}),
                )?;
                let created = roles::assign(
                    &s.azure.arm,
                    &st.subscription_id,
                    scope,
                    &principal,
                    &role,
                    &st.timing.principal,
                )
                .await
                .map_err(az)?;
                match created {
                    roles::Created::Created(id) => {
                        tracing::info!(role = %role.name, assignment = %id, "role assigned")
                    }
                    roles::Created::Existed(id) => {
                        tracing::info!(role = %role.name, assignment = %id, "role was already assigned")
                    }
                }
                Ok(())
            }
            Action::WaitRoles {
                scope,
                timeout_seconds,
            } => {
                let principal = self.current_principal(&s).await?;
                roles::wait_visible(
                    &s.azure.arm,
                    scope,
                    &principal,
                    &st.arc.roles,
                    std::time::Duration::from_secs(*timeout_seconds),
                    st.timing.poll_interval,
                )
                .await
                .map_err(az)
            }
            Action::VerifyRoles { scope, .. } => {
                let principal = self.current_principal(&s).await?;
                let missing = roles::missing_roles(&s.azure.arm, scope, &principal, &st.arc.roles)
                    .await
                    .map_err(az)?;
                if missing.is_empty() {
                    return Ok(());
                }
                Err(StepError::failed(format!(
                    "azure.arc.autoRoleAssignment is false and the Arc identity {principal} lacks {} role(s) on {scope}: {}. \
                     An administrator (Owner, User Access Administrator or Role Based Access Control Administrator on the cluster) must run:\n{}\n\
                     then re-run bootstrap",
                    missing.len(),
                    missing.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", "),
                    roles::admin_commands(scope, &principal, &missing)
                )))
            }
            other => Err(StepError::failed(format!(
                "{NAME} cannot apply {}",
                other.summary()
            ))),
        }
    }

    async fn undo_custom(
        &self,
        ctx: &Context,
        kind: &str,
        data: &serde_json::Value,
    ) -> StepResult<()> {
        let s = self.session(ctx).await?;
        match kind {
            "roleAssignment" => {
                let id = data["id"]
                    .as_str()
                    .ok_or_else(|| StepError::failed("roleAssignment record without id"))?;
                let existed = roles::delete(&s.azure.arm, id).await.map_err(az)?;
                tracing::info!(assignment = id, existed, "role assignment removed");
                Ok(())
            }
            "arcMachine" => {
                let id = data["resourceId"]
                    .as_str()
                    .ok_or_else(|| StepError::failed("arcMachine record without resourceId"))?;
                let mut problems = Vec::new();
                // The kubelet's cached token is this identity's: gone with it.
                if let Err(e) = clear_token_cache(&ctx.host) {
                    problems.push(format!("removing the token cache: {e}"));
                }
                match s.azure.arm.delete(id, api::HYBRID_COMPUTE).await {
                    Ok(existed) => {
                        tracing::info!(machine = id, existed, "Arc machine resource removed")
                    }
                    Err(e) => problems.push(format!("deleting {id}: {e}")),
                }
                if let Err(e) = s.agent(ctx).disconnect_local().await {
                    problems.push(e.to_string());
                }
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(StepError::failed(problems.join("; ")))
                }
            }
            other => Err(StepError::failed(format!("{NAME}: cannot undo {other}"))),
        }
    }
}

impl ArcInstall {
    async fn current_principal(&self, s: &Session) -> StepResult<String> {
        if let Some(p) = self.principal.lock().await.clone() {
            return Ok(p);
        }
        let p = s
            .machine()
            .await?
            .as_ref()
            .and_then(Session::principal_of)
            .ok_or_else(|| {
                StepError::failed(format!(
                    "{} has no managed identity (identity.principalId); is the Arc agent connected?",
                    s.settings.machine_id()
                ))
            })?;
        *self.principal.lock().await = Some(p.clone());
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::arm::ArmError;

    fn from_azcmagent(status: u16, code: &str, message: &str) -> AzureError {
        AzureError::Program {
            message: format!(
                "`azcmagent connect` failed (exit 1): FATAL   HTTP {status} {code}: {message}"
            ),
            arm: Some(Box::new(ArmError {
                status,
                code: code.into(),
                message: message.into(),
                method: "azcmagent connect".into(),
                path: String::new(),
            })),
        }
    }

    #[test]
    fn connect_retries_are_decided_by_status_and_code_not_by_message_words() {
        use ConnectRetry::*;
        // A 400 whose words mention 429, throttling, 502/503 and an expired token: not retried.
        let e = from_azcmagent(
            400,
            "InvalidParameter",
            "tag value '429 TooManyRequests 502 503 ServiceUnavailable ExpiredAuthenticationToken' is invalid",
        );
        assert!(e.to_string().contains("429"));
        assert_eq!(connect_retry(&e, false), Fail);
        // The same words in an error that carries no ARM error at all.
        let e = AzureError::Other("`azcmagent connect` failed: 429 throttled 503".into());
        assert_eq!(connect_retry(&e, false), Fail);
        // Throttling and transient server errors by status, whatever the code says.
        for (status, code) in [
            (429, "TooManyRequests"),
            (429, "SomethingElse"),
            (503, "ServiceUnavailable"),
            (502, "BadGateway"),
            (504, "GatewayTimeout"),
            (500, "InternalServerError"),
        ] {
            assert_eq!(
                connect_retry(&from_azcmagent(status, code, "x"), false),
                Backoff,
                "{status}"
            );
        }
        assert_eq!(
            connect_retry(&from_azcmagent(501, "NotImplemented", "x"), false),
            Fail
        );
        assert_eq!(
            connect_retry(&from_azcmagent(403, "AuthorizationFailed", "x"), false),
            Fail
        );
        // An expired token: once with a fresh one, then it is an error.
        let e = from_azcmagent(
            401,
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is in the past",
        );
        assert_eq!(connect_retry(&e, false), FreshToken);
        assert_eq!(connect_retry(&e, true), Fail);
        // An ARM response error is judged the same way.
        let e = AzureError::Arm(ArmError {
            status: 429,
            code: "TooManyRequests".into(),
            message: String::new(),
            method: "PUT".into(),
            path: "/m".into(),
        });
        assert_eq!(connect_retry(&e, false), Backoff);
    }
}
