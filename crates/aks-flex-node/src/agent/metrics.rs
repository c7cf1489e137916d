//! Optional Prometheus metrics (`agent.metricsAddress`; off by default): the daemon's passes, the
//! duration of every step of the last bootstrap, repairs by step, the node's health and the Arc token's
//! expiry, in the OpenMetrics text format (`prometheus-client`), served at `/metrics` on a loopback
//! address or a unix socket only (the endpoint has no authentication).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::MetricsAddress;
use crate::engine::{StepOutcome, StepReport};
use crate::host::{Entry, Host};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    pass: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabel {
    pass: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The daemon's metrics. Cheap to update; rendered on each scrape.
pub struct Metrics {
    registry: Mutex<Registry>,
    passes: Family<PassLabels, Counter>,
    pass_seconds: Family<PassLabel, FloatGauge>,
    last_success: Family<PassLabel, Gauge>,
    step_seconds: Family<StepLabel, FloatGauge>,
    repairs: Family<StepLabel, Counter>,
    healthy: Gauge,
    token_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("aks_flex_node")),
            passes: Family::default(),
            pass_seconds: Family::default(),
            last_success: Family::default(),
            step_seconds: Family::default(),
            repairs: Family::default(),
            healthy: Gauge::default(),
            token_expiry: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register(
                "passes",
                "Passes of the daemon by kind (bootstrap, host, azure) and result (ok, failed)",
                m.passes.clone(),
            );
            r.register(
                "pass_duration_seconds",
                "Duration of the last pass of each kind",
                m.pass_seconds.clone(),
            );
            r.register(
                "last_successful_pass_timestamp_seconds",
                "Unix time of the last successful pass of each kind",
                m.last_success.clone(),
            );
            r.register(
                "step_duration_seconds",
                "Duration of each step in the last pass that ran it",
                m.step_seconds.clone(),
            );
            r.register(
                "repairs",
                "Drift repaired by host passes, by step (one per action applied)",
                m.repairs.clone(),
            );
            r.register(
                "healthy",
                "1 when the last status computation found the node healthy, else 0",
                m.healthy.clone(),
            );
            r.register(
                "arc_token_expiry_timestamp_seconds",
                "Unix time at which the cached Arc identity token expires (0: unknown)",
                m.token_expiry.clone(),
            );
            let info: Family<Vec<(String, String)>, Gauge> = Family::default();
            info.get_or_create(&vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )])
            .set(1);
            r.register("build_info", "The agent's version", info);
        }
        m
    }

    /// One finished pass: its kind (`bootstrap`, `host`, `azure`), result, duration and its steps.
    pub fn record_pass(&self, pass: &str, ok: bool, elapsed: Duration, reports: &[StepReport]) {
        let pass = pass.to_ascii_lowercase();
        self.passes
            .get_or_create(&PassLabels {
                pass: pass.clone(),
                result: if ok { "ok" } else { "failed" }.to_string(),
            })
            .inc();
        let label = PassLabel { pass };
        self.pass_seconds
            .get_or_create(&label)
            .set(elapsed.as_secs_f64());
        if ok {
            self.last_success
                .get_or_create(&label)
                .set(chrono::Utc::now().timestamp());
        }
        for r in reports
            .iter()
            .filter(|r| !matches!(r.outcome, StepOutcome::Skipped))
        {
            self.step_seconds
                .get_or_create(&StepLabel {
                    step: r.name.to_string(),
                })
                .set(r.elapsed.as_secs_f64());
        }
    }

    pub fn record_repair(&self, step: &str) {
        self.repairs
            .get_or_create(&StepLabel {
                step: step.to_string(),
            })
            .inc();
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.set(i64::from(healthy));
    }

    pub fn set_token_expiry(&self, unix: Option<i64>) {
        self.token_expiry.set(unix.unwrap_or(0));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    m.render(),
                )
            }
        }),
    )
}

