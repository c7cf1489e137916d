//! Azure Resource Manager: bearer-token authentication, per-resource-type `api-version`
//! checks, write throttling, permission checks against modelled role assignments, and the
//! routes the agent uses — HybridCompute machines, ContainerService managed clusters (GET and
//! list*Credential), Authorization role assignments (PUT/GET/DELETE/list with `$filter` and
//! `nextLink`) and built-in role definitions (GET).
//!
//! Paths are matched case-insensitively on literal segments, as ARM does; role assignments
//! live under any scope (`{scope}/providers/Microsoft.Authorization/roleAssignments/...`), so
//! routing is done here by hand rather than by the axum router.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::jwt::{self, Claims, TokenError};
use crate::roles::{self, guid_of, same_scope, scope_covers};
use crate::scenario::{is_guid, Cluster};
use crate::server::{
    arm_error, empty_response, json_response, CallerOid, InjectPrincipalNotFound, Shared,
};
use crate::state::{now_rfc3339, now_unix, Machine, RoleAssignment, World};

/// api-versions accepted per resource type (a subset of the published ones).
const HYBRID_VERSIONS: &[&str] = &[
    "2020-08-02",
    "2021-05-20",
    "2022-03-10",
    "2022-12-27",
    "2024-07-10",
];
const AKS_VERSIONS: &[&str] = &[
    "2023-10-01",
    "2024-01-01",
    "2024-02-01",
    "2024-05-01",
    "2024-09-01",
    "2025-01-01",
];
const ROLE_ASSIGNMENT_VERSIONS: &[&str] = &[
    "2015-07-01",
    "2018-09-01-preview",
    "2020-04-01-preview",
    "2020-10-01-preview",
    "2022-04-01",
];
const ROLE_DEFINITION_VERSIONS: &[&str] = &["2015-07-01", "2018-01-01-preview", "2022-04-01"];

/// Audiences ARM accepts.
const ARM_AUDIENCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.azure.com/",
    "https://management.core.windows.net",
    "https://management.core.windows.net/",
];

#[derive(Debug, Clone, PartialEq)]
enum Route {
    RoleAssignment {
        scope: String,
        name: String,
    },
    RoleAssignments {
        scope: String,
    },
    RoleDefinition {
        scope: String,
        guid: String,
    },
    /// The caller's effective permissions at a scope (`Permissions_ListForResourceGroup` /
    /// `Permissions_ListForResource`).
    Permissions {
        scope: String,
    },
    Machine {
        sub: String,
        rg: String,
        name: String,
    },
    Cluster {
        sub: String,
        rg: String,
        name: String,
    },
    ClusterAction {
        sub: String,
        rg: String,
        name: String,
        action: String,
    },
}

