//! Microsoft Entra ID v2.0 endpoints: `/{tenant}/oauth2/v2.0/token` (client_credentials with a
//! client secret, and the device code grant) and `/{tenant}/oauth2/v2.0/devicecode`, with
//! Entra-shaped errors (`error`, `error_description` starting `AADSTSnnnn:`, `error_codes`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{Response, StatusCode};
use serde_json::json;

use crate::jwt::{self, Claims};
use crate::server::{aad_error, json_response, Shared};
use crate::state::{now_unix, DeviceCode, World};

const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Microsoft Graph; the audience when a device-code scope names no resource.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

fn parse_form(body: &Bytes) -> Result<HashMap<String, String>, Response<Body>> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map(|v| v.into_iter().collect())
        .map_err(|_| {
            aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must be application/x-www-form-urlencoded.",
            )
        })
}

fn missing(param: &str) -> Response<Body> {
    aad_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{param}'."),
    )
}

fn unknown_tenant(tenant: &str) -> Response<Body> {
    aad_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        90002,
        &format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
        ),
    )
}

fn unknown_client(client_id: &str, tenant: &str) -> Response<Body> {
    aad_error(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        700016,
        &format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
        ),
    )
}

/// Tenants addressed by the multi-tenant aliases resolve at sign-in (device code only).
fn is_alias(tenant: &str) -> bool {
    matches!(
        tenant.to_ascii_lowercase().as_str(),
        "organizations" | "common"
    )
}

fn tenant_known(world: &World, tenant: &str) -> bool {
    world
        .scenario
        .tenants
        .iter()
        .any(|t| t.id.eq_ignore_ascii_case(tenant))
}

/// The audience for a v2 scope list: the resource of the first `<resource>/.default` (or
/// `/user_impersonation`) scope.
fn audience(scope: &str) -> Option<String> {
    scope.split_whitespace().find_map(|s| {
        s.strip_suffix("/.default")
            .or_else(|| s.strip_suffix("/user_impersonation"))
            .map(str::to_string)
    })
}

/// Mint an access token and the Entra token response body.
pub(crate) fn issue(
    world: &World,
    aud: &str,
    tid: &str,
    oid: &str,
    appid: Option<&str>,
    upn: Option<&str>,
) -> (String, i64) {
    let now = now_unix();
    let lifetime = world.settings.token_lifetime_secs as i64;
    let claims = Claims {
        aud: aud.to_string(),
        iss: format!("https://sts.windows.net/{tid}/"),
        iat: now,
        nbf: now,
        exp: now + lifetime,
        tid: tid.to_string(),
        oid: oid.to_string(),
        sub: oid.to_string(),
        appid: appid.map(str::to_string),
        idtyp: if upn.is_some() { "user" } else { "app" }.to_string(),
        upn: upn.map(str::to_string),
        ver: "1.0".to_string(),
    };
    (jwt::mint(&claims, &world.signing_key), lifetime)
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response<Body> {
    let form = match parse_form(&body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut world = shared.world();
    let Some(grant) = form.get("grant_type") else {
        return missing("grant_type");
    };
    match grant.as_str() {
        "client_credentials" => client_credentials(&world, &tenant, &form),
        DEVICE_CODE_GRANT => device_code_grant(&mut world, &tenant, &form),
        other => aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
        ),
    }
}

fn client_credentials(
    world: &World,
    tenant: &str,
    form: &HashMap<String, String>,
) -> Response<Body> {
    if !tenant_known(world, tenant) {
        return unknown_tenant(tenant);
    }
    let Some(client_id) = form.get("client_id") else {
        return missing("client_id");
    };
    let Some(sp) = world.scenario.service_principals.iter().find(|sp| {
        sp.client_id.eq_ignore_ascii_case(client_id) && sp.tenant_id.eq_ignore_ascii_case(tenant)
    }) else {
        return unknown_client(client_id, tenant);
    };
    let Some(secret) = form.get("client_secret") else {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        );
    };
    // Compare in constant time; the secret is never logged or echoed.
    if !constant_time_eq(secret.as_bytes(), sp.secret.as_bytes()) {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                sp.client_id
            ),
        );
    }
    let Some(scope) = form.get("scope") else {
        return missing("scope");
    };
    let Some(aud) = scope
        .split_whitespace()
        .find_map(|s| s.strip_suffix("/.default"))
    else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    };
    let (token, lifetime) = issue(
        world,
        aud,
        &sp.tenant_id,
        &sp.object_id,
        Some(&sp.client_id),
        None,
    );
    json_response(
        StatusCode::OK,
        json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }),
    )
}

