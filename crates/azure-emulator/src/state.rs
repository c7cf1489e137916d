//! The emulator's mutable world: Arc machines, role assignments and per-host azcmagent state
//! (persisted), plus runtime-only state (device codes, HIMDS challenge keys, identity
//! replication counters, write-throttle windows). Owns the atomic JSON persistence.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::roles;
use crate::scenario::{Scenario, Settings};

/// File name of the persisted state inside the state dir.
pub const STATE_FILE: &str = "state.json";
const STATE_VERSION: u32 = 1;

/// A `Microsoft.HybridCompute/machines` resource.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// ARM id, with the casing of the request that created it.
    pub id: String,
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group.
    pub resource_group: String,
    /// Machine name.
    pub name: String,
    /// Region.
    pub location: String,
    /// Tags.
    #[serde(default)]
    pub tags: serde_json::Map<String, serde_json::Value>,
    /// System-assigned identity principal id, once it has one.
    pub principal_id: Option<String>,
    /// Tenant of the identity.
    pub tenant_id: String,
    /// `properties.vmId`.
    pub vm_id: String,
    /// Client-supplied `properties` (e.g. osName) merged into responses.
    #[serde(default)]
    pub properties: serde_json::Map<String, serde_json::Value>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A role assignment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoleAssignment {
    /// Assignment name (GUID).
    pub name: String,
    /// Scope it was created at.
    pub scope: String,
    /// Role definition GUID.
    pub role_guid: String,
    /// Principal object id.
    pub principal_id: String,
    /// `User`, `ServicePrincipal`, `Group`, ...
    pub principal_type: String,
    /// Creator object id (empty for seeded ones).
    #[serde(default)]
    pub created_by: String,
    /// RFC 3339.
    pub created_on: String,
}

/// Local azcmagent state of one simulated host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HostAgent {
    /// Whether `azcmagent connect` succeeded and no disconnect happened since.
    pub connected: bool,
    /// ARM id of the machine resource.
    #[serde(default)]
    pub resource_id: String,
    /// Machine name.
    #[serde(default)]
    pub resource_name: String,
    /// Resource group.
    #[serde(default)]
    pub resource_group: String,
    /// Subscription id.
    #[serde(default)]
    pub subscription_id: String,
    /// Tenant id.
    #[serde(default)]
    pub tenant_id: String,
    /// Region.
    #[serde(default)]
    pub location: String,
    /// Cloud name (`AzureCloud`).
    #[serde(default)]
    pub cloud: String,
    /// Correlation id given to connect.
    #[serde(default)]
    pub correlation_id: String,
    /// The machine's vmId.
    #[serde(default)]
    pub vm_id: String,
    /// RFC 3339 of the last heartbeat (connect time or last `show`).
    #[serde(default)]
    pub last_heartbeat: String,
}

/// What is persisted in `<state-dir>/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedState {
    /// Format version.
    pub version: u32,
    /// Hex of the token signing key (so tokens survive a restart).
    pub signing_key: String,
    /// Machines.
    pub machines: Vec<Machine>,
    /// Role assignments, in creation order.
    pub role_assignments: Vec<RoleAssignment>,
    /// Host agents by host name.
    pub hosts: BTreeMap<String, HostAgent>,
}

/// A read-only copy of the mutable world, for tests and `GET /_emulator/state`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateSnapshot {
    /// Machines.
    pub machines: Vec<Machine>,
    /// Role assignments, in creation order.
    pub role_assignments: Vec<RoleAssignment>,
    /// Host agents by host name.
    pub hosts: BTreeMap<String, HostAgent>,
}

/// A pending or finished device code flow.
#[derive(Debug, Clone)]
pub struct DeviceCode {
    /// Opaque code the client polls with.
    pub device_code: String,
    /// Short code the user types.
    pub user_code: String,
    /// Client id that started it.
    pub client_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Requested scope.
    pub scope: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Object id of the approving user, once approved.
    pub approved_by: Option<String>,
    /// Set once a token was issued (device codes are single-use).
    pub redeemed: bool,
}

/// An outstanding HIMDS challenge key.
#[derive(Debug, Clone)]
pub struct HimdsKey {
    /// Host it was issued for.
    pub host: String,
    /// Key file path.
    pub path: PathBuf,
}