impl Route {
    fn versions(&self) -> (&'static str, &'static [&'static str]) {
        match self {
            Route::RoleAssignment { .. } | Route::RoleAssignments { .. } => {
                ("roleAssignments", ROLE_ASSIGNMENT_VERSIONS)
            }
            Route::RoleDefinition { .. } => ("roleDefinitions", ROLE_DEFINITION_VERSIONS),
            Route::Permissions { .. } => ("permissions", ROLE_DEFINITION_VERSIONS),
            Route::Machine { .. } => ("machines", HYBRID_VERSIONS),
            Route::Cluster { .. } | Route::ClusterAction { .. } => {
                ("managedClusters", AKS_VERSIONS)
            }
        }
    }

    /// The subscription the request is addressed to, if any.
    fn subscription(&self) -> Option<String> {
        let scope = match self {
            Route::RoleAssignment { scope, .. }
            | Route::RoleAssignments { scope }
            | Route::RoleDefinition { scope, .. }
            | Route::Permissions { scope } => scope,
            Route::Machine { sub, .. }
            | Route::Cluster { sub, .. }
            | Route::ClusterAction { sub, .. } => return Some(sub.clone()),
        };
        scope_parts(scope).0
    }
}

/// (subscription, resource group) named by a scope.
fn scope_parts(scope: &str) -> (Option<String>, Option<String>) {
    let segs: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
    let sub = (segs.len() >= 2 && segs[0].eq_ignore_ascii_case("subscriptions"))
        .then(|| segs[1].to_string());
    let rg = (segs.len() >= 4 && sub.is_some() && segs[2].eq_ignore_ascii_case("resourceGroups"))
        .then(|| segs[3].to_string());
    (sub, rg)
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn parse_route(path: &str) -> Option<Route> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    // Authorization resources can sit under any scope: find the last provider segment.
    if let Some(i) = (0..segs.len().saturating_sub(2))
        .rev()
        .find(|&i| eq(&segs[i], "providers") && eq(&segs[i + 1], "Microsoft.Authorization"))
    {
        let scope = format!("/{}", segs[..i].join("/"));
        let kind = segs.get(i + 2)?;
        let rest = &segs[i + 3..];
        return match (kind.to_ascii_lowercase().as_str(), rest.len()) {
            ("roleassignments", 0) => Some(Route::RoleAssignments { scope }),
            ("roleassignments", 1) => Some(Route::RoleAssignment {
                scope,
                name: rest[0].clone(),
            }),
            ("permissions", 0) => Some(Route::Permissions { scope }),
            ("roledefinitions", 1) => Some(Route::RoleDefinition {
                scope,
                guid: rest[0].clone(),
            }),
            _ => None,
        };
    }
    if segs.len() < 8
        || !eq(&segs[0], "subscriptions")
        || !eq(&segs[2], "resourceGroups")
        || !eq(&segs[4], "providers")
    {
        return None;
    }
    let (sub, rg, name) = (segs[1].clone(), segs[3].clone(), segs[7].clone());
    match (
        segs[5].to_ascii_lowercase().as_str(),
        segs[6].to_ascii_lowercase().as_str(),
        segs.len(),
    ) {
        ("microsoft.hybridcompute", "machines", 8) => Some(Route::Machine { sub, rg, name }),
        ("microsoft.containerservice", "managedclusters", 8) => {
            Some(Route::Cluster { sub, rg, name })
        }
        ("microsoft.containerservice", "managedclusters", 9) => Some(Route::ClusterAction {
            sub,
            rg,
            name,
            action: segs[8].clone(),
        }),
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    // Paths in ARM ids are plain; decode %XX so quoted scopes compare equal.
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn www_authenticate(shared: &Shared, tenant: &str, description: &str) -> HeaderValue {
    let v = format!(
        "Bearer authorization_uri=\"{}/{tenant}\", error=\"invalid_token\", error_description=\"{description}\"",
        shared.base_url
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

fn unauthorized(
    shared: &Shared,
    tenant: &str,
    code: &str,
    message: &str,
    description: &str,
) -> Response<Body> {
    let mut r = arm_error(StatusCode::UNAUTHORIZED, code, message);
    r.headers_mut().insert(
        "www-authenticate",
        www_authenticate(shared, tenant, description),
    );
    r
}

fn unix_to_utc(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.format("%m/%d/%Y %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn authenticate(
    shared: &Shared,
    world: &World,
    headers: &HeaderMap,
    tenant: &str,
) -> Result<Claims, Response<Body>> {
    let Some(value) = headers.get("authorization") else {
        return Err(unauthorized(
            shared,
            tenant,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
            "The authentication failed because of missing 'Authorization' header.",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            eq(scheme, "Bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(unauthorized(
            shared,
            tenant,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
            "The authentication failed because of an invalid 'Authorization' header.",
        ));
    };
    let now = now_unix();
    let claims = match jwt::verify(token, &world.signing_key, now) {
        Ok(c) => c,
        Err(TokenError::Expired { exp }) => {
            return Err(unauthorized(
                shared,
                tenant,
                "ExpiredAuthenticationToken",
                &format!(
                    "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                    unix_to_utc(exp),
                    unix_to_utc(now)
                ),
                "The access token has expired.",
            ))
        }
        Err(TokenError::Invalid) => {
            return Err(unauthorized(
                shared,
                tenant,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
                "The access token is invalid.",
            ))
        }
    };
    if !ARM_AUDIENCES.contains(&claims.aud.as_str()) {
        return Err(unauthorized(
            shared,
            tenant,
            "InvalidAuthenticationTokenAudience",
            &format!(
                "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences '{}'.",
                claims.aud,
                ARM_AUDIENCES.join("','")
            ),
            "The access token audience is invalid.",
        ));
    }
    Ok(claims)
}

fn authorization_failed(claims: &Claims, action: &str, scope: &str) -> Response<Body> {
    let client = claims.upn.as_deref().unwrap_or(&claims.oid);
    arm_error(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        &format!(
            "The client '{client}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            claims.oid
        ),
    )
}

fn check(world: &World, claims: &Claims, action: &str, scope: &str) -> Result<(), Response<Body>> {
    if world.is_authorized(&claims.oid, action, scope) {
        Ok(())
    } else {
        Err(authorization_failed(claims, action, scope))
    }
}

fn check_rg(world: &World, sub: &str, rg: &str) -> Result<(), Response<Body>> {
    if world.scenario.resource_group(sub, rg).is_some() {
        Ok(())
    } else {
        Err(arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            &format!("Resource group '{rg}' could not be found."),
        ))
    }
}

fn resource_not_found(kind: &str, name: &str, rg: &str) -> Response<Body> {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!(
            "The Resource '{kind}/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

fn bad_request(code: &str, message: &str) -> Response<Body> {
    arm_error(StatusCode::BAD_REQUEST, code, message)
}

fn parse_json_body(bytes: &[u8]) -> Result<Value, Response<Body>> {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            bad_request(
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized: expected a JSON object.",
            )
        })
}

/// Fallback handler: every path not claimed by another module is treated as ARM.
pub(crate) async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Some(route) = parse_route(parts.uri.path()) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            &format!(
                "The resource type for path '{}' is not served by the emulator.",
                parts.uri.path()
            ),
        );
    };
    let inject_pnf = parts.extensions.get::<InjectPrincipalNotFound>().is_some();
    let bytes = match axum::body::to_bytes(body, 4 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return arm_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "The request body is too large.",
            )
        }
    };
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(parts.uri.query().unwrap_or("")).unwrap_or_default();
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };

