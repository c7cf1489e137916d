//! Arc HIMDS (the hybrid instance metadata service on port 40342 of an Arc machine):
//! `GET /metadata/identity/oauth2/token?api-version=2019-11-01&resource=...` with the
//! challenge-file flow — the first request gets `401` and `WWW-Authenticate: Basic realm=<key
//! file>`, the retry with `Authorization: Basic <file contents>` gets the token.
//!
//! `/metadata/...` serves the host named `default`; `/hosts/{host}/metadata/...` serves any
//! other simulated host (agents point `IDENTITY_ENDPOINT` at it).

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::server::{json_response, query_param, CallerOid, Shared};
use crate::state::{now_unix, HimdsKey};

/// Host served by the plain `/metadata/...` path.
pub const DEFAULT_HOST: &str = "default";
const API_VERSIONS: &[&str] = &["2019-08-15", "2019-11-01", "2020-06-01"];

fn err(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

/// Whether a host name is acceptable (it becomes part of paths and key file names).
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 64
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !host.starts_with('.')
}

pub(crate) async fn token_default(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response<Body> {
    serve(&shared, DEFAULT_HOST, &headers, query.as_deref())
}

pub(crate) async fn token_for_host(
    State(shared): State<Arc<Shared>>,
    Path(host): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response<Body> {
    if !valid_host(&host) {
        return err(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "host names are 1-64 letters, digits, '-', '_' or '.'",
        );
    }
    serve(&shared, &host, &headers, query.as_deref())
}

fn serve(shared: &Shared, host: &str, headers: &HeaderMap, query: Option<&str>) -> Response<Body> {
    let metadata = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !metadata {
        return err(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let Some(api_version) = query_param(query, "api-version") else {
        return err(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    };
    if !API_VERSIONS.contains(&api_version.as_str()) {
        return err(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!(
                "Invalid api-version '{api_version}'. Supported versions: {}",
                API_VERSIONS.join(", ")
            ),
        );
    }
    let Some(resource) = query_param(query, "resource").filter(|r| !r.is_empty()) else {
        return err(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let mut world = shared.world();
    // The identity must exist before any challenge is issued: a disconnected host has none.
    let identity = world
        .hosts
        .get(host)
        .filter(|h| h.connected)
        .and_then(|h| world.machine_by_id(&h.resource_id))
        .and_then(|m| Some((m.principal_id.clone()?, m.tenant_id.clone())));
    let Some((principal, tenant)) = identity else {
        return err(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!(
                "Identity not found: host '{host}' is not connected to Azure Arc or its machine has no system-assigned identity (run azcmagent connect)"
            ),
        );
    };
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("Basic")
                .then(|| rest.trim().to_string())
        });
    let Some(secret) = presented else {
        return challenge(shared, &mut world.himds_keys, host);
    };
    // Keys are single-use and bound to the host they were issued for.
    match world.himds_keys.get(&secret) {
        Some(k) if k.host == host => {
            if let Some(k) = world.himds_keys.remove(&secret) {
                let _ = std::fs::remove_file(&k.path);
            }
        }
        _ => {
            return err(
                StatusCode::UNAUTHORIZED,
                "invalid_request",
                "Invalid challenge token: read the file named in the WWW-Authenticate realm of a fresh challenge",
            )
        }
    }
    let (token, lifetime) = crate::login::issue(
        &world,
        &resource,
        &tenant,
        &principal,
        Some(&principal),
        None,
    );
    let now = now_unix();
    let mut resp = json_response(
        StatusCode::OK,
        json!({
            "access_token": token,
            "expires_in": lifetime.to_string(),
            "expires_on": (now + lifetime).to_string(),
            "ext_expires_in": lifetime.to_string(),
            "not_before": now.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    );
    resp.extensions_mut().insert(CallerOid(principal));
    resp
}

fn challenge(
    shared: &Shared,
    keys: &mut std::collections::HashMap<String, HimdsKey>,
    host: &str,
) -> Response<Body> {
    use std::os::unix::fs::OpenOptionsExt;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let path = shared
        .himds_dir
        .join(format!("{}.key", uuid::Uuid::new_v4()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(secret.as_bytes()));
    if let Err(e) = written {
        tracing::error!(error = %e, path = %path.display(), "cannot write HIMDS key file");
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &format!(
                "cannot write the challenge key file in {}",
                shared.himds_dir.display()
            ),
        );
    }
    let realm = HeaderValue::from_str(&format!("Basic realm={}", path.display()));
    keys.insert(
        secret,
        HimdsKey {
            host: host.to_string(),
            path,
        },
    );
    let mut resp = err(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Read the key file named in the WWW-Authenticate header and retry with Authorization: Basic <contents>",
    );
    if let Ok(v) = realm {
        resp.headers_mut().insert("www-authenticate", v);
    }
    resp
}