/// The whole mutable world, guarded by one mutex in the server.
#[derive(Debug)]
pub struct World {
    /// The static scenario.
    pub scenario: Scenario,
    /// Live settings (start from the scenario's; the control API may change them).
    pub settings: Settings,
    /// Token signing key.
    pub signing_key: Vec<u8>,
    /// Machines.
    pub machines: Vec<Machine>,
    /// Role assignments.
    pub role_assignments: Vec<RoleAssignment>,
    /// Host agents.
    pub hosts: BTreeMap<String, HostAgent>,
    /// Device codes.
    pub device_codes: Vec<DeviceCode>,
    /// HIMDS keys by secret.
    pub himds_keys: HashMap<String, HimdsKey>,
    /// Remaining PrincipalNotFound answers per (lower-case) principal id.
    pub replication: HashMap<String, u32>,
    /// Per-subscription write counters: (unix second, writes in it).
    pub write_windows: HashMap<String, (i64, u32)>,
}

/// State-dir errors.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not ours or is corrupt.
    #[error("state file {path} is not valid emulator state ({source}); remove it to start fresh")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Current time as RFC 3339 with seconds precision.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Current unix time in seconds.
pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

fn seeded_assignments(scenario: &Scenario) -> Vec<RoleAssignment> {
    let now = now_rfc3339();
    scenario
        .role_assignments
        .iter()
        .filter_map(|seed| {
            let role = roles::resolve(&seed.role)?;
            // Deterministic names keep seeded assignments stable across restarts.
            let name = seed.name.clone().unwrap_or_else(|| {
                uuid::Uuid::new_v5(
                    &uuid::Uuid::NAMESPACE_URL,
                    format!("{}|{}|{}", seed.scope, role.guid, seed.principal_id)
                        .to_ascii_lowercase()
                        .as_bytes(),
                )
                .to_string()
            });
            let principal_type = if scenario
                .users
                .iter()
                .any(|u| u.object_id.eq_ignore_ascii_case(&seed.principal_id))
            {
                "User"
            } else {
                "ServicePrincipal"
            };
            Some(RoleAssignment {
                name,
                scope: seed.scope.clone(),
                role_guid: role.guid.to_string(),
                principal_id: seed.principal_id.clone(),
                principal_type: principal_type.to_string(),
                created_by: String::new(),
                created_on: now.clone(),
            })
        })
        .collect()
}