    let mut world = shared.world();
    let sub = route.subscription();
    let sub_tenant = sub.as_deref().and_then(|s| world.subscription_tenant(s));
    let tenant_for_challenge = sub_tenant
        .clone()
        .or_else(|| world.scenario.tenants.first().map(|t| t.id.clone()))
        .unwrap_or_default();
    let claims = match authenticate(&shared, &world, &parts.headers, &tenant_for_challenge) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let caller = CallerOid(claims.oid.clone());
    let mut resp = (|| {
        if let (Some(s), Some(t)) = (&sub, &sub_tenant) {
            if !eq(t, &claims.tid) {
                return unauthorized(
                    &shared,
                    t,
                    "InvalidAuthenticationTokenTenant",
                    &format!(
                        "The access token is from the wrong issuer 'https://sts.windows.net/{}/'. It must match the tenant 'https://sts.windows.net/{t}/' associated with this subscription '{s}'.",
                        claims.tid
                    ),
                    "The access token is from the wrong issuer.",
                );
            }
        }
        let (type_name, versions) = route.versions();
        match q("api-version") {
            None => {
                return bad_request(
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                )
            }
            Some(v) if !versions.contains(&v.as_str()) => {
                return bad_request(
                    "InvalidApiVersionParameter",
                    &format!(
                        "The api-version '{v}' is invalid for resource type '{type_name}'. The supported versions are '{}'.",
                        versions.join(",")
                    ),
                )
            }
            Some(_) => {}
        }
        if let Some(s) = &sub {
            if sub_tenant.is_none() {
                return arm_error(
                    StatusCode::NOT_FOUND,
                    "SubscriptionNotFound",
                    &format!("The subscription '{s}' could not be found."),
                );
            }
            if parts.method != Method::GET {
                if let Some(retry) = world.throttle_write(s) {
                    let mut r = arm_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "SubscriptionRequestsThrottled",
                        &format!(
                            "Number of write requests for subscription '{s}' exceeded the limit for this time interval. Please try again after '{retry}' seconds."
                        ),
                    );
                    r.headers_mut()
                        .insert("retry-after", HeaderValue::from(retry));
                    return r;
                }
            }
        }
        let ctx = Ctx {
            shared: &shared,
            claims: &claims,
            method: &parts.method,
            body: &bytes,
            inject_pnf,
            query: &query,
        };
        let result = match &route {
            Route::Machine { sub, rg, name } => machine(&mut world, &ctx, sub, rg, name),
            Route::Cluster { sub, rg, name } => cluster(&world, &ctx, sub, rg, name),
            Route::ClusterAction {
                sub,
                rg,
                name,
                action,
            } => cluster_action(&world, &ctx, sub, rg, name, action),
            Route::RoleAssignment { scope, name } => role_assignment(&mut world, &ctx, scope, name),
            Route::RoleAssignments { scope } => list_role_assignments(&world, &ctx, scope),
            Route::RoleDefinition { scope, guid } => role_definition(&world, &ctx, scope, guid),
            Route::Permissions { scope } => permissions(&world, &ctx, scope),
        };
        result.unwrap_or_else(|r| r)
    })();
    resp.extensions_mut().insert(caller);
    resp
}

struct Ctx<'a> {
    shared: &'a Shared,
    claims: &'a Claims,
    method: &'a Method,
    body: &'a [u8],
    inject_pnf: bool,
    query: &'a [(String, String)],
}

impl Ctx<'_> {
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Handled = Result<Response<Body>, Response<Body>>;

fn method_not_allowed(method: &Method) -> Response<Body> {
    arm_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!("The HTTP method '{method}' is not supported for this resource."),
    )
}

// ---------------------------------------------------------------------------------------------
// Microsoft.HybridCompute/machines

fn machine_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{name}")
}

