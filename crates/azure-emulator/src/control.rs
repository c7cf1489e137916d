//! The control API under `/_emulator/` (JSON): request log, faults, state snapshot, reset,
//! device code approval, settings, and per-host azcmagent state (used by the stand-in).
//! Control requests are neither logged nor subject to faults.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{Response, StatusCode};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::faults::FaultRule;
use crate::himds::valid_host;
use crate::server::{json_response, Shared};
use crate::state::{now_rfc3339, HostAgent};

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(status, json!({"error": message.into()}))
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/requests", get(requests).delete(clear_requests))
        .route(
            "/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route("/faults/{id}", delete(remove_fault))
        .route("/state", get(state))
        .route("/reset", post(reset))
        .route("/settings", get(get_settings).patch(patch_settings))
        .route("/devicecode/{user_code}/approve", post(approve))
        .route("/devicelogin", get(devicelogin))
        .route(
            "/hosts/{host}",
            get(get_host).put(put_host).delete(delete_host),
        )
}

async fn requests(State(sh): State<Arc<Shared>>) -> Response<Body> {
    json_response(StatusCode::OK, json!(sh.log.snapshot()))
}

async fn clear_requests(State(sh): State<Arc<Shared>>) -> Response<Body> {
    sh.log.clear();
    json_response(StatusCode::OK, json!({"cleared": true}))
}

async fn list_faults(State(sh): State<Arc<Shared>>) -> Response<Body> {
    json_response(StatusCode::OK, json!(sh.faults().list()))
}

/// Body: one rule or an array of rules. Answers `{"ids": [...]}`.
async fn add_faults(State(sh): State<Arc<Shared>>, body: Bytes) -> Response<Body> {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
    };
    let rules: Vec<FaultRule> = match if value.is_array() {
        serde_json::from_value(value)
    } else {
        serde_json::from_value(value).map(|r| vec![r])
    } {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid fault rule: {e}")),
    };
    // Validate all before adding any, so a bad batch changes nothing.
    for (i, r) in rules.iter().enumerate() {
        if let Err(m) = r.validate() {
            return error(StatusCode::BAD_REQUEST, format!("fault rule {i}: {m}"));
        }
    }
    let mut faults = sh.faults();
    let mut ids = Vec::new();
    for r in rules {
        match faults.add(r) {
            Ok(id) => ids.push(id),
            Err(m) => return error(StatusCode::BAD_REQUEST, m),
        }
    }
    json_response(StatusCode::CREATED, json!({"ids": ids}))
}

async fn clear_faults(State(sh): State<Arc<Shared>>) -> Response<Body> {
    sh.faults().clear();
    json_response(StatusCode::OK, json!({"cleared": true}))
}

async fn remove_fault(State(sh): State<Arc<Shared>>, Path(id): Path<String>) -> Response<Body> {
    if sh.faults().remove(&id) {
        json_response(StatusCode::OK, json!({"removed": id}))
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("no fault rule with id '{id}'"),
        )
    }
}

async fn state(State(sh): State<Arc<Shared>>) -> Response<Body> {
    json_response(StatusCode::OK, json!(sh.world().snapshot()))
}

/// Back to the scenario's initial world, its faults, and an empty request log.
async fn reset(State(sh): State<Arc<Shared>>) -> Response<Body> {
    let scenario_faults = {
        let mut w = sh.world();
        w.reset();
        sh.persist(&w);
        w.scenario.faults.clone()
    };
    {
        let mut f = sh.faults();
        f.clear();
        for rule in scenario_faults {
            // Scenario faults were validated at start.
            let _ = f.add(rule);
        }
    }
    for entry in std::fs::read_dir(&sh.himds_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "key") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    sh.log.clear();
    json_response(StatusCode::OK, json!({"reset": true}))
}

async fn get_settings(State(sh): State<Arc<Shared>>) -> Response<Body> {
    json_response(StatusCode::OK, json!(sh.world().settings))
}

/// Merge the given fields into the live settings.
async fn patch_settings(State(sh): State<Arc<Shared>>, body: Bytes) -> Response<Body> {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return error(StatusCode::BAD_REQUEST, "body must be a JSON object"),
    };
    let mut w = sh.world();
    let mut current = json!(w.settings);
    if let (Some(cur), Some(p)) = (current.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            cur.insert(k.clone(), v.clone());
        }
    }
    match serde_json::from_value(current) {
        Ok(s) => {
            w.settings = s;
            json_response(StatusCode::OK, json!(w.settings))
        }
        Err(e) => error(StatusCode::BAD_REQUEST, format!("invalid settings: {e}")),
    }
}

/// Body (optional): `{"user": "<upn or object id>"}`.
async fn approve(
    State(sh): State<Arc<Shared>>,
    Path(user_code): Path<String>,
    body: Bytes,
) -> Response<Body> {
    let user = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => v.get("user").and_then(Value::as_str).map(str::to_string),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
        }
    };
    match crate::login::approve(&sh, &user_code, user.as_deref()) {
        Ok(()) => json_response(StatusCode::OK, json!({"approved": user_code})),
        Err(m) if m.starts_with("no pending") => error(StatusCode::NOT_FOUND, m),
        Err(m) => error(StatusCode::BAD_REQUEST, m),
    }
}

async fn devicelogin(State(sh): State<Arc<Shared>>) -> Response<Body> {
    let mut r = Response::new(Body::from(format!(
        "flexnode-emulator device login\n\nApprove a code with:\n  curl -X POST {}/_emulator/devicecode/<CODE>/approve\n",
        sh.base_url
    )));
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn host_or_error(host: &str) -> Result<(), Response<Body>> {
    if valid_host(host) {
        Ok(())
    } else {
        Err(error(
            StatusCode::BAD_REQUEST,
            "host names are 1-64 letters, digits, '-', '_' or '.'",
        ))
    }
}

/// The host's local agent state; a connected agent heartbeats continuously, so
/// `last_heartbeat` reads as now.
async fn get_host(State(sh): State<Arc<Shared>>, Path(host): Path<String>) -> Response<Body> {
    if let Err(r) = host_or_error(&host) {
        return r;
    }
    let w = sh.world();
    let mut h = w.hosts.get(&host).cloned().unwrap_or_default();
    if h.connected {
        h.last_heartbeat = now_rfc3339();
    }
    json_response(StatusCode::OK, json!(h))
}

async fn put_host(
    State(sh): State<Arc<Shared>>,
    Path(host): Path<String>,
    body: Bytes,
) -> Response<Body> {
    if let Err(r) = host_or_error(&host) {
        return r;
    }
    let agent: HostAgent = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid host state: {e}")),
    };
    let mut w = sh.world();
    w.hosts.insert(host, agent.clone());
    sh.persist(&w);
    json_response(StatusCode::OK, json!(agent))
}

async fn delete_host(State(sh): State<Arc<Shared>>, Path(host): Path<String>) -> Response<Body> {
    if let Err(r) = host_or_error(&host) {
        return r;
    }
    let mut w = sh.world();
    w.hosts.remove(&host);
    sh.persist(&w);
    json_response(StatusCode::OK, json!(HostAgent::default()))
}