fn device_code_grant(
    world: &mut World,
    tenant: &str,
    form: &HashMap<String, String>,
) -> Response<Body> {
    if !tenant_known(world, tenant) && !is_alias(tenant) {
        return unknown_tenant(tenant);
    }
    let Some(code) = form.get("device_code") else {
        return missing("device_code");
    };
    let Some(client_id) = form.get("client_id") else {
        return missing("client_id");
    };
    let now = now_unix();
    let Some(dc) = world
        .device_codes
        .iter_mut()
        .find(|d| &d.device_code == code && d.client_id.eq_ignore_ascii_case(client_id))
    else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            70000,
            "The provided value for the 'device_code' is not valid.",
        );
    };
    if dc.redeemed {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            70000,
            "The provided value for the 'device_code' is not valid. It has already been used.",
        );
    }
    if now >= dc.expires_at {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "expired_token",
            70020,
            "The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
        );
    }
    let Some(user_oid) = dc.approved_by.clone() else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "authorization_pending",
            70016,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        );
    };
    dc.redeemed = true;
    let scope = dc.scope.clone();
    let client = dc.client_id.clone();
    let Some(user) = world
        .scenario
        .users
        .iter()
        .find(|u| u.object_id.eq_ignore_ascii_case(&user_oid))
        .cloned()
    else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            50034,
            "The user account does not exist in the directory.",
        );
    };
    let aud = audience(&scope).unwrap_or_else(|| GRAPH_APP_ID.to_string());
    let (token, lifetime) = issue(
        world,
        &aud,
        &user.tenant_id,
        &user.object_id,
        Some(&client),
        Some(&user.upn),
    );
    json_response(
        StatusCode::OK,
        json!({
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }),
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Hash first so the comparison time does not depend on the secret's length either.
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

fn user_code() -> String {
    // Letters and digits without look-alikes (0/O, 1/I).
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    uuid::Uuid::new_v4().as_bytes()[..9]
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`.
pub(crate) async fn devicecode(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response<Body> {
    let form = match parse_form(&body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut world = shared.world();
    if !tenant_known(&world, &tenant) && !is_alias(&tenant) {
        return unknown_tenant(&tenant);
    }
    let Some(client_id) = form.get("client_id") else {
        return missing("client_id");
    };
    let known_client = world
        .scenario
        .public_clients
        .iter()
        .any(|c| c.eq_ignore_ascii_case(client_id))
        || world
            .scenario
            .service_principals
            .iter()
            .any(|sp| sp.client_id.eq_ignore_ascii_case(client_id));
    if !known_client {
        return unknown_client(client_id, &tenant);
    }
    let Some(scope) = form.get("scope") else {
        return missing("scope");
    };
    let expires_in = world.settings.device_code_expires_secs;
    let interval = world.settings.device_code_interval_secs;
    let code = DeviceCode {
        device_code: format!(
            "DAQABAAEAAA{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ),
        user_code: user_code(),
        client_id: client_id.clone(),
        tenant_id: tenant.clone(),
        scope: scope.clone(),
        expires_at: now_unix() + expires_in as i64,
        approved_by: None,
        redeemed: false,
    };
    let verification_uri = format!("{}/_emulator/devicelogin", shared.base_url);
    let body = json!({
        "user_code": code.user_code,
        "device_code": code.device_code,
        "verification_uri": verification_uri,
        "expires_in": expires_in,
        "interval": interval,
        "message": format!(
            "To sign in, use a web browser to open the page {verification_uri} and enter the code {} to authenticate. (Emulator: POST {}/_emulator/devicecode/{}/approve)",
            code.user_code, shared.base_url, code.user_code
        ),
    });
    world.device_codes.push(code);
    json_response(StatusCode::OK, body)
}

/// Approve a pending device code as `user` (UPN or object id), or the tenant's first user.
pub(crate) fn approve(shared: &Shared, user_code: &str, user: Option<&str>) -> Result<(), String> {
    let mut world = shared.world();
    let now = now_unix();
    let Some(idx) = world
        .device_codes
        .iter()
        .position(|d| d.user_code.eq_ignore_ascii_case(user_code) && !d.redeemed)
    else {
        return Err(format!(
            "no pending device code with user code '{user_code}'"
        ));
    };
    if world.device_codes[idx].expires_at <= now {
        return Err(format!("device code '{user_code}' has expired"));
    }
    let tenant = world.device_codes[idx].tenant_id.clone();
    let users = &world.scenario.users;
    let found = match user {
        Some(u) => users
            .iter()
            .find(|x| x.upn.eq_ignore_ascii_case(u) || x.object_id.eq_ignore_ascii_case(u)),
        None => users
            .iter()
            .find(|x| x.tenant_id.eq_ignore_ascii_case(&tenant))
            .or_else(|| users.first()),
    };
    let Some(found) = found else {
        return Err(match user {
            Some(u) => format!("no user '{u}' in the scenario"),
            None => "the scenario has no users to sign in as".to_string(),
        });
    };
    if !is_alias(&tenant) && !found.tenant_id.eq_ignore_ascii_case(&tenant) {
        return Err(format!(
            "user '{}' belongs to tenant {}, not {tenant}",
            found.upn, found.tenant_id
        ));
    }
    let oid = found.object_id.clone();
    world.device_codes[idx].approved_by = Some(oid);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_from_scopes() {
        assert_eq!(
            audience("openid https://management.azure.com/.default offline_access").as_deref(),
            Some("https://management.azure.com")
        );
        assert_eq!(audience("openid profile"), None);
    }

    #[test]
    fn user_codes_use_the_safe_alphabet() {
        let c = user_code();
        assert_eq!(c.len(), 9);
        assert!(c
            .chars()
            .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit()));
        assert!(!c.contains('0') && !c.contains('O') && !c.contains('1') && !c.contains('I'));
    }
}