/// The JSON representation of a machine (shape of the public Machines_Get example).
pub(crate) fn machine_json(world: &World, m: &Machine) -> Value {
    let connected = world
        .hosts
        .values()
        .any(|h| h.connected && same_scope(&h.resource_id, &m.id));
    let mut props = Map::new();
    for (k, v) in [
        ("provisioningState", json!("Succeeded")),
        ("agentVersion", json!(crate::azcmagent::AGENT_VERSION)),
        (
            "status",
            json!(if connected {
                "Connected"
            } else {
                "Disconnected"
            }),
        ),
        ("lastStatusChange", json!(m.updated_at)),
        ("errorDetails", json!([])),
        ("displayName", json!(m.name)),
        ("machineFqdn", json!(m.name)),
        ("vmUuid", json!(m.vm_id)),
        ("osSku", Value::Null),
        ("domainName", Value::Null),
        ("adFqdn", Value::Null),
        ("dnsFqdn", json!(m.name)),
        ("osName", json!("linux")),
        ("osVersion", Value::Null),
        ("osType", json!("linux")),
        ("vmId", json!(m.vm_id)),
        (
            "clientPublicKey",
            json!(base64::engine::general_purpose::STANDARD
                .encode(format!("emulated-key-{}", m.vm_id))),
        ),
        ("mssqlDiscovered", json!("false")),
        (
            "detectedProperties",
            json!({"cloudprovider": "N/A", "manufacturer": "flexnode-emulator", "model": "emulated"}),
        ),
        (
            "agentConfiguration",
            json!({
                "proxyUrl": "", "incomingConnectionsPorts": [], "extensionsAllowList": [],
                "extensionsBlockList": [], "proxyBypass": [], "extensionsEnabled": "true",
                "guestConfigurationEnabled": "true"
            }),
        ),
        (
            "serviceStatuses",
            json!({
                "extensionService": {"state": "Running", "startupType": "Automatic"},
                "guestConfigurationService": {"state": "Running", "startupType": "Automatic"}
            }),
        ),
    ] {
        props.insert(k.to_string(), v);
    }
    // Client-supplied properties fill gaps; server-owned ones above win.
    for (k, v) in &m.properties {
        props.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let mut out = json!({
        "id": m.id,
        "name": m.name,
        "location": m.location,
        "tags": if m.tags.is_empty() { Value::Null } else { Value::Object(m.tags.clone()) },
        "type": "Microsoft.HybridCompute/machines",
        "properties": props,
    });
    if let Some(p) = &m.principal_id {
        out["identity"] =
            json!({"type": "SystemAssigned", "principalId": p, "tenantId": m.tenant_id});
    }
    out
}

fn machine(world: &mut World, ctx: &Ctx, sub: &str, rg: &str, name: &str) -> Handled {
    let id = machine_id(sub, rg, name);
    match *ctx.method {
        Method::GET => {
            check(
                world,
                ctx.claims,
                "Microsoft.HybridCompute/machines/read",
                &id,
            )?;
            check_rg(world, sub, rg)?;
            let idx = world
                .machine_index(sub, rg, name)
                .ok_or_else(|| resource_not_found("Microsoft.HybridCompute/machines", name, rg))?;
            Ok(json_response(
                StatusCode::OK,
                machine_json(world, &world.machines[idx]),
            ))
        }
        Method::PUT => {
            check(
                world,
                ctx.claims,
                "Microsoft.HybridCompute/machines/write",
                &id,
            )?;
            check_rg(world, sub, rg)?;
            let body = parse_json_body(ctx.body)?;
            let Some(location) = body
                .get("location")
                .and_then(Value::as_str)
                .filter(|l| !l.is_empty())
            else {
                return Err(bad_request(
                    "LocationRequired",
                    "The location property is required for this definition.",
                ));
            };
            let wants_identity = body
                .pointer("/identity/type")
                .and_then(Value::as_str)
                .is_some_and(|t| eq(t, "SystemAssigned"));
            let tags = body
                .get("tags")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let properties = body
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let now = now_rfc3339();
            let tenant = world.subscription_tenant(sub).unwrap_or_default();
            let idx = match world.machine_index(sub, rg, name) {
                Some(i) => {
                    let m = &mut world.machines[i];
                    m.location = location.to_string();
                    m.tags = tags;
                    m.properties = properties;
                    m.updated_at = now;
                    i
                }
                None => {
                    world.machines.push(Machine {
                        id: id.clone(),
                        subscription_id: sub.to_string(),
                        resource_group: rg.to_string(),
                        name: name.to_string(),
                        location: location.to_string(),
                        tags,
                        principal_id: None,
                        tenant_id: tenant,
                        vm_id: uuid::Uuid::new_v4().to_string(),
                        properties,
                        created_at: now.clone(),
                        updated_at: now,
                    });
                    world.machines.len() - 1
                }
            };
            if wants_identity && world.machines[idx].principal_id.is_none() {
                let principal = uuid::Uuid::new_v4().to_string();
                let attempts = world.settings.principal_replication_attempts;
                if attempts > 0 {
                    world.replication.insert(principal.clone(), attempts);
                }
                world.machines[idx].principal_id = Some(principal);
            }
            ctx.shared.persist(world);
            Ok(json_response(
                StatusCode::OK,
                machine_json(world, &world.machines[idx]),
            ))
        }
        Method::DELETE => {
            check(
                world,
                ctx.claims,
                "Microsoft.HybridCompute/machines/delete",
                &id,
            )?;
            check_rg(world, sub, rg)?;
            match world.machine_index(sub, rg, name) {
                Some(i) => {
                    world.machines.remove(i);
                    ctx.shared.persist(world);
                    Ok(empty_response(StatusCode::OK))
                }
                None => Ok(empty_response(StatusCode::NO_CONTENT)),
            }
        }
        ref m => Err(method_not_allowed(m)),
    }
}

// ---------------------------------------------------------------------------------------------
// Microsoft.ContainerService/managedClusters

fn cluster_json(world: &World, c: &Cluster) -> Value {
    let s = &world.scenario;
    let location = c.location_in(s);
    let fqdn = c.fqdn_in(s);
    let dns_prefix = fqdn.split('.').next().unwrap_or(&c.name).to_string();
    json!({
        // ARM returns the resource group segment in lower case for this type.
        "id": format!(
            "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.ContainerService/managedClusters/{}",
            c.subscription_id, c.resource_group, c.name
        ),
        "location": location,
        "name": c.name,
        "tags": {},
        "type": "Microsoft.ContainerService/ManagedClusters",
        "sku": {"name": "Base", "tier": "Free"},
        "properties": {
            "provisioningState": "Succeeded",
            "powerState": {"code": "Running"},
            "maxAgentPools": 100,
            "kubernetesVersion": c.kubernetes_version,
            "currentKubernetesVersion": c.kubernetes_version,
            "dnsPrefix": dns_prefix,
            "fqdn": fqdn,
            "azurePortalFQDN": fqdn.replacen(".hcp.", ".portal.hcp.", 1),
            "agentPoolProfiles": [{
                "name": "nodepool1",
                "count": 1,
                "vmSize": "Standard_DS2_v2",
                "maxPods": 110,
                "osType": "Linux",
                "provisioningState": "Succeeded",
                "orchestratorVersion": c.kubernetes_version,
                "currentOrchestratorVersion": c.kubernetes_version,
                "availabilityZones": [],
                "nodeImageVersion": "AKSUbuntu-2204gen2containerd-202501.01.0",
                "upgradeSettings": {"maxSurge": "10%"},
                "mode": "System"
            }],
            "linuxProfile": {"adminUsername": "azureuser", "ssh": {"publicKeys": [{"keyData": "ssh-rsa AAAA-emulator"}]}},
            "servicePrincipalProfile": {"clientId": "msi"},
            "nodeResourceGroup": format!("MC_{}_{}_{}", c.resource_group, c.name, location),
            "enableRBAC": true,
            "aadProfile": {
                "managed": true,
                "enableAzureRBAC": c.azure_rbac,
                "tenantID": world.subscription_tenant(&c.subscription_id),
                "adminGroupObjectIDs": []
            },
            "disableLocalAccounts": c.disable_local_accounts,
            "diskEncryptionSetID": Value::Null,
            "networkProfile": {
                "networkPlugin": "kubenet",
                "podCidr": "10.244.0.0/16",
                "serviceCidr": c.service_cidr,
                "dnsServiceIP": c.dns_service_ip,
                "loadBalancerSku": "standard",
                "outboundType": "loadBalancer",
                "podCidrs": ["10.244.0.0/16"],
                "serviceCidrs": [c.service_cidr],
                "ipFamilies": ["IPv4"],
                "loadBalancerProfile": {"allocatedOutboundPorts": 0, "idleTimeoutInMinutes": 30, "outboundIPs": {"publicIPs": []}, "effectiveOutboundIPs": []}
            },
            "upgradeSettings": {"overrideSettings": {"forceUpgrade": false, "until": Value::Null}}
        }
    })
}

fn find_cluster<'w>(
    world: &'w World,
    sub: &str,
    rg: &str,
    name: &str,
) -> Result<&'w Cluster, Response<Body>> {
    check_rg(world, sub, rg)?;
    world
        .scenario
        .cluster(sub, rg, name)
        .ok_or_else(|| resource_not_found("Microsoft.ContainerService/managedClusters", name, rg))
}

