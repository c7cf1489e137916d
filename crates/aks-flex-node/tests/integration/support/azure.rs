//! The Azure side of the tests: the in-process emulator on 127.0.0.1 with a sandbox root and a config
//! pointing at it, the demo cluster's ids, and the `azcmagent` stand-in (the emulator's, built as this
//! crate's `azcmagent` example) that the agent runs as if it were the real Arc agent.

use std::path::{Path, PathBuf};
use std::process::Command;

use aks_flex_node::azure::credential::TEST_KEY_DIR_ENV;
use azure_emulator::scenario::{self, Scenario, SeedRoleAssignment};
use azure_emulator::{Emulator, EmulatorOptions};

/// Path of the built `azcmagent` example next to this test binary's profile directory
/// (`target/<profile>/deps/<test>` -> `target/<profile>/examples/azcmagent`). `cargo test` builds
/// examples but `cargo test --test integration` does not, so it is built here when missing — once per
/// process, in the same profile as the test.
pub fn azcmagent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let p = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("examples/azcmagent");
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        if !p.exists() {
            let mut cmd = std::process::Command::new(env!("CARGO"));
            cmd.args([
                "build",
                "-q",
                "-p",
                "aks-flex-node",
                "--example",
                "azcmagent",
            ]);
            if !cfg!(debug_assertions) {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo");
            assert!(st.success(), "building the azcmagent stand-in failed");
        }
    });
    assert!(p.exists(), "{} missing", p.display());
    p
}

/// The demo scenario's resource group.
pub fn rg_scope() -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}",
        scenario::DEMO_SUBSCRIPTION_ID,
        scenario::DEMO_RESOURCE_GROUP
    )
}

/// The demo scenario's managed cluster.
pub fn cluster_id() -> String {
    format!(
        "{}/providers/Microsoft.ContainerService/managedClusters/{}",
        rg_scope(),
        scenario::DEMO_CLUSTER
    )
}

/// Contributor on the resource group for the demo service principal (what deleting the Arc machine
/// needs: the demo scenario only has Azure Connected Machine Onboarding there).
pub fn contributor_on_rg() -> SeedRoleAssignment {
    SeedRoleAssignment {
        principal_id: scenario::DEMO_SP_OBJECT_ID.into(),
        role: "Contributor".into(),
        scope: rg_scope(),
        name: None,
    }
}

/// Whether a request changes something in Azure (list* actions and token requests are reads, even as
/// POST).
pub fn is_write(method: &str, path: &str) -> bool {
    match method {
        "GET" | "HEAD" => false,
        "POST" => {
            !path.rsplit('/').next().unwrap_or("").starts_with("list") && !path.contains("/oauth2/")
        }
        _ => true,
    }
}

/// An emulator, and a node `host` with its sandbox root and its config under `dir`.
pub struct World {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    pub host: String,
    /// Extra `azure.arc` keys merged into the config.
    pub arc_extra: serde_json::Value,
}

impl World {
    pub async fn start(scenario: Scenario, host: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let emu = Emulator::start(EmulatorOptions {
            scenario,
            himds_key_dir: Some(dir.path().join("himds-keys")),
            ..Default::default()
        })
        .await
        .unwrap();
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        World {
            emu,
            dir,
            host: host.into(),
            arc_extra: serde_json::json!({}),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The node's config: the demo service principal with `secret`, the emulator's endpoints, and
    /// [`World::arc_extra`].
    pub fn config_json(&self, secret: &str) -> serde_json::Value {
        let u = self.emu.urls();
        let mut cfg = serde_json::json!({
            "azure": {
                "subscriptionId": scenario::DEMO_SUBSCRIPTION_ID,
                "tenantId": scenario::DEMO_TENANT_ID,
                "resourceManagerEndpoint": u.arm,
                "activeDirectoryEndpoint": u.login,
                "servicePrincipal": {"clientId": scenario::DEMO_SP_CLIENT_ID, "clientSecret": secret},
                "arc": {"machineName": self.host, "resourceGroup": scenario::DEMO_RESOURCE_GROUP, "location": "eastus",
                        "tags": {"env": "test"}},
                "targetCluster": {"resourceId": cluster_id(), "location": "eastus"}
            },
            "kubernetes": {"version": "1.30.4"},
            "agent": {"logDir": "/var/log/aks-flex-node"}
        });
        for (k, v) in self.arc_extra.as_object().unwrap() {
            cfg["azure"]["arc"][k] = v.clone();
        }
        cfg
    }

    /// `cfg` written as `dir/name`, readable by its owner only (it holds a secret).
    pub fn write_config(&self, name: &str, cfg: &serde_json::Value) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(name);
        std::fs::write(&p, cfg.to_string()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// The agent binary on this node's root and config, with the environment it runs with against the
    /// emulator: `azcmagent` as the Arc agent, this host's HIMDS, Azure waits scaled down.
    pub fn command(&self, secret: &str, azcmagent: &Path) -> Command {
        let u = self.emu.urls();
        let mut c = super::bin();
        c.arg("--root")
            .arg(self.root())
            .arg("--config")
            .arg(self.write_config("config.json", &self.config_json(secret)))
            .env("AKS_FLEX_NODE_AZCMAGENT", azcmagent)
            .env("FLEXNODE_EMULATOR_URL", &u.control)
            .env("FLEXNODE_EMULATOR_HOST", &self.host)
            .env(
                "IDENTITY_ENDPOINT",
                format!(
                    "{}/hosts/{}/metadata/identity/oauth2/token",
                    u.himds, self.host
                ),
            )
            .env("AKS_FLEX_NODE_AZURE_TIME_SCALE", "0.01")
            .env(TEST_KEY_DIR_ENV, self.emu.himds_key_dir())
            .env_remove("AZURE_CLIENT_SECRET");
        c
    }

    /// The Arc identity of this node's machine resource, once there is one.
    pub fn principal(&self) -> Option<String> {
        self.emu
            .state()
            .machines
            .iter()
            .find(|m| m.name == self.host)
            .and_then(|m| m.principal_id.clone())
    }

    /// The writes the emulator answered from its `from`th request on: "METHOD path status".
    pub fn writes_since(&self, from: usize) -> Vec<String> {
        self.emu.request_log()[from..]
            .iter()
            .filter(|e| is_write(&e.method, &e.path))
            .map(|e| format!("{} {} {}", e.method, e.path, e.status))
            .collect()
    }
}
