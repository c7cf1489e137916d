//! Scale simulation (a benchmark, `#[ignore]`d; run with `make bench` or
//! `cargo test --release -p aks-flex-node --test integration azure_scale:: -- --ignored --nocapture`):
//! N agents (default 200, `FLEXNODE_BENCH_AGENTS`) run the identity phase concurrently as tokio tasks
//! against one in-process emulator with ARM write throttling (default 20 writes/s per subscription,
//! `FLEXNODE_BENCH_WRITES_PER_SEC`). Every agent must converge; prints the max ARM writes per node, the
//! total, failures and wall time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use aks_flex_node::azure::settings::{AzureSettings, Timing};
use aks_flex_node::config::{self, LoadOptions};
use aks_flex_node::host::Host;
use aks_flex_node::steps::{self, arc_install::ArcInstall, Context, Step};
use azure_emulator::scenario::{self, Scenario};
use azure_emulator::{Emulator, EmulatorOptions};

use crate::support::azure::{azcmagent_bin, cluster_id, contributor_on_rg};

fn env_num(k: &str, d: u32) -> u32 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored"]
async fn scale_200_agents_with_arm_throttling() {
    let agents = env_num("FLEXNODE_BENCH_AGENTS", 200);
    let wps = env_num("FLEXNODE_BENCH_WRITES_PER_SEC", 20);
    let dir = tempfile::tempdir().unwrap();
    let mut sc = Scenario::demo();
    sc.settings.arm_writes_per_second = Some(wps);
    sc.role_assignments.push(contributor_on_rg());
    let emu = Emulator::start(EmulatorOptions {
        scenario: sc,
        himds_key_dir: Some(dir.path().join("keys")),
        ..Default::default()
    })
    .await
    .unwrap();
    let urls = emu.urls().clone();
    let azcmagent = azcmagent_bin();
    let cluster = cluster_id();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..agents {
        let host_name = format!("sim-{i:03}");
        let root = dir.path().join(&host_name);
        std::fs::create_dir_all(&root).unwrap();
        let cfg_json = serde_json::json!({
            "azure": {
                "subscriptionId": scenario::DEMO_SUBSCRIPTION_ID,
                "tenantId": scenario::DEMO_TENANT_ID,
                "resourceManagerEndpoint": urls.arm,
                "activeDirectoryEndpoint": urls.login,
                "servicePrincipal": {"clientId": scenario::DEMO_SP_CLIENT_ID, "clientSecret": scenario::DEMO_SP_SECRET},
                "arc": {"machineName": host_name, "resourceGroup": scenario::DEMO_RESOURCE_GROUP, "location": "eastus"},
                "targetCluster": {"resourceId": cluster, "location": "eastus"}
            },
            "kubernetes": {"version": "1.30.4"}
        });
        let env = |_: &str| None;
        let loaded = config::load_str(
            &cfg_json.to_string(),
            "bench",
            &LoadOptions {
                hostname: host_name.clone(),
                env: &env,
            },
        )
        .unwrap();
        let mut settings = AzureSettings::from_config(&loaded.config, &|_| None).unwrap();
        settings.timing = Timing::scaled(0.05);
        settings.interactive = false;
        settings.azcmagent = azcmagent.to_string_lossy().into_owned();
        settings
            .azcmagent_env
            .insert("FLEXNODE_EMULATOR_URL".into(), urls.control.clone());
        settings
            .azcmagent_env
            .insert("FLEXNODE_EMULATOR_HOST".into(), host_name.clone());
        settings.identity_endpoint = Some(format!(
            "{}/hosts/{host_name}/metadata/identity/oauth2/token",
            urls.himds
        ));
        let cfg = Arc::new(loaded.config);
        tasks.push(tokio::spawn(async move {
            let host = Arc::new(Host::new(&root).unwrap());
            let ctx = Context::new(cfg, host).unwrap();
            let step = Arc::new(ArcInstall::with_settings(Arc::new(settings)));
            let list: Vec<Box<dyn Step>> = vec![Box::new(Shared(step.clone()))];
            let (_, res) = steps::bootstrap(&ctx, &list, &BTreeSet::new()).await;
            (host_name, res.map_err(|e| e.to_string()), step.arm_writes())
        }));
    }
    let mut failures = Vec::new();
    let mut per_node = Vec::new();
    for t in tasks {
        let (name, res, writes) = t.await.unwrap();
        if let Err(e) = res {
            failures.push(format!("{name}: {e}"));
        }
        per_node.push((name, writes));
    }
    let wall = started.elapsed();
    let log = emu.request_log();
    let machine_puts = |n: &str| {
        log.iter()
            .filter(|e| e.method == "PUT" && e.path.ends_with(&format!("/machines/{n}")))
            .count() as u64
    };
    let totals: Vec<u64> = per_node.iter().map(|(n, w)| w + machine_puts(n)).collect();
    let throttled = log.iter().filter(|e| e.status == 429).count();
    let max = totals.iter().max().copied().unwrap_or(0);
    let total: u64 = totals.iter().sum();
    println!(
        "scale: agents={agents} arm_writes_per_sec={wps} converged={} failures={} max_arm_writes_per_node={max} total_arm_writes={total} throttled_429={throttled} wall={:.1}s",
        agents as usize - failures.len(),
        failures.len(),
        wall.as_secs_f64()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    let st = emu.state();
    assert_eq!(st.machines.len(), agents as usize);
    assert_eq!(
        st.role_assignments
            .iter()
            .filter(|r| st
                .machines
                .iter()
                .any(|m| m.principal_id.as_deref() == Some(&r.principal_id)))
            .count(),
        3 * agents as usize
    );
    // 1 machine PUT + 3 role PUTs when nothing is throttled; retries may add a few, never unbounded.
    assert!(max <= 4 + 8 * 4, "a node made {max} ARM writes");
}

/// Lets the test keep a handle on the step (for its write counter) while the engine owns a box.
struct Shared(Arc<ArcInstall>);

#[async_trait::async_trait]
impl Step for Shared {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn phase(&self) -> aks_flex_node::model::Phase {
        self.0.phase()
    }
    async fn plan(&self, ctx: &Context) -> steps::StepResult<Vec<steps::Action>> {
        self.0.plan(ctx).await
    }
    async fn apply_remote(&self, ctx: &Context, a: &steps::Action) -> steps::StepResult<()> {
        self.0.apply_remote(ctx, a).await
    }
    async fn undo_custom(
        &self,
        ctx: &Context,
        kind: &str,
        d: &serde_json::Value,
    ) -> steps::StepResult<()> {
        self.0.undo_custom(ctx, kind, d).await
    }
}