fn cluster(world: &World, ctx: &Ctx, sub: &str, rg: &str, name: &str) -> Handled {
    if *ctx.method != Method::GET {
        return Err(method_not_allowed(ctx.method));
    }
    let id = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{name}");
    check(
        world,
        ctx.claims,
        "Microsoft.ContainerService/managedClusters/read",
        &id,
    )?;
    let c = find_cluster(world, sub, rg, name)?;
    Ok(json_response(StatusCode::OK, cluster_json(world, c)))
}

/// A kubeconfig YAML for `cluster`, with a dummy bearer token for `user`.
fn kubeconfig(world: &World, c: &Cluster, user: &str) -> String {
    use sha2::Digest;
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default(); // JSON strings are valid YAML
    let ca = base64::engine::general_purpose::STANDARD.encode(c.ca_pem());
    let token: String = sha2::Sha256::digest(format!("{}|{user}", c.resource_id()).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let server = c.server_url_in(&world.scenario);
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: {name}\ncontexts:\n- context:\n    cluster: {name}\n    user: {user}\n  name: {name}\ncurrent-context: {name}\nkind: Config\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    token: {token}\n",
        server = q(&server),
        name = q(&c.name),
        user = q(user),
    )
}

fn cluster_action(
    world: &World,
    ctx: &Ctx,
    sub: &str,
    rg: &str,
    name: &str,
    action: &str,
) -> Handled {
    let admin = if eq(action, "listClusterAdminCredential") {
        true
    } else if eq(action, "listClusterUserCredential") {
        false
    } else {
        return Err(arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            &format!("The action '{action}' is not served by the emulator."),
        ));
    };
    if *ctx.method != Method::POST {
        return Err(method_not_allowed(ctx.method));
    }
    let canonical = if admin {
        "listClusterAdminCredential"
    } else {
        "listClusterUserCredential"
    };
    let id = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{name}");
    check(
        world,
        ctx.claims,
        &format!("Microsoft.ContainerService/managedClusters/{canonical}/action"),
        &id,
    )?;
    let c = find_cluster(world, sub, rg, name)?;
    if admin && c.disable_local_accounts {
        return Err(bad_request(
            "BadRequest",
            "Getting static credential is not allowed because this cluster is set to disable local accounts.",
        ));
    }
    let (cred_name, user) = if admin {
        (
            "clusterAdmin",
            format!("clusterAdmin_{}_{}", c.resource_group, c.name),
        )
    } else {
        (
            "clusterUser",
            format!("clusterUser_{}_{}", c.resource_group, c.name),
        )
    };
    let yaml = kubeconfig(world, c, &user);
    Ok(json_response(
        StatusCode::OK,
        json!({"kubeconfigs": [{
            "name": cred_name,
            "value": base64::engine::general_purpose::STANDARD.encode(yaml),
        }]}),
    ))
}

