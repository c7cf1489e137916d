//! AKS's Microsoft Entra ID integration for the Kubernetes API server, emulated at the wire: the
//! two webhooks a real kube-apiserver calls (`--authentication-token-webhook-config-file` and
//! `--authorization-mode=...,Webhook,...` with `--authorization-webhook-config-file`).
//!
//! - `TokenReview` (`authentication.k8s.io/v1beta1` or `v1`): the bearer token must be one the
//!   emulator signed, for the AKS AAD server application ([`AKS_AAD_SERVER_APP_ID`]), not
//!   expired, from the cluster's tenant. The user is the `upn` (users) or the `oid` (service
//!   principals and managed identities), with `uid` and `extra.oid` = the object id.
//! - `SubjectAccessReview` (`authorization.k8s.io/v1beta1` or `v1`): Azure RBAC for Kubernetes
//!   authorization. The request becomes a data action
//!   `Microsoft.ContainerService/managedClusters[/<group>]/<resource>/<read|write|delete|...>`
//!   checked at the cluster's resource id (or `<cluster id>/namespaces/<ns>`) against the
//!   principal's role assignments, inherited from the resource group and subscription as for ARM.
//!   The mapping follows the open-source Guard webhook AKS runs. When no assignment grants it the
//!   answer is `allowed: false` without `denied`: "no opinion", so the API server's other
//!   authorizers (Node, RBAC) still decide.
//!
//! Tokens are never logged or echoed; the request log gets the caller's object id and the
//! decision only.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::jwt::{self, TokenError};
use crate::scenario::{is_guid, Cluster};
use crate::server::{json_response, CallerOid, ReviewOutcome, Shared};
use crate::state::{now_unix, World};

/// The AKS AAD server application (the "Azure Kubernetes Service AAD Server" app): the audience
/// of tokens for AKS clusters with managed Entra ID integration.
pub const AKS_AAD_SERVER_APP_ID: &str = "6dae42f8-4368-4678-94ff-3960e28e3630";

/// Path of the TokenReview webhook for the scenario's first cluster. With several clusters use
/// `/aks/{cluster name}/tokenreview`.
pub const TOKEN_REVIEW_PATH: &str = "/aks/tokenreview";
/// Path of the SubjectAccessReview webhook for the scenario's first cluster. With several
/// clusters use `/aks/{cluster name}/subjectaccessreview`.
pub const SUBJECT_ACCESS_REVIEW_PATH: &str = "/aks/subjectaccessreview";

/// File name of the authentication webhook config written by [`write_webhook_configs`].
pub const AUTHN_CONFIG_FILE: &str = "authn-webhook.yaml";
/// File name of the authorization webhook config written by [`write_webhook_configs`].
pub const AUTHZ_CONFIG_FILE: &str = "authz-webhook.yaml";

/// The resource-provider prefix of every Kubernetes data action on AKS.
const CLUSTER_TYPE: &str = "Microsoft.ContainerService/managedClusters";
/// Clock skew allowed on `nbf`, as Entra-token validators commonly do.
const NBF_SKEW_SECS: i64 = 300;

const AUTHN_V1BETA1: &str = "authentication.k8s.io/v1beta1";
const AUTHN_V1: &str = "authentication.k8s.io/v1";
const AUTHZ_V1BETA1: &str = "authorization.k8s.io/v1beta1";
const AUTHZ_V1: &str = "authorization.k8s.io/v1";

/// A request that is not a review object at all (the API server gets an HTTP error, which it
/// treats as a failed webhook call).
fn bad_request(message: String) -> Response<Body> {
    json_response(StatusCode::BAD_REQUEST, json!({"error": message}))
}

/// Parse the body and check `apiVersion` (one of `versions`) and `kind`.
fn parse_review(
    body: &Bytes,
    kind: &str,
    versions: [&str; 2],
) -> Result<(String, Value), Response<Body>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("the body is not a JSON {kind}: {e}")))?;
    let api_version = value["apiVersion"].as_str().unwrap_or_default().to_string();
    if !versions.contains(&api_version.as_str()) {
        return Err(bad_request(format!(
            "apiVersion '{api_version}' is not supported; send {} or {}",
            versions[0], versions[1]
        )));
    }
    if value["kind"].as_str() != Some(kind) {
        return Err(bad_request(format!(
            "kind '{}' is not supported; send {kind}",
            value["kind"].as_str().unwrap_or_default()
        )));
    }
    Ok((api_version, value))
}

