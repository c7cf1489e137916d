//! The HTTP server: a hand-rolled accept loop (so a fault can drop a connection without any
//! response), the fault and request-log layer wrapped around the axum router, shared state, and
//! small response helpers used by every route module.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::faults::{FaultSet, Terminal};
use crate::reqlog::{RequestLog, RequestLogEntry};
use crate::state::World;

/// State shared by all handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    world: Mutex<World>,
    faults: Mutex<FaultSet>,
    pub log: RequestLog,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    pub himds_dir: PathBuf,
    pub state_dir: Option<PathBuf>,
}

/// Set on a response by handlers that authenticated the caller.
#[derive(Debug, Clone)]
pub(crate) struct CallerOid(pub String);

/// Set on a response by the AKS webhooks: the review's outcome, for the request log.
#[derive(Debug, Clone)]
pub(crate) struct ReviewOutcome {
    /// `authenticated`, `unauthenticated`, `allowed` or `no_opinion`.
    pub decision: String,
    /// Why a token was rejected, or the data action checked.
    pub detail: Option<String>,
}

/// Set on a request when a `principal_not_found` fault applies to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InjectPrincipalNotFound;

impl Shared {
    pub fn new(
        world: World,
        faults: FaultSet,
        log: RequestLog,
        base_url: String,
        himds_dir: PathBuf,
        state_dir: Option<PathBuf>,
    ) -> Shared {
        Shared {
            world: Mutex::new(world),
            faults: Mutex::new(faults),
            log,
            base_url,
            himds_dir,
            state_dir,
        }
    }

    /// Lock the world. A panic while holding the lock must not wedge the emulator, so poisoning
    /// is ignored (every mutation leaves the world consistent before it can panic).
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn faults(&self) -> MutexGuard<'_, FaultSet> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Persist after a mutation, if a state dir is configured. Failures are logged, not fatal:
    /// the in-memory state stays authoritative.
    pub fn persist(&self, world: &World) {
        if let Some(dir) = &self.state_dir {
            if let Err(e) = world.save(dir) {
                tracing::error!(error = %e, "cannot persist emulator state");
            }
        }
    }
}

/// Handle to the running server.
#[derive(Debug)]
pub(crate) struct ServerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    pub fn abort(self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(crate::login::token))
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            post(crate::login::devicecode),
        )
        .route(
            "/metadata/identity/oauth2/token",
            get(crate::himds::token_default),
        )
        .route(
            "/hosts/{host}/metadata/identity/oauth2/token",
            get(crate::himds::token_for_host),
        )
        .route(
            crate::aks::TOKEN_REVIEW_PATH,
            post(crate::aks::token_review_default),
        )
        .route(
            crate::aks::SUBJECT_ACCESS_REVIEW_PATH,
            post(crate::aks::access_review_default),
        )
        .route(
            "/aks/{cluster}/tokenreview",
            post(crate::aks::token_review_for),
        )
        .route(
            "/aks/{cluster}/subjectaccessreview",
            post(crate::aks::access_review_for),
        )
        .nest("/_emulator", crate::control::router())
        .fallback(crate::arm::dispatch)
        .with_state(shared)
}

/// Marker error: drop the connection without answering.
#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by injected fault")
    }
}

impl std::error::Error for ResetConnection {}

pub(crate) fn spawn(listener: TcpListener, shared: Arc<Shared>) -> ServerHandle {
    let (stop, mut stopped) = watch::channel(false);
    let app = router(shared.clone());
    let task = tokio::spawn(async move {
        // Connection tasks live in the set, so ending this task (stop or abort) ends them too.
        let mut conns = JoinSet::new();
        loop {
            while conns.try_join_next().is_some() {}
            tokio::select! {
                _ = stopped.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let app = app.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                            layer(shared.clone(), app.clone(), req)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            }
        }
    });
    ServerHandle { stop, task }
}

/// The value of one query parameter (decoded).
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

async fn layer(
    shared: Arc<Shared>,
    app: Router,
    req: Request<Incoming>,
) -> Result<Response<Body>, ResetConnection> {
    let start = Instant::now();
    let time = crate::state::now_rfc3339();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let api_version = query_param(req.uri().query(), "api-version");
    let is_control = path == "/_emulator" || path.starts_with("/_emulator/");
    let mut req = req.map(Body::new);
    let mut fault_ids = Vec::new();
    let mut terminal = None;
    if !is_control {
        let decision = shared
            .faults()
            .decide(&method, &path, api_version.as_deref());
        fault_ids = decision.applied.clone();
        if decision.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(decision.delay_ms)).await;
        }
        terminal = decision.terminal;
    }
    let log = |status: u16, caller: Option<String>, outcome: Option<ReviewOutcome>| {
        let (decision, detail) = match outcome {
            Some(o) => (Some(o.decision), o.detail),
            None => (None, None),
        };
        if !is_control {
            shared.log.push(RequestLogEntry {
                time: time.clone(),
                method: method.clone(),
                path: path.clone(),
                api_version: api_version.clone(),
                status,
                caller,
                duration_ms: start.elapsed().as_millis() as u64,
                fault: if fault_ids.is_empty() {
                    None
                } else {
                    Some(fault_ids.join(","))
                },
                decision,
                detail,
            });
        }
    };
    match terminal {
        Some((_, Terminal::Reset)) => {
            log(0, None, None);
            return Err(ResetConnection);
        }
        Some((
            _,
            Terminal::Status {
                status,
                retry_after_secs,
            },
        )) => {
            let resp = fault_response(&path, status, retry_after_secs);
            log(status, None, None);
            return Ok(resp);
        }
        Some((_, Terminal::PrincipalNotFound)) => {
            req.extensions_mut().insert(InjectPrincipalNotFound);
        }
        None => {}
    }
    let resp = match app.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let caller = resp.extensions().get::<CallerOid>().map(|c| c.0.clone());
    let outcome = resp.extensions().get::<ReviewOutcome>().cloned();
    log(resp.status().as_u16(), caller, outcome);
    Ok(resp)
}

fn fault_response(path: &str, status: u16, retry_after: Option<u64>) -> Response<Body> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = if path.contains("/oauth2/") && !path.starts_with("/metadata") {
        aad_error(
            code,
            "temporarily_unavailable",
            50196,
            "The server is temporarily unavailable (injected fault).",
        )
    } else if path.contains("/metadata/identity/") {
        json_response(
            code,
            json!({"error": "temporarily_unavailable", "error_description": "injected fault"}),
        )
    } else {
        let arm_code = match status {
            429 => "TooManyRequests",
            500 => "InternalServerError",
            503 => "ServiceUnavailable",
            _ => "InjectedFault",
        };
        arm_error(
            code,
            arm_code,
            &format!("The request failed with an injected {status} fault. Please retry."),
        )
    };
    if let Some(secs) = retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert("retry-after", v);
        }
    }
    resp
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// An empty response.
pub(crate) fn empty_response(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

/// An ARM error: `{"error":{"code","message"}}`.
pub(crate) fn arm_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(status, json!({"error": {"code": code, "message": message}}))
}

/// An Entra ID (AAD) OAuth error body.
pub(crate) fn aad_error(
    status: StatusCode,
    error: &str,
    aadsts: u32,
    description: &str,
) -> Response<Body> {
    let trace = uuid::Uuid::new_v4().to_string();
    let correlation = uuid::Uuid::new_v4().to_string();
    let timestamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    json_response(
        status,
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{aadsts}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {timestamp}"
            ),
            "error_codes": [aadsts],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={aadsts}"),
        }),
    )
}