// ---------------------------------------------------------------------------------------------
// Microsoft.Authorization

fn assignment_json(ra: &RoleAssignment) -> Value {
    let scope = if ra.scope.is_empty() { "/" } else { &ra.scope };
    let id_prefix = if scope == "/" { "" } else { scope };
    json!({
        "properties": {
            // As in the public examples, the role definition id comes back without the
            // subscription prefix the request used: clients must compare by GUID.
            "roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{}", ra.role_guid),
            "principalId": ra.principal_id,
            "principalType": ra.principal_type,
            "scope": scope,
            "condition": Value::Null,
            "conditionVersion": Value::Null,
            "createdOn": ra.created_on,
            "updatedOn": ra.created_on,
            "createdBy": if ra.created_by.is_empty() { Value::Null } else { json!(ra.created_by) },
            "updatedBy": if ra.created_by.is_empty() { Value::Null } else { json!(ra.created_by) },
            "delegatedManagedIdentityResourceId": Value::Null,
            "description": Value::Null,
        },
        "id": format!("{id_prefix}/providers/Microsoft.Authorization/roleAssignments/{}", ra.name),
        "type": "Microsoft.Authorization/roleAssignments",
        "name": ra.name,
    })
}

fn check_scope_exists(world: &World, scope: &str) -> Result<(), Response<Body>> {
    let (sub, rg) = scope_parts(scope);
    if let (Some(s), Some(r)) = (sub, rg) {
        check_rg(world, &s, &r)?;
    }
    Ok(())
}

fn role_assignment(world: &mut World, ctx: &Ctx, scope: &str, name: &str) -> Handled {
    match *ctx.method {
        Method::GET => {
            check(
                world,
                ctx.claims,
                "Microsoft.Authorization/roleAssignments/read",
                scope,
            )?;
            let ra = world
                .role_assignments
                .iter()
                .find(|r| eq(&r.name, name) && same_scope(&r.scope, scope))
                .ok_or_else(|| {
                    arm_error(
                        StatusCode::NOT_FOUND,
                        "RoleAssignmentNotFound",
                        &format!("The role assignment '{name}' is not found."),
                    )
                })?;
            Ok(json_response(StatusCode::OK, assignment_json(ra)))
        }
        Method::DELETE => {
            check(
                world,
                ctx.claims,
                "Microsoft.Authorization/roleAssignments/delete",
                scope,
            )?;
            match world
                .role_assignments
                .iter()
                .position(|r| eq(&r.name, name) && same_scope(&r.scope, scope))
            {
                Some(i) => {
                    let ra = world.role_assignments.remove(i);
                    ctx.shared.persist(world);
                    Ok(json_response(StatusCode::OK, assignment_json(&ra)))
                }
                None => Ok(empty_response(StatusCode::NO_CONTENT)),
            }
        }
        Method::PUT => create_role_assignment(world, ctx, scope, name),
        ref m => Err(method_not_allowed(m)),
    }
}