/// The cluster a webhook path serves: by name, or the scenario's first cluster.
fn find_cluster<'w>(world: &'w World, name: Option<&str>) -> Result<&'w Cluster, String> {
    let clusters = &world.scenario.clusters;
    match name {
        None => clusters
            .first()
            .ok_or_else(|| "the scenario has no managed cluster".to_string()),
        Some(n) => {
            let mut found = clusters.iter().filter(|c| c.name.eq_ignore_ascii_case(n));
            match (found.next(), found.next()) {
                (Some(c), None) => Ok(c),
                (None, _) => Err(format!("the scenario has no managed cluster named '{n}'")),
                (Some(_), Some(_)) => Err(format!(
                    "several managed clusters are named '{n}'; names must be unique to be served"
                )),
            }
        }
    }
}

fn with_outcome(
    mut resp: Response<Body>,
    caller: Option<String>,
    decision: &str,
    detail: Option<String>,
) -> Response<Body> {
    if let Some(c) = caller {
        resp.extensions_mut().insert(CallerOid(c));
    }
    resp.extensions_mut().insert(ReviewOutcome {
        decision: decision.to_string(),
        detail,
    });
    resp
}

// ---------------------------------------------------------------------------------------------
// TokenReview

/// `POST /aks/tokenreview`.
pub(crate) async fn token_review_default(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Response<Body> {
    token_review(&shared, None, &body)
}

/// `POST /aks/{cluster}/tokenreview`.
pub(crate) async fn token_review_for(
    State(shared): State<Arc<Shared>>,
    Path(cluster): Path<String>,
    body: Bytes,
) -> Response<Body> {
    token_review(&shared, Some(&cluster), &body)
}

/// Why a token was not accepted: a short code for the request log, and the `status.error` text.
struct Rejection {
    code: &'static str,
    message: String,
}

fn reject(code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

fn check_token(world: &World, cluster: Option<&Cluster>, token: &str) -> Result<Value, Rejection> {
    if token.is_empty() {
        return Err(reject("missing", "spec.token is empty"));
    }
    let now = now_unix();
    let claims = match jwt::verify(token, &world.signing_key, now) {
        Ok(c) => c,
        Err(TokenError::Expired { exp }) => {
            return Err(reject(
                "expired",
                format!("the token expired at {exp} (unix time); it is now {now}"),
            ))
        }
        Err(TokenError::Invalid) => {
            return Err(reject(
                "invalid",
                "the token is not a JWT signed by this Entra ID (bad format or signature)",
            ))
        }
    };
    if !claims.aud.eq_ignore_ascii_case(AKS_AAD_SERVER_APP_ID) {
        return Err(reject(
            "wrong_audience",
            format!(
                "the token audience '{}' is not the AKS AAD server application '{AKS_AAD_SERVER_APP_ID}'",
                claims.aud
            ),
        ));
    }
    if claims.nbf > now + NBF_SKEW_SECS {
        return Err(reject(
            "not_yet_valid",
            format!("the token is not valid before {} (unix time)", claims.nbf),
        ));
    }
    if let Some(c) = cluster {
        if let Some(tenant) = world.subscription_tenant(&c.subscription_id) {
            if !claims.tid.eq_ignore_ascii_case(&tenant) {
                return Err(reject(
                    "wrong_tenant",
                    format!(
                        "the token is from tenant '{}', but cluster '{}' trusts tenant '{tenant}'",
                        claims.tid, c.name
                    ),
                ));
            }
        }
    }
    if !is_guid(&claims.oid) {
        return Err(reject("invalid", "the token has no object id (oid)"));
    }
    let username = claims.upn.clone().unwrap_or_else(|| claims.oid.clone());
    Ok(json!({
        "username": username,
        "uid": claims.oid,
        "groups": ["system:authenticated"],
        "extra": {"oid": [claims.oid]},
    }))
}

fn token_review(shared: &Shared, cluster: Option<&str>, body: &Bytes) -> Response<Body> {
    let (api_version, review) = match parse_review(body, "TokenReview", [AUTHN_V1BETA1, AUTHN_V1]) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let world = shared.world();
    let cluster = match find_cluster(&world, cluster) {
        Ok(c) => Some(c),
        // Without a cluster the token is still checked, minus the tenant.
        Err(_) if cluster.is_none() => None,
        Err(e) => return bad_request(e),
    };
    let result = check_token(&world, cluster, token);
    drop(world);
    let (status, caller, decision, detail) = match result {
        Ok(user) => {
            let oid = user["uid"].as_str().map(str::to_string);
            (
                json!({"authenticated": true, "user": user}),
                oid,
                "authenticated",
                None,
            )
        }
        Err(r) => {
            tracing::debug!(reason = r.code, "TokenReview: token rejected");
            (
                json!({"authenticated": false, "error": r.message}),
                None,
                "unauthenticated",
                Some(r.code.to_string()),
            )
        }
    };
    let resp = json_response(
        StatusCode::OK,
        json!({"apiVersion": api_version, "kind": "TokenReview", "status": status}),
    );
    with_outcome(resp, caller, decision, detail)
}

// ---------------------------------------------------------------------------------------------
// SubjectAccessReview

/// `POST /aks/subjectaccessreview`.
pub(crate) async fn access_review_default(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Response<Body> {
    access_review(&shared, None, &body)
}

/// `POST /aks/{cluster}/subjectaccessreview`.
pub(crate) async fn access_review_for(
    State(shared): State<Arc<Shared>>,
    Path(cluster): Path<String>,
    body: Bytes,
) -> Response<Body> {
    access_review(&shared, Some(&cluster), &body)
}

/// The Azure RBAC action part for a Kubernetes verb (Guard's mapping). `None` for verbs that
/// have no data action.
pub fn verb_action(verb: &str) -> Option<&'static str> {
    Some(match verb {
        "get" | "list" | "watch" => "read",
        "create" | "update" | "patch" => "write",
        "delete" | "deletecollection" => "delete",
        "bind" => "bind/action",
        "escalate" => "escalate/action",
        "use" => "use/action",
        "impersonate" => "impersonate/action",
        "*" => "*",
        _ => return None,
    })
}

/// The data action and the scope a SubjectAccessReview spec is checked at, or why there is none.
/// `cluster_id` is the managed cluster's ARM id.
pub fn data_action_for(spec: &Value, cluster_id: &str) -> Result<(String, String), String> {
    let join = |parts: &[&str]| {
        parts
            .iter()
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    };
    if let Some(attrs) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        let s = |k: &str| attrs[k].as_str().unwrap_or_default();
        let (verb, resource) = (s("verb"), s("resource"));
        if resource.is_empty() {
            return Err("resourceAttributes.resource is empty".to_string());
        }
        let action = if resource == "pods" && s("subresource") == "exec" {
            "pods/exec/action".to_string()
        } else {
            let Some(v) = verb_action(verb) else {
                return Err(format!("verb '{verb}' has no Azure RBAC data action"));
            };
            format!("{resource}/{v}")
        };
        let namespace = s("namespace");
        let scope = if namespace.is_empty() {
            cluster_id.to_string()
        } else {
            format!("{cluster_id}/namespaces/{namespace}")
        };
        return Ok((join(&[CLUSTER_TYPE, s("group"), &action]), scope));
    }
    if let Some(attrs) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        let verb = attrs["verb"].as_str().unwrap_or_default();
        let Some(v) = verb_action(verb) else {
            return Err(format!("verb '{verb}' has no Azure RBAC data action"));
        };
        let path = attrs["path"].as_str().unwrap_or_default();
        return Ok((join(&[CLUSTER_TYPE, path, v]), cluster_id.to_string()));
    }
    Err("the spec has neither resourceAttributes nor nonResourceAttributes".to_string())
}