fn random_key() -> Vec<u8> {
    let mut key = uuid::Uuid::new_v4().as_bytes().to_vec();
    key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    key
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl World {
    /// A fresh world for `scenario`, or the one persisted in `state_dir` if present.
    pub fn load(scenario: Scenario, state_dir: Option<&Path>) -> Result<World, StateError> {
        let mut world = World {
            settings: scenario.settings.clone(),
            signing_key: random_key(),
            machines: Vec::new(),
            role_assignments: seeded_assignments(&scenario),
            hosts: BTreeMap::new(),
            device_codes: Vec::new(),
            himds_keys: HashMap::new(),
            replication: HashMap::new(),
            write_windows: HashMap::new(),
            scenario,
        };
        if let Some(dir) = state_dir {
            let path = dir.join(STATE_FILE);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let p: PersistedState =
                        serde_json::from_str(&text).map_err(|source| StateError::Parse {
                            path: path.clone(),
                            source,
                        })?;
                    if let Some(key) = from_hex(&p.signing_key).filter(|k| !k.is_empty()) {
                        world.signing_key = key;
                    }
                    world.machines = p.machines;
                    world.role_assignments = p.role_assignments;
                    world.hosts = p.hosts;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StateError::Io { path, source }),
            }
        }
        Ok(world)
    }

    /// Back to the scenario's initial state (the signing key is kept so issued tokens stay valid).
    pub fn reset(&mut self) {
        self.settings = self.scenario.settings.clone();
        self.machines.clear();
        self.role_assignments = seeded_assignments(&self.scenario);
        self.hosts.clear();
        self.device_codes.clear();
        self.himds_keys.clear();
        self.replication.clear();
        self.write_windows.clear();
    }

    /// Copy of the persisted part.
    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            machines: self.machines.clone(),
            role_assignments: self.role_assignments.clone(),
            hosts: self.hosts.clone(),
        }
    }

    /// Write `<dir>/state.json` atomically (temp file, fsync, rename, fsync dir), mode 0600.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let state = PersistedState {
            version: STATE_VERSION,
            signing_key: to_hex(&self.signing_key),
            machines: self.machines.clone(),
            role_assignments: self.role_assignments.clone(),
            hosts: self.hosts.clone(),
        };
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!(
            ".{STATE_FILE}.{}.tmp",
            uuid::Uuid::new_v4().simple()
        ));
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let data = serde_json::to_vec_pretty(&state).map_err(|e| io(std::io::Error::other(e)))?;
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(&data).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Whether a principal (service principal, user or managed identity) exists in the directory.
    pub fn principal_exists(&self, object_id: &str) -> bool {
        self.scenario
            .service_principals
            .iter()
            .any(|sp| sp.object_id.eq_ignore_ascii_case(object_id))
            || self
                .scenario
                .users
                .iter()
                .any(|u| u.object_id.eq_ignore_ascii_case(object_id))
            || self.machines.iter().any(|m| {
                m.principal_id
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(object_id))
            })
    }

    /// Tenant of a subscription.
    pub fn subscription_tenant(&self, subscription: &str) -> Option<String> {
        self.scenario
            .subscription(subscription)
            .map(|s| s.tenant_id.clone())
    }

    /// Whether `principal` holds `action` at `scope` through any role assignment (inherited down
    /// the scope hierarchy).
    pub fn is_authorized(&self, principal: &str, action: &str, scope: &str) -> bool {
        self.role_assignments.iter().any(|ra| {
            ra.principal_id.eq_ignore_ascii_case(principal)
                && roles::scope_covers(&ra.scope, scope)
                && roles::by_guid(&ra.role_guid).is_some_and(|r| r.permits(action))
        })
    }

    /// The first role assignment through which `principal` holds the data action `data_action`
    /// at `scope` (assignments are inherited down the scope hierarchy, as for actions).
    pub fn data_action_grant(
        &self,
        principal: &str,
        data_action: &str,
        scope: &str,
    ) -> Option<(&RoleAssignment, &'static roles::RoleDefinition)> {
        self.role_assignments.iter().find_map(|ra| {
            if !ra.principal_id.eq_ignore_ascii_case(principal)
                || !roles::scope_covers(&ra.scope, scope)
            {
                return None;
            }
            roles::by_guid(&ra.role_guid)
                .filter(|r| r.permits_data(data_action))
                .map(|r| (ra, r))
        })
    }

    /// Find a machine by subscription, resource group and name (case-insensitive).
    pub fn machine_index(&self, sub: &str, rg: &str, name: &str) -> Option<usize> {
        self.machines.iter().position(|m| {
            m.subscription_id.eq_ignore_ascii_case(sub)
                && m.resource_group.eq_ignore_ascii_case(rg)
                && m.name.eq_ignore_ascii_case(name)
        })
    }

    /// Find a machine by ARM id.
    pub fn machine_by_id(&self, id: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| roles::same_scope(&m.id, id))
    }

    /// Count one ARM write for `subscription`; `Some(retry_after_secs)` when over the limit.
    pub fn throttle_write(&mut self, subscription: &str) -> Option<u64> {
        let limit = self.settings.arm_writes_per_second?;
        let now = now_unix();
        let w = self
            .write_windows
            .entry(subscription.to_ascii_lowercase())
            .or_insert((now, 0));
        if w.0 != now {
            *w = (now, 0);
        }
        if w.1 >= limit {
            return Some(1);
        }
        w.1 += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistence_round_trip_keeps_key_and_resources() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = World::load(Scenario::demo(), Some(dir.path())).unwrap();
        w.hosts.insert(
            "h1".into(),
            HostAgent {
                connected: true,
                resource_name: "m".into(),
                ..Default::default()
            },
        );
        w.role_assignments.pop();
        w.save(dir.path()).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(STATE_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = World::load(Scenario::demo(), Some(dir.path())).unwrap();
        assert_eq!(again.signing_key, w.signing_key);
        assert_eq!(again.snapshot(), w.snapshot());
    }

    #[test]
    fn corrupt_state_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{nope").unwrap();
        let err = World::load(Scenario::demo(), Some(dir.path())).unwrap_err();
        assert!(
            err.to_string().contains("remove it to start fresh"),
            "{err}"
        );
    }

    #[test]
    fn seeded_names_are_stable_and_authorization_inherits() {
        let a = World::load(Scenario::demo(), None).unwrap();
        let b = World::load(Scenario::demo(), None).unwrap();
        let names = |w: &World| -> Vec<String> {
            w.role_assignments.iter().map(|r| r.name.clone()).collect()
        };
        assert_eq!(names(&a), names(&b));
        let sp = crate::scenario::DEMO_SP_OBJECT_ID;
        let rg =
            "/subscriptions/22222222-2222-4222-8222-222222222222/resourcegroups/FLEXNODE-DEMO-RG";
        assert!(a.is_authorized(
            sp,
            "Microsoft.HybridCompute/machines/write",
            &format!("{rg}/providers/Microsoft.HybridCompute/machines/m1")
        ));
        assert!(!a.is_authorized(
            sp,
            "Microsoft.HybridCompute/machines/delete",
            &format!("{rg}/providers/Microsoft.HybridCompute/machines/m1")
        ));
    }
}