fn create_role_assignment(world: &mut World, ctx: &Ctx, scope: &str, name: &str) -> Handled {
    check(
        world,
        ctx.claims,
        "Microsoft.Authorization/roleAssignments/write",
        scope,
    )?;
    check_scope_exists(world, scope)?;
    if !is_guid(name) {
        return Err(bad_request(
            "InvalidRoleAssignmentId",
            &format!("The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."),
        ));
    }
    let body = parse_json_body(ctx.body)?;
    let props = body.get("properties").cloned().unwrap_or(Value::Null);
    let Some(role_def) = props.get("roleDefinitionId").and_then(Value::as_str) else {
        return Err(bad_request(
            "InvalidRequestContent",
            "The request content was invalid: properties.roleDefinitionId is required.",
        ));
    };
    let Some(principal) = props.get("principalId").and_then(Value::as_str) else {
        return Err(bad_request(
            "InvalidRequestContent",
            "The request content was invalid: properties.principalId is required.",
        ));
    };
    let guid = guid_of(role_def);
    let Some(role) = roles::by_guid(guid) else {
        return Err(bad_request(
            "RoleDefinitionDoesNotExist",
            &format!("The specified role definition with ID '{guid}' does not exist."),
        ));
    };
    let tenant = ctx.claims.tid.clone();
    let pnf = || {
        bad_request(
            "PrincipalNotFound",
            &format!(
                "Principal {} does not exist in the directory {tenant}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype",
                principal.replace('-', "")
            ),
        )
    };
    if ctx.inject_pnf || !world.principal_exists(principal) {
        return Err(pnf());
    }
    let key = principal.to_ascii_lowercase();
    if let Some(left) = world.replication.get_mut(&key) {
        if *left > 0 {
            *left -= 1;
            if *left == 0 {
                world.replication.remove(&key);
            }
            return Err(pnf());
        }
    }
    let principal_type = props
        .get("principalType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            if world
                .scenario
                .users
                .iter()
                .any(|u| eq(&u.object_id, principal))
            {
                "User".into()
            } else {
                "ServicePrincipal".into()
            }
        });
    if let Some(existing) = world.role_assignments.iter().find(|r| eq(&r.name, name)) {
        let same = same_scope(&existing.scope, scope)
            && eq(&existing.role_guid, role.guid)
            && eq(&existing.principal_id, principal);
        return if same {
            Ok(json_response(
                StatusCode::CREATED,
                assignment_json(existing),
            ))
        } else {
            Err(bad_request(
                "RoleAssignmentUpdateNotPermitted",
                "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
            ))
        };
    }
    if world.role_assignments.iter().any(|r| {
        same_scope(&r.scope, scope) && eq(&r.role_guid, role.guid) && eq(&r.principal_id, principal)
    }) {
        return Err(arm_error(
            StatusCode::CONFLICT,
            "RoleAssignmentExists",
            "The role assignment already exists.",
        ));
    }
    let ra = RoleAssignment {
        name: name.to_ascii_lowercase(),
        scope: scope.to_string(),
        role_guid: role.guid.to_string(),
        principal_id: principal.to_string(),
        principal_type,
        created_by: ctx.claims.oid.clone(),
        created_on: now_rfc3339(),
    };
    let body = assignment_json(&ra);
    world.role_assignments.push(ra);
    ctx.shared.persist(world);
    Ok(json_response(StatusCode::CREATED, body))
}

#[derive(Debug, Default, PartialEq)]
struct Filter {
    at_scope: bool,
    principal: Option<String>,
}

fn parse_filter(f: &str) -> Result<Filter, String> {
    let mut out = Filter::default();
    let re_principal =
        regex::Regex::new(r"(?i)^principalId\s+eq\s+'([^']+)'$").map_err(|e| e.to_string())?;
    let re_assigned =
        regex::Regex::new(r"(?i)^assignedTo\('([^']+)'\)$").map_err(|e| e.to_string())?;
    let splitter = regex::Regex::new(r"(?i)\s+and\s+").map_err(|e| e.to_string())?;
    for term in splitter.split(f.trim()) {
        let term = term.trim();
        if term.eq_ignore_ascii_case("atScope()") {
            out.at_scope = true;
        } else if let Some(c) = re_principal
            .captures(term)
            .or_else(|| re_assigned.captures(term))
        {
            out.principal = Some(c[1].to_string());
        } else {
            return Err(format!("The filter '{f}' is not supported. Supported filters are: atScope(), principalId eq '{{id}}', assignedTo('{{id}}'), combined with 'and'."));
        }
    }
    Ok(out)
}