/// The Entra object id a review is about: `extra.oid` (set by the TokenReview webhook), else a
/// GUID `uid` or `user`, else a scenario user's UPN.
fn principal_of(world: &World, spec: &Value) -> Option<String> {
    let extra_oid = spec["extra"]
        .as_object()
        .and_then(|m: &Map<String, Value>| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("oid"))
                .map(|(_, v)| v)
        })
        .and_then(|v| v.as_array()?.first()?.as_str());
    let candidates = [extra_oid, spec["uid"].as_str(), spec["user"].as_str()];
    if let Some(oid) = candidates.into_iter().flatten().find(|c| is_guid(c)) {
        return Some(oid.to_ascii_lowercase());
    }
    let user = spec["user"].as_str()?;
    world
        .scenario
        .users
        .iter()
        .find(|u| u.upn.eq_ignore_ascii_case(user))
        .map(|u| u.object_id.to_ascii_lowercase())
}

fn access_review(shared: &Shared, cluster: Option<&str>, body: &Bytes) -> Response<Body> {
    let (api_version, review) =
        match parse_review(body, "SubjectAccessReview", [AUTHZ_V1BETA1, AUTHZ_V1]) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
    let spec = &review["spec"];
    let world = shared.world();
    let no_opinion = |reason: String, caller: Option<String>, detail: Option<String>| {
        tracing::debug!(%reason, "SubjectAccessReview: no opinion");
        let resp = json_response(
            StatusCode::OK,
            json!({
                "apiVersion": api_version,
                "kind": "SubjectAccessReview",
                "status": {"allowed": false, "reason": reason},
            }),
        );
        with_outcome(resp, caller, "no_opinion", detail)
    };
    let cluster = match find_cluster(&world, cluster) {
        Ok(c) => c,
        Err(e) => return no_opinion(format!("{e}; Azure RBAC has no opinion"), None, None),
    };
    let Some(principal) = principal_of(&world, spec) else {
        let user = spec["user"].as_str().unwrap_or_default();
        return no_opinion(
            format!(
                "user '{user}' is not a Microsoft Entra ID principal; Azure RBAC has no opinion"
            ),
            None,
            None,
        );
    };
    if !cluster.azure_rbac {
        return no_opinion(
            format!(
                "Azure RBAC for Kubernetes authorization is disabled on cluster '{}'; Azure RBAC has no opinion",
                cluster.name
            ),
            Some(principal),
            None,
        );
    }
    let (action, scope) = match data_action_for(spec, &cluster.resource_id()) {
        Ok(a) => a,
        Err(e) => {
            return no_opinion(
                format!("{e}; Azure RBAC has no opinion"),
                Some(principal),
                None,
            )
        }
    };
    match world.data_action_grant(&principal, &action, &scope) {
        Some((assignment, role)) => {
            let reason = format!(
                "Access allowed by Azure RBAC role assignment '{}' of role '{}' at scope '{}' to principal '{principal}' for '{action}'",
                assignment.name, role.name, assignment.scope
            );
            let resp = json_response(
                StatusCode::OK,
                json!({
                    "apiVersion": api_version,
                    "kind": "SubjectAccessReview",
                    "status": {"allowed": true, "reason": reason},
                }),
            );
            with_outcome(resp, Some(principal), "allowed", Some(action))
        }
        None => no_opinion(
            format!(
                "principal '{principal}' has no Azure role assignment granting data action '{action}' at scope '{scope}' or above; Azure RBAC has no opinion"
            ),
            Some(principal),
            Some(action),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook config files for kube-apiserver

/// A kubeconfig-format webhook config file for kube-apiserver pointing at `server`. The URL is
/// written as a JSON string, which is valid YAML whatever it contains.
pub fn webhook_kubeconfig(name: &str, server: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        "# kube-apiserver webhook config written by flexnode-emulator\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {name}\n  \
           cluster:\n    \
             server: {server}\n\
         users:\n\
         - name: kube-apiserver\n  \
           user: {{}}\n\
         contexts:\n\
         - name: webhook\n  \
           context:\n    \
             cluster: {name}\n    \
             user: kube-apiserver\n\
         current-context: webhook\n\
         preferences: {{}}\n",
        name = q(name),
        server = q(server),
    )
}

/// The two webhook URLs under an emulator base URL (`http://127.0.0.1:PORT`), for the named
/// cluster or the scenario's first one.
pub fn webhook_urls(base_url: &str, cluster: Option<&str>) -> Result<(String, String), String> {
    let base = base_url.trim().trim_end_matches('/');
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
        .ok_or_else(|| format!("--url '{base_url}' must start with http:// or https://"))?;
    if rest.is_empty() || rest.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!("--url '{base_url}' is not a valid URL"));
    }
    let prefix = match cluster {
        None => format!("{base}/aks"),
        Some(c) => {
            if c.is_empty()
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(format!("--cluster '{c}' is not a valid cluster name"));
            }
            format!("{base}/aks/{c}")
        }
    };
    Ok((
        format!("{prefix}/tokenreview"),
        format!("{prefix}/subjectaccessreview"),
    ))
}