/// Start serving `/metrics` on `addr` in the background. A unix socket path is taken under the host's
/// root; a socket left by an earlier run is replaced, anything else there is refused; the socket is 0600
/// (root only), like the agent's other state.
pub async fn serve(
    host: &Host,
    addr: &MetricsAddress,
    metrics: Arc<Metrics>,
) -> Result<(), String> {
    let app = router(metrics);
    let err = |e: &dyn std::fmt::Display| format!("metrics endpoint {addr}: {e}");
    match addr {
        MetricsAddress::Tcp(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| err(&e))?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    tracing::warn!("metrics endpoint stopped: {e}");
                }
            });
        }
        MetricsAddress::Unix(p) => {
            if let Some(dir) = p.parent() {
                host.fs.create_dir_all(dir, 0o755).map_err(|e| err(&e))?;
            }
            match host.fs.entry(p).map_err(|e| err(&e))? {
                None => {}
                Some(Entry::Other) => {
                    host.fs.remove_file(p).map_err(|e| err(&e))?;
                }
                Some(_) => return Err(err(&"the path exists and is not a socket")),
            }
            let real = host.fs.resolve_entry(p).map_err(|e| err(&e))?;
            let l = tokio::net::UnixListener::bind(&real).map_err(|e| err(&e))?;
            host.fs.set_mode(p, 0o600).map_err(|e| err(&e))?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    tracing::warn!("metrics endpoint stopped: {e}");
                }
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Phase;

    fn report(name: &'static str, secs: u64) -> StepReport {
        let mut r = StepReport {
            name,
            phase: Phase::Installation,
            outcome: StepOutcome::Converged,
            applied: Vec::new(),
            elapsed: Duration::ZERO,
        };
        r.elapsed = Duration::from_secs(secs);
        r
    }

    /// Parse the exposition into (series, value), checking every line is a comment or `series value`.
    fn parse(text: &str) -> std::collections::BTreeMap<String, f64> {
        let mut out = std::collections::BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            out.insert(series.to_string(), value.parse::<f64>().expect(line));
        }
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        out
    }

    #[test]
    fn passes_steps_repairs_and_health_are_exposed() {
        let m = Metrics::new();
        m.record_pass(
            "bootstrap",
            true,
            Duration::from_millis(2500),
            &[report("RuncInstaller", 3)],
        );
        m.record_pass("host", false, Duration::from_secs(1), &[]);
        m.record_pass("host", true, Duration::from_secs(1), &[]);
        m.record_repair("ContainerdInstaller");
        m.record_repair("ContainerdInstaller");
        m.set_healthy(true);
        m.set_token_expiry(Some(1_900_000_000));
        let got = parse(&m.render());
        let v = |k: &str| {
            *got.get(k)
                .unwrap_or_else(|| panic!("{k} missing in {got:?}"))
        };
        assert_eq!(
            v(r#"aks_flex_node_passes_total{pass="bootstrap",result="ok"}"#),
            1.0
        );
        assert_eq!(
            v(r#"aks_flex_node_passes_total{pass="host",result="failed"}"#),
            1.0
        );
        assert_eq!(
            v(r#"aks_flex_node_passes_total{pass="host",result="ok"}"#),
            1.0
        );
        assert_eq!(
            v(r#"aks_flex_node_pass_duration_seconds{pass="bootstrap"}"#),
            2.5
        );
        assert_eq!(
            v(r#"aks_flex_node_step_duration_seconds{step="RuncInstaller"}"#),
            3.0
        );
        assert_eq!(
            v(r#"aks_flex_node_repairs_total{step="ContainerdInstaller"}"#),
            2.0
        );
        assert_eq!(v("aks_flex_node_healthy"), 1.0);
        assert_eq!(v("aks_flex_node_arc_token_expiry_timestamp_seconds"), 1.9e9);
        assert!(v(r#"aks_flex_node_last_successful_pass_timestamp_seconds{pass="host"}"#) > 1.7e9);
        assert_eq!(
            v(&format!(
                r#"aks_flex_node_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )),
            1.0
        );
    }

    #[tokio::test]
    async fn served_over_loopback_tcp_and_a_unix_socket() {
        let m = Arc::new(Metrics::new());
        m.set_healthy(true);
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        // TCP: find a free loopback port, then serve on it.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        serve(&host, &MetricsAddress::Tcp(addr), m.clone())
            .await
            .unwrap();
        let resp = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap();
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        assert!(resp
            .text()
            .await
            .unwrap()
            .contains("aks_flex_node_healthy 1"));

        // Unix socket, under the host's root.
        let sock = std::path::PathBuf::from("/run/aks-flex-node/m.sock");
        let real = dir.path().join("run/aks-flex-node/m.sock");
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, "").unwrap();
        let err = serve(&host, &MetricsAddress::Unix(sock.clone()), m.clone())
            .await
            .unwrap_err();
        assert!(err.contains("not a socket"), "{err}");
        std::fs::remove_file(&real).unwrap();
        serve(&host, &MetricsAddress::Unix(sock.clone()), m.clone())
            .await
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o600
        );
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::UnixStream::connect(&real).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("aks_flex_node_healthy 1"), "{resp}");
        // A second start replaces the stale socket of an earlier run.
        serve(&host, &MetricsAddress::Unix(sock), m).await.unwrap();
    }
}