fn list_role_assignments(world: &World, ctx: &Ctx, scope: &str) -> Handled {
    if *ctx.method != Method::GET {
        return Err(method_not_allowed(ctx.method));
    }
    check(
        world,
        ctx.claims,
        "Microsoft.Authorization/roleAssignments/read",
        scope,
    )?;
    check_scope_exists(world, scope)?;
    let filter = match ctx.query("$filter") {
        Some(f) => parse_filter(f).map_err(|m| bad_request("UnsupportedQuery", &m))?,
        None => Filter::default(),
    };
    let matching: Vec<&RoleAssignment> = world
        .role_assignments
        .iter()
        .filter(|r| {
            let above = scope_covers(&r.scope, scope);
            let below = scope_covers(scope, &r.scope);
            (above || (!filter.at_scope && below))
                && filter
                    .principal
                    .as_deref()
                    .is_none_or(|p| eq(p, &r.principal_id))
        })
        .collect();
    let skip: usize = ctx
        .query("$skiptoken")
        .map(|t| {
            t.parse()
                .map_err(|_| bad_request("InvalidSkipToken", "The $skiptoken is not valid."))
        })
        .transpose()?
        .unwrap_or(0);
    let page = world.settings.list_page_size.max(1);
    let value: Vec<Value> = matching
        .iter()
        .skip(skip)
        .take(page)
        .map(|r| assignment_json(r))
        .collect();
    let mut body = json!({"value": value});
    if skip + page < matching.len() {
        let mut params: Vec<(&str, String)> = vec![(
            "api-version",
            ctx.query("api-version").unwrap_or_default().to_string(),
        )];
        if let Some(f) = ctx.query("$filter") {
            params.push(("$filter", f.to_string()));
        }
        params.push(("$skiptoken", (skip + page).to_string()));
        let qs = serde_urlencoded::to_string(&params).unwrap_or_default();
        let prefix = if scope == "/" { "" } else { scope };
        body["nextLink"] = json!(format!(
            "{}{prefix}/providers/Microsoft.Authorization/roleAssignments?{qs}",
            ctx.shared.base_url
        ));
    }
    Ok(json_response(StatusCode::OK, body))
}

/// The caller's permissions at `scope`: one entry per role assignment of the caller that covers it
/// (as ARM does; `notActions` apply only within their own entry). Anyone may read their own.
fn permissions(world: &World, ctx: &Ctx, scope: &str) -> Handled {
    if *ctx.method != Method::GET {
        return Err(method_not_allowed(ctx.method));
    }
    check_scope_exists(world, scope)?;
    let value: Vec<Value> = world
        .role_assignments
        .iter()
        .filter(|r| eq(&r.principal_id, &ctx.claims.oid) && scope_covers(&r.scope, scope))
        .filter_map(|r| roles::by_guid(&r.role_guid))
        .map(|role| {
            json!({
                "actions": role.actions,
                "notActions": role.not_actions,
                "dataActions": role.data_actions,
                "notDataActions": role.not_data_actions
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, json!({"value": value})))
}

fn role_definition(world: &World, ctx: &Ctx, scope: &str, guid: &str) -> Handled {
    if *ctx.method != Method::GET {
        return Err(method_not_allowed(ctx.method));
    }
    check(
        world,
        ctx.claims,
        "Microsoft.Authorization/roleDefinitions/read",
        scope,
    )?;
    let Some(role) = roles::by_guid(guid) else {
        return Err(arm_error(
            StatusCode::NOT_FOUND,
            "RoleDefinitionDoesNotExist",
            &format!("The specified role definition with ID '{guid}' does not exist."),
        ));
    };
    let prefix = if scope == "/" { "" } else { scope };
    Ok(json_response(
        StatusCode::OK,
        json!({
            "id": format!("{prefix}/providers/Microsoft.Authorization/roleDefinitions/{}", role.guid),
            "name": role.guid,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": role.name,
                "type": "BuiltInRole",
                "description": "",
                "assignableScopes": ["/"],
                "permissions": [{
                    "actions": role.actions,
                    "notActions": role.not_actions,
                    "dataActions": role.data_actions,
                    "notDataActions": role.not_data_actions
                }]
            }
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_case_insensitively() {
        assert_eq!(
            parse_route(
                "/subscriptions/s/resourcegroups/rg/providers/microsoft.hybridcompute/MACHINES/m"
            ),
            Some(Route::Machine {
                sub: "s".into(),
                rg: "rg".into(),
                name: "m".into()
            })
        );
        assert_eq!(
            parse_route("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c/providers/Microsoft.Authorization/roleAssignments/x"),
            Some(Route::RoleAssignment {
                scope: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c".into(),
                name: "x".into()
            })
        );
        assert_eq!(
            parse_route("/providers/Microsoft.Authorization/roleAssignments"),
            Some(Route::RoleAssignments { scope: "/".into() })
        );
        assert_eq!(parse_route("/nope"), None);
        assert_eq!(
            parse_route(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v"
            ),
            None
        );
    }

    #[test]
    fn filters_parse() {
        assert_eq!(
            parse_filter("atScope()").unwrap(),
            Filter {
                at_scope: true,
                principal: None
            }
        );
        assert_eq!(
            parse_filter("atScope() and assignedTo('abc')").unwrap(),
            Filter {
                at_scope: true,
                principal: Some("abc".into())
            }
        );
        assert_eq!(
            parse_filter("principalId eq 'p1'").unwrap(),
            Filter {
                at_scope: false,
                principal: Some("p1".into())
            }
        );
        assert!(parse_filter("roleDefinitionId eq 'x'").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        // An escape at the very end, and invalid UTF-8 made lossy rather than dropped.
        assert_eq!(percent_decode("rg%2Fx%2F"), "rg/x/");
        assert_eq!(percent_decode("a%FFb"), "a\u{FFFD}b");
    }
}