/// Write `authn-webhook.yaml` and `authz-webhook.yaml` into `dir` (created if missing) for the
/// emulator at `base_url`. Returns their paths (authentication, authorization).
pub fn write_webhook_configs(
    base_url: &str,
    cluster: Option<&str>,
    dir: &FsPath,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    use anyhow::Context;
    let (authn_url, authz_url) = webhook_urls(base_url, cluster).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let authn = dir.join(AUTHN_CONFIG_FILE);
    let authz = dir.join(AUTHZ_CONFIG_FILE);
    for (path, name, url) in [
        (&authn, "flexnode-emulator-aks-authn", &authn_url),
        (&authz, "flexnode-emulator-aks-authz", &authz_url),
    ] {
        std::fs::write(path, webhook_kubeconfig(name, url))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok((authn, authz))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c";

    fn action(spec: Value) -> Result<(String, String), String> {
        data_action_for(&spec, ID)
    }

    #[test]
    fn resource_requests_map_to_guard_data_actions() {
        let (a, s) =
            action(json!({"resourceAttributes": {"verb": "create", "resource": "nodes"}})).unwrap();
        assert_eq!(a, "Microsoft.ContainerService/managedClusters/nodes/write");
        assert_eq!(s, ID);
        let (a, s) = action(json!({"resourceAttributes": {"namespace": "default", "verb": "list", "group": "apps", "resource": "deployments"}}))
            .unwrap();
        assert_eq!(
            a,
            "Microsoft.ContainerService/managedClusters/apps/deployments/read"
        );
        assert_eq!(s, format!("{ID}/namespaces/default"));
        let (a, _) = action(json!({"resourceAttributes": {"verb": "patch", "resource": "nodes", "subresource": "status", "name": "n1"}}))
            .unwrap();
        assert_eq!(a, "Microsoft.ContainerService/managedClusters/nodes/write");
        let (a, _) = action(json!({"resourceAttributes": {"verb": "create", "resource": "pods", "subresource": "exec"}}))
            .unwrap();
        assert_eq!(
            a,
            "Microsoft.ContainerService/managedClusters/pods/exec/action"
        );
        let (a, _) = action(json!({"resourceAttributes": {"verb": "deletecollection", "group": "coordination.k8s.io", "resource": "leases"}}))
            .unwrap();
        assert_eq!(
            a,
            "Microsoft.ContainerService/managedClusters/coordination.k8s.io/leases/delete"
        );
        let (a, _) = action(
            json!({"resourceAttributes": {"verb": "impersonate", "resource": "serviceaccounts"}}),
        )
        .unwrap();
        assert_eq!(
            a,
            "Microsoft.ContainerService/managedClusters/serviceaccounts/impersonate/action"
        );
        assert!(action(json!({"resourceAttributes": {"verb": "approve", "group": "certificates.k8s.io", "resource": "signers"}}))
            .unwrap_err()
            .contains("approve"));
    }

    #[test]
    fn non_resource_requests_map_to_path_data_actions() {
        let (a, s) =
            action(json!({"nonResourceAttributes": {"path": "/healthz", "verb": "get"}})).unwrap();
        assert_eq!(a, "Microsoft.ContainerService/managedClusters/healthz/read");
        assert_eq!(s, ID);
        let (a, _) =
            action(json!({"nonResourceAttributes": {"path": "/apis/apps/v1/", "verb": "get"}}))
                .unwrap();
        assert_eq!(
            a,
            "Microsoft.ContainerService/managedClusters/apis/apps/v1/read"
        );
        assert!(action(json!({})).is_err());
    }

    #[test]
    fn webhook_urls_are_checked_and_quoted() {
        let (n, z) = webhook_urls("http://127.0.0.1:8642/", None).unwrap();
        assert_eq!(n, "http://127.0.0.1:8642/aks/tokenreview");
        assert_eq!(z, "http://127.0.0.1:8642/aks/subjectaccessreview");
        let (n, _) = webhook_urls("http://127.0.0.1:1", Some("c-1")).unwrap();
        assert_eq!(n, "http://127.0.0.1:1/aks/c-1/tokenreview");
        assert!(webhook_urls("127.0.0.1:1", None).is_err());
        assert!(webhook_urls("http://a\nb", None).is_err());
        assert!(webhook_urls("http://a", Some("../x")).is_err());
        let text = webhook_kubeconfig("n", "http://x/aks/tokenreview");
        assert!(
            text.contains("    server: \"http://x/aks/tokenreview\"\n"),
            "{text}"
        );
    }
}
