//! One small typed ARM client: bearer tokens from a [`CachedCredential`], retries on 429/5xx/connection
//! errors honouring `Retry-After` with capped exponential backoff and jitter, long-running operations
//! (`Azure-AsyncOperation` / `Location`), `nextLink` paging, and ARM error bodies turned into actionable
//! messages. API versions are pinned per resource type in [`api`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::azure::credential::{CachedCredential, TokenCredential};
use crate::azure::{http, AzureError, Result};
use crate::net::{retry_after, retryable};

/// Pinned api-versions (reference: original-behaviour.md §4).
pub mod api {
    pub const MANAGED_CLUSTERS: &str = "2024-02-01";
    pub const ROLE_ASSIGNMENTS: &str = "2022-04-01";
    pub const HYBRID_COMPUTE: &str = "2022-03-10";
    /// `Microsoft.Authorization/permissions` (the caller's effective actions at a scope).
    pub const PERMISSIONS: &str = "2022-04-01";
}

/// An ARM error response (`{"error":{"code","message"}}`), with the request it answered.
#[derive(Debug, Clone)]
pub struct ArmError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub method: String,
    pub path: String,
}

impl std::error::Error for ArmError {}

impl std::fmt::Display for ArmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} failed: HTTP {} {}: {}",
            self.method, self.path, self.status, self.code, self.message
        )?;
        if let Some(h) = self.hint() {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Pull `'...'` following `marker` out of an ARM message.
fn quoted_after(msg: &str, marker: &str) -> Option<String> {
    let rest = &msg[msg.find(marker)? + marker.len()..];
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('\'')?;
    Some(rest[..rest.find('\'')?].to_string())
}

/// The ARM error code to use when a response has none.
fn default_code(status: u16) -> &'static str {
    match status {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        429 => "TooManyRequests",
        _ => "Error",
    }
}

/// Byte offsets just after each occurrence of `marker` that starts a word (not preceded by a letter or
/// digit).
fn after_marker<'a>(text: &'a str, marker: &'a str) -> impl Iterator<Item = usize> + 'a {
    text.match_indices(marker)
        .filter(move |(i, _)| {
            !text[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric())
        })
        .map(move |(i, _)| i + marker.len())
}

/// A three-digit HTTP status at the start of `rest`, not followed by another digit.
fn status_at(rest: &str) -> Option<u16> {
    let b = rest.as_bytes();
    if b.len() >= 3
        && b[..3].iter().all(u8::is_ascii_digit)
        && !b.get(3).is_some_and(u8::is_ascii_digit)
    {
        rest[..3].parse().ok().filter(|s| (100..600).contains(s))
    } else {
        None
    }
}

/// An ARM error code (`TooManyRequests`, `Microsoft.Foo/Bar`) at the start of `rest`, optionally quoted.
fn code_at(rest: &str) -> Option<String> {
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/')))
        .unwrap_or(rest.len());
    let code = &rest[..end];
    code.starts_with(|c: char| c.is_ascii_alphabetic())
        .then(|| code.to_string())
}

impl ArmError {
    /// Throttling (429), a request timeout (408) or a transient server error (5xx but 501): the same
    /// request may succeed later. Decided by the HTTP status, never by words in the message.
    pub fn is_transient(&self) -> bool {
        StatusCode::from_u16(self.status).is_ok_and(retryable)
    }

    /// ARM rejected the bearer token as expired: the same request with a fresh token may succeed.
    pub fn is_expired_token(&self) -> bool {
        self.code == "ExpiredAuthenticationToken"
    }

    /// The ARM error that a program calling ARM itself (`azcmagent`) reports in its output, when the output
    /// carries one in a form ARM clients print it:
    ///
    /// - `HTTP 429 TooManyRequests: message` (this client's own errors, the emulator's azcmagent);
    /// - `StatusCode=429 ... Code="TooManyRequests" Message="..."` (Go autorest);
    /// - `RESPONSE 429: 429 Too Many Requests` / `ERROR CODE: TooManyRequests` (Go azcore).
    ///
    /// Only the status found at one of those markers counts: a "429" elsewhere in a message is just text.
    /// `program` becomes the error's `method` (what failed), `path` stays empty.
    pub fn reported_by(program: &str, output: &str) -> Option<ArmError> {
        let message_after = |i: usize| {
            let line = output[i..].lines().next().unwrap_or("");
            line.split_once(": ")
                .map(|(_, m)| m.trim().to_string())
                .unwrap_or_default()
        };
        let mut found: Option<(u16, Option<String>, String)> = None;
        // This client / the emulator's azcmagent: "HTTP <status> <Code>: <message>".
        for i in after_marker(output, "HTTP ") {
            if let Some(status) = status_at(&output[i..]) {
                let rest = output[i + 3..].strip_prefix(' ').unwrap_or("");
                found = Some((status, code_at(rest), message_after(i)));
                break;
            }
        }
        // Go autorest: "StatusCode=403 -- Original Error: ... Status=403 Code=\"X\" Message=\"...\"".
        if found.is_none() {
            let status = after_marker(output, "StatusCode=")
                .chain(after_marker(output, "Status="))
                .find_map(|i| status_at(&output[i..]));
            if let Some(status) = status {
                let code = after_marker(output, "Code=").find_map(|i| code_at(&output[i..]));
                let message = after_marker(output, "Message=")
                    .next()
                    .map(|i| {
                        output[i..]
                            .lines()
                            .next()
                            .unwrap_or("")
                            .trim_matches('"')
                            .to_string()
                    })
                    .unwrap_or_default();
                found = Some((status, code, message));
            }
        }
        // Go azcore: "RESPONSE 429: 429 Too Many Requests" and "ERROR CODE: TooManyRequests".
        if found.is_none() {
            if let Some(status) =
                after_marker(output, "RESPONSE ").find_map(|i| status_at(&output[i..]))
            {
                let code = after_marker(output, "ERROR CODE: ").find_map(|i| code_at(&output[i..]));
                found = Some((status, code, String::new()));
            }
        }
        let (status, code, message) = found?;
        Some(ArmError {
            status,
            code: code.unwrap_or_else(|| default_code(status).to_string()),
            message,
            method: program.to_string(),
            path: String::new(),
        })
    }

    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self.code.as_str() {
            "AuthorizationFailed" => {
                let action = quoted_after(&self.message, "perform action");
                let scope = quoted_after(&self.message, "over scope");
                Some(format!(
                    "the identity the agent uses lacks permission{}{}; an Owner or User Access Administrator of that scope \
                     must grant it a role that includes the action (see the README's required roles)",
                    action.map(|a| format!(" to perform {a}")).unwrap_or_default(),
                    scope.map(|s| format!(" on {s}")).unwrap_or_default(),
                ))
            }
            "InvalidAuthenticationToken" | "ExpiredAuthenticationToken" | "AuthenticationFailed" => Some(
                "the access token was rejected: check azure.tenantId and the credential's tenant, then retry".into(),
            ),
            "ResourceNotFound" | "ResourceGroupNotFound" | "NotFound" => Some(
                "check the subscription, resource group and name in the config (azure.targetCluster.resourceId, azure.arc.*)".into(),
            ),
            "SubscriptionNotFound" => Some("check azure.subscriptionId and that the identity can see that subscription".into()),
            "InvalidApiVersionParameter" => Some("this agent version uses an api-version the endpoint does not support; is azure.resourceManagerEndpoint right?".into()),
            _ => None,
        }
    }
}

/// Retry and polling knobs (tests shorten them).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts for one request (first try included).
    pub max_attempts: u32,
    /// First backoff; doubled each time.
    pub base_delay: Duration,
    /// Cap for backoff and for honoured `Retry-After`.
    pub max_delay: Duration,
    /// Default interval between long-running-operation polls.
    pub poll_interval: Duration,
    /// Give up on a long-running operation after this long.
    pub lro_timeout: Duration,
    /// Throttling (429) is not a failure: it is retried until this much time has passed for one request,
    /// whatever `max_attempts` says.
    pub throttle_budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            poll_interval: Duration::from_secs(2),
            lro_timeout: Duration::from_secs(600),
            throttle_budget: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Fast settings for tests and the benchmark (still honours Retry-After up to `max_delay`).
    pub fn fast() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(2),
            poll_interval: Duration::from_millis(20),
            lro_timeout: Duration::from_secs(30),
            throttle_budget: Duration::from_secs(60),
        }
    }

    /// Backoff before retry `n` (1-based): the agent's one policy ([`crate::net::Backoff`]) from
    /// `base_delay` up to `max_delay`.
    pub fn backoff(&self, n: u32) -> Duration {
        crate::net::Backoff {
            base: self.base_delay,
            cap: self.max_delay,
        }
        .delay(n)
    }
}

fn is_write(method: &Method) -> bool {
    method != Method::GET && method != Method::HEAD
}

/// A response that ended the retry loop.
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    /// Status, headers and the body as JSON (a non-JSON body as a string, an empty one as null).
    async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// The ARM client.
pub struct ArmClient {
    http: reqwest::Client,
    base: String,
    resource: String,
    cred: Arc<CachedCredential>,
    pub policy: RetryPolicy,
    writes: AtomicU64,
    requests: AtomicU64,
}

impl ArmClient {
    /// `base`: ARM URL without trailing slash; `resource`: the token audience (cloud's ARM resource).
    pub fn new(
        http: reqwest::Client,
        base: impl Into<String>,
        resource: impl Into<String>,
        cred: Arc<CachedCredential>,
    ) -> Self {
        ArmClient {
            http,
            base: base.into().trim_end_matches('/').to_string(),
            resource: resource.into(),
            cred,
            policy: RetryPolicy::default(),
            writes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Write requests (PUT/POST/PATCH/DELETE) sent so far, retries included.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// All requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn credential(&self) -> &Arc<CachedCredential> {
        &self.cred
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.base, path_or_url)
        }
    }

    /// One ARM request, built without I/O: method, URL with its query, bearer token, JSON body (a write
    /// without a body says `content-length: 0`, which ARM requires).
    fn request(
        &self,
        method: &Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        token: &str,
    ) -> Result<reqwest::Request> {
        let mut req = self
            .http
            .request(method.clone(), url)
            .query(query)
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        } else if is_write(method) {
            req = req.header("content-length", "0");
        }
        req.build().map_err(|e| {
            AzureError::Config(format!("{method} {url}: cannot build the request: {e}"))
        })
    }

    /// How long to wait before retrying a request that got `status` on attempt `attempt` (`None`: do
    /// not retry). Throttling is retried past `max_attempts` while within the throttle budget; never
    /// sooner than `Retry-After` (capped), and at least the jittered backoff, which spreads many
    /// throttled clients so they do not all come back in the same second.
    fn retry_delay(
        &self,
        status: StatusCode,
        headers: &reqwest::header::HeaderMap,
        attempt: u32,
        elapsed: Duration,
    ) -> Option<Duration> {
        let throttled =
            status == StatusCode::TOO_MANY_REQUESTS && elapsed < self.policy.throttle_budget;
        if !retryable(status) || (attempt >= self.policy.max_attempts && !throttled) {
            return None;
        }
        let backoff = self.policy.backoff(attempt);
        Some(match retry_after(headers) {
            Some(ra) => ra.min(self.policy.max_delay).max(backoff),
            None => backoff,
        })
    }

    /// Send one logical request with retries (connection errors, [`retry_delay`](Self::retry_delay)) and
    /// one re-authentication on a 401. Returns the final response whatever its status.
    async fn send(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply> {
        let what = format!("{method} {}", path_of(url));
        let mut attempt = 0u32;
        let mut reauthed = false;
        let started = std::time::Instant::now();
        loop {
            attempt += 1;
            let token = self.cred.get_token(&self.resource).await?;
            let req = self.request(&method, url, query, body, token.token.expose())?;
            self.requests.fetch_add(1, Ordering::Relaxed);
            if is_write(&method) {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            let reply = match self.http.execute(req).await {
                Ok(resp) => Reply::read(resp).await,
                Err(e) if attempt >= self.policy.max_attempts => {
                    return Err(http::transport(
                        format!("{what} (after {attempt} attempts)"),
                        &e,
                    ));
                }
                Err(e) => {
                    let d = self.policy.backoff(attempt);
                    tracing::debug!(request = %what, attempt, delay_ms = d.as_millis() as u64, "connection error, retrying: {e}");
                    tokio::time::sleep(d).await;
                    continue;
                }
            };
            if reply.status == StatusCode::UNAUTHORIZED && !reauthed {
                // Expired or revoked early: drop the cached token and try once with a fresh one.
                reauthed = true;
                self.cred.invalidate(&self.resource).await;
                attempt -= 1;
                continue;
            }
            match self.retry_delay(reply.status, &reply.headers, attempt, started.elapsed()) {
                Some(d) => {
                    tracing::debug!(request = %what, status = reply.status.as_u16(), attempt, delay_ms = d.as_millis() as u64, "retrying");
                    tokio::time::sleep(d).await;
                }
                None => return Ok(reply),
            }
        }
    }

    fn error(&self, method: &Method, url: &str, r: &Reply) -> AzureError {
        let err = r.body.get("error").unwrap_or(&r.body);
        let code = err
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or(default_code(r.status.as_u16()))
            .to_string();
        let message = err
            .get("message")
            .and_then(|c| c.as_str())
            .unwrap_or("")
            .to_string();
        AzureError::Arm(ArmError {
            status: r.status.as_u16(),
            code,
            message,
            method: method.to_string(),
            path: path_of(url),
        })
    }

    /// GET a resource; `None` when it does not exist (404).
    pub async fn get(&self, path: &str, api_version: &str) -> Result<Option<Value>> {
        let url = self.url(path);
        let r = self
            .send(Method::GET, &url, &[("api-version", api_version)], None)
            .await?;
        match r.status.as_u16() {
            200..=299 => Ok(Some(r.body)),
            404 => Ok(None),
            _ => Err(self.error(&Method::GET, &url, &r)),
        }
    }

    /// PUT a resource and wait for it (long-running operations included); returns the final resource.
    pub async fn put(&self, path: &str, api_version: &str, body: &Value) -> Result<Value> {
        self.write(Method::PUT, path, api_version, Some(body)).await
    }

    /// POST an action (`listClusterUserCredential`, ...); returns the result body.
    pub async fn post(&self, path: &str, api_version: &str, body: Option<&Value>) -> Result<Value> {
        self.write(Method::POST, path, api_version, body).await
    }

    /// DELETE a resource and wait for it; `false` when it was already gone.
    pub async fn delete(&self, path: &str, api_version: &str) -> Result<bool> {
        match self.write(Method::DELETE, path, api_version, None).await {
            Ok(v) => Ok(!matches!(v, Value::Bool(false))),
            Err(e) => Err(e),
        }
    }

    async fn write(
        &self,
        method: Method,
        path: &str,
        api_version: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let url = self.url(path);
        let r = self
            .send(method.clone(), &url, &[("api-version", api_version)], body)
            .await?;
        match r.status.as_u16() {
            200..=202 => {
                let async_op = r
                    .headers
                    .get("azure-asyncoperation")
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string);
                let location = r
                    .headers
                    .get("location")
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string);
                if let Some(op) = async_op.filter(|_| r.status.as_u16() != 200) {
                    self.poll_async_operation(&op, &r).await?;
                    if method == Method::DELETE {
                        return Ok(Value::Bool(true));
                    }
                    if method == Method::PUT {
                        // The operation status carries no resource: read it back.
                        return Ok(self.get(path, api_version).await?.unwrap_or(Value::Null));
                    }
                    return Ok(r.body);
                }
                if r.status.as_u16() == 202 {
                    if let Some(loc) = location {
                        return self.poll_location(&loc, &r).await;
                    }
                }
                Ok(if method == Method::DELETE {
                    Value::Bool(true)
                } else {
                    r.body
                })
            }
            204 if method == Method::DELETE => Ok(Value::Bool(false)),
            204 => Ok(Value::Null),
            404 if method == Method::DELETE => Ok(Value::Bool(false)),
            _ => Err(self.error(&method, &url, &r)),
        }
    }

    fn poll_delay(&self, headers: &reqwest::header::HeaderMap) -> Duration {
        retry_after(headers)
            .unwrap_or(self.policy.poll_interval)
            .min(self.policy.max_delay)
    }

    async fn poll_async_operation(&self, url: &str, first: &Reply) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.policy.lro_timeout;
        let mut delay = self.poll_delay(&first.headers);
        loop {
            tokio::time::sleep(delay).await;
            let r = self.send(Method::GET, url, &[], None).await?;
            if !r.status.is_success() {
                return Err(self.error(&Method::GET, url, &r));
            }
            match r.body.get("status").and_then(|s| s.as_str()).unwrap_or("") {
                s if s.eq_ignore_ascii_case("Succeeded") => return Ok(()),
                s if s.eq_ignore_ascii_case("Failed") || s.eq_ignore_ascii_case("Canceled") => {
                    let inner = Reply {
                        status: StatusCode::CONFLICT,
                        headers: r.headers,
                        body: serde_json::json!({"error": r.body.get("error").cloned().unwrap_or(Value::Null)}),
                    };
                    let mut e = self.error(&Method::GET, url, &inner);
                    if let AzureError::Arm(a) = &mut e {
                        a.message = format!("the operation ended {s}: {}", a.message);
                    }
                    return Err(e);
                }
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(AzureError::Timeout(format!(
                    "the long-running operation {} did not finish within {:?}",
                    path_of(url),
                    self.policy.lro_timeout
                )));
            }
            delay = self.poll_delay(&r.headers);
        }
    }

    async fn poll_location(&self, url: &str, first: &Reply) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + self.policy.lro_timeout;
        let mut delay = self.poll_delay(&first.headers);
        loop {
            tokio::time::sleep(delay).await;
            let r = self.send(Method::GET, url, &[], None).await?;
            match r.status.as_u16() {
                202 => {}
                200 | 201 => return Ok(r.body),
                204 => return Ok(Value::Bool(true)),
                _ => return Err(self.error(&Method::GET, url, &r)),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(AzureError::Timeout(format!(
                    "the long-running operation {} did not finish within {:?}",
                    path_of(url),
                    self.policy.lro_timeout
                )));
            }
            delay = self.poll_delay(&r.headers);
        }
    }

    /// GET a collection, following `nextLink` through every page.
    pub async fn list(
        &self,
        path: &str,
        api_version: &str,
        filter: Option<&str>,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let first = self.url(path);
        let mut query: Vec<(&str, &str)> = vec![("api-version", api_version)];
        if let Some(f) = filter {
            query.push(("$filter", f));
        }
        let mut r = self.send(Method::GET, &first, &query, None).await?;
        let mut url = first;
        for _page in 0..10_000 {
            if !r.status.is_success() {
                return Err(self.error(&Method::GET, &url, &r));
            }
            if let Some(items) = r.body.get("value").and_then(|v| v.as_array()) {
                out.extend(items.iter().cloned());
            }
            match r.body.get("nextLink").and_then(|n| n.as_str()) {
                Some(next) if !next.is_empty() => {
                    // nextLink is absolute and already carries api-version and the skip token.
                    url = next.to_string();
                    r = self.send(Method::GET, &url, &[], None).await?;
                }
                _ => return Ok(out),
            }
        }
        Err(AzureError::Other(format!(
            "listing {path} returned more than 10000 pages; giving up"
        )))
    }
}

/// The path of a URL (no host, no query): what messages show.
fn path_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.path().to_string(),
        Err(_) => url.split('?').next().unwrap_or(url).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::credential::AccessToken;
    use crate::model::Secret;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    use std::sync::atomic::AtomicU32;

    struct Fixed;
    #[async_trait::async_trait]
    impl TokenCredential for Fixed {
        async fn get_token(&self, _r: &str) -> Result<AccessToken> {
            Ok(AccessToken {
                token: Secret::new("tok"),
                expires_on: crate::azure::credential::now_unix() + 3600,
            })
        }
        fn describe(&self) -> String {
            "fixed".into()
        }
    }

    async fn serve(app: axum::Router) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn client(base: &str) -> ArmClient {
        ArmClient::new(
            reqwest::Client::new(),
            base,
            "https://management.azure.com/",
            Arc::new(CachedCredential::new(Arc::new(Fixed))),
        )
        .with_policy(RetryPolicy::fast())
    }

    #[test]
    fn requests_are_built_without_sending_them() {
        let c = client("http://127.0.0.1:9");
        let url = c.url("/subscriptions/s/resourceGroups/rg");
        let get = c
            .request(
                &Method::GET,
                &url,
                &[("api-version", "2024-01-01")],
                None,
                "tok",
            )
            .unwrap();
        assert_eq!(get.method(), Method::GET);
        assert_eq!(
            get.url().as_str(),
            "http://127.0.0.1:9/subscriptions/s/resourceGroups/rg?api-version=2024-01-01"
        );
        assert_eq!(get.headers()["authorization"], "Bearer tok");
        assert!(get.body().is_none());
        let body = serde_json::json!({"location": "westus"});
        let put = c
            .request(
                &Method::PUT,
                &url,
                &[("api-version", "2024-01-01")],
                Some(&body),
                "tok",
            )
            .unwrap();
        assert_eq!(put.headers()["content-type"], "application/json");
        let sent: Value = serde_json::from_slice(put.body().unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(sent, body);
        // A write without a body still says how long it is (ARM answers 411 otherwise).
        let post = c.request(&Method::POST, &url, &[], None, "tok").unwrap();
        assert_eq!(post.headers()["content-length"], "0");
    }

    #[test]
    fn retry_delays_follow_status_attempts_throttle_budget_and_retry_after() {
        let c = client("http://127.0.0.1:9").with_policy(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            throttle_budget: Duration::from_secs(60),
            ..RetryPolicy::default()
        });
        let none = HeaderMap::new();
        let mut ra = HeaderMap::new();
        ra.insert("retry-after", "3".parse().unwrap());
        let s = |c: u16| StatusCode::from_u16(c).unwrap();
        assert_eq!(c.retry_delay(s(404), &none, 1, Duration::ZERO), None);
        assert_eq!(c.retry_delay(s(501), &none, 1, Duration::ZERO), None);
        assert!(c.retry_delay(s(503), &none, 2, Duration::ZERO).is_some());
        assert_eq!(c.retry_delay(s(503), &none, 3, Duration::ZERO), None);
        // Never sooner than Retry-After (the backoff is the floor when it is longer); throttling goes on
        // past max_attempts within the budget, not after it.
        assert_eq!(
            c.retry_delay(s(503), &ra, 1, Duration::ZERO),
            Some(Duration::from_secs(3))
        );
        let late = c
            .retry_delay(s(429), &ra, 7, Duration::from_secs(10))
            .unwrap();
        assert!(
            late >= Duration::from_secs(3) && late <= Duration::from_secs(5),
            "{late:?}"
        );
        assert_eq!(c.retry_delay(s(429), &ra, 7, Duration::from_secs(61)), None);
    }

    #[test]
    fn an_arm_error_reported_by_a_program_is_parsed_from_its_output() {
        let parse =
            |t: &str| ArmError::reported_by("azcmagent connect", t).map(|a| (a.status, a.code));
        // The emulator's azcmagent (and this client's own wording).
        assert_eq!(
            parse("FATAL   Failed to create the machine resource in Azure: HTTP 429 TooManyRequests: slow down"),
            Some((429, "TooManyRequests".into()))
        );
        assert_eq!(
            parse("FATAL   AZCM0041: The credentials supplied are invalid: HTTP 401 ExpiredAuthenticationToken: expired"),
            Some((401, "ExpiredAuthenticationToken".into()))
        );
        // The first status at a marker counts; a later "HTTP 429" inside the message is text.
        assert_eq!(
            parse("FATAL   HTTP 400 InvalidParameter: tag 'HTTP 429 TooManyRequests' is invalid"),
            Some((400, "InvalidParameter".into()))
        );
        // Go autorest.
        assert_eq!(
            parse("hybridcompute.MachinesClient#CreateOrUpdate: Failure responding to request: StatusCode=503 -- Original Error: autorest/azure: Service returned an error. Status=503 Code=\"ServiceUnavailable\" Message=\"busy\""),
            Some((503, "ServiceUnavailable".into()))
        );
        // Go azcore.
        assert_eq!(
            parse("PUT https://management.azure.com/x\n-----\nRESPONSE 429: 429 Too Many Requests\nERROR CODE: TooManyRequests\n-----"),
            Some((429, "TooManyRequests".into()))
        );
        // Numbers that are not at a status marker are not statuses.
        assert_eq!(
            parse("FATAL   error 429: rate limited, retry in 503 ms"),
            None
        );
        assert_eq!(parse("FATAL   HTTP 4290 nonsense"), None);
        assert_eq!(parse("FATAL   XHTTP 429 TooManyRequests: x"), None);
    }

    #[test]
    fn authorization_failed_names_action_and_scope() {
        let e = ArmError {
            status: 403,
            code: "AuthorizationFailed".into(),
            message: "The client 'x' with object id 'y' does not have authorization to perform action \
                      'Microsoft.Authorization/roleAssignments/write' over scope '/subscriptions/s/rg' or the scope is invalid."
                .into(),
            method: "PUT".into(),
            path: "/p".into(),
        };
        let s = e.to_string();
        assert!(
            s.contains(
                "to perform Microsoft.Authorization/roleAssignments/write on /subscriptions/s/rg"
            ),
            "{s}"
        );
        assert!(s.contains("Owner or User Access Administrator"), "{s}");
    }

    #[tokio::test]
    async fn an_http_date_retry_after_is_waited_for() {
        let n = Arc::new(AtomicU32::new(0));
        let n2 = n.clone();
        let app = axum::Router::new().route(
            "/r",
            axum::routing::get(move || {
                let n = n2.clone();
                async move {
                    if n.fetch_add(1, Ordering::SeqCst) == 0 {
                        // Two whole seconds ahead: at least one second after truncation to seconds.
                        let at = std::time::SystemTime::now() + Duration::from_secs(2);
                        (
                            StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", httpdate::fmt_http_date(at))],
                            "",
                        )
                            .into_response()
                    } else {
                        axum::Json(serde_json::json!({"id": "x"})).into_response()
                    }
                }
            }),
        );
        let base = serve(app).await;
        let c = client(&base).with_policy(RetryPolicy {
            max_delay: Duration::from_secs(5),
            ..RetryPolicy::fast()
        });
        let started = std::time::Instant::now();
        assert_eq!(c.get("/r", "v").await.unwrap().unwrap()["id"], "x");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(900), "{waited:?}");
        assert!(waited < Duration::from_secs(4), "{waited:?}");
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn retries_429_with_retry_after_then_succeeds() {
        let n = Arc::new(AtomicU32::new(0));
        let n2 = n.clone();
        let app = axum::Router::new().route(
            "/r",
            axum::routing::get(move |h: HeaderMap| {
                let n = n2.clone();
                async move {
                    assert_eq!(h.get("authorization").unwrap(), "Bearer tok");
                    match n.fetch_add(1, Ordering::SeqCst) {
                        0 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], "")
                            .into_response(),
                        1 => (StatusCode::SERVICE_UNAVAILABLE, "").into_response(),
                        _ => axum::Json(serde_json::json!({"id":"x"})).into_response(),
                    }
                }
            }),
        );
        let base = serve(app).await;
        let c = client(&base);
        let v = c.get("/r", "v").await.unwrap().unwrap();
        assert_eq!(v["id"], "x");
        assert_eq!(n.load(Ordering::SeqCst), 3);
        assert_eq!(c.writes(), 0);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_with_the_arm_message() {
        let app = axum::Router::new().route(
            "/r",
            axum::routing::put(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(
                        serde_json::json!({"error":{"code":"ServiceUnavailable","message":"busy"}}),
                    ),
                )
            }),
        );
        let base = serve(app).await;
        let mut c = client(&base);
        c.policy.max_attempts = 3;
        let e = c.put("/r", "v", &serde_json::json!({})).await.unwrap_err();
        assert_eq!(e.arm_code(), Some("ServiceUnavailable"));
        assert_eq!(c.writes(), 3);
    }

    #[tokio::test]
    async fn connection_errors_are_retried_then_reported() {
        // Nothing listens on this port once the listener is dropped.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let mut c = client(&base);
        c.policy.max_attempts = 2;
        let e = c.get("/r", "v").await.unwrap_err().to_string();
        assert!(
            e.contains("after 2 attempts") && e.contains("cannot connect"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn paging_follows_next_link() {
        let app = axum::Router::new().route(
            "/items",
            axum::routing::get(
                |axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
                 h: HeaderMap| async move {
                    let host = h.get("host").unwrap().to_str().unwrap().to_string();
                    assert_eq!(q.get("api-version").map(String::as_str), Some("v"));
                    match q.get("skip").map(String::as_str) {
                        None => {
                            assert_eq!(q.get("$filter").map(String::as_str), Some("atScope()"));
                            axum::Json(serde_json::json!({"value":[1,2],"nextLink":format!("http://{host}/items?api-version=v&skip=2")}))
                        }
                        Some(_) => axum::Json(serde_json::json!({"value":[3]})),
                    }
                },
            ),
        );
        let base = serve(app).await;
        let v = client(&base)
            .list("/items", "v", Some("atScope()"))
            .await
            .unwrap();
        assert_eq!(v, vec![serde_json::json!(1), 2.into(), 3.into()]);
    }

    #[tokio::test]
    async fn long_running_put_polls_async_operation() {
        let polls = Arc::new(AtomicU32::new(0));
        let p2 = polls.clone();
        let app = axum::Router::new()
            .route(
                "/res",
                axum::routing::put(|h: HeaderMap| async move {
                    let host = h.get("host").unwrap().to_str().unwrap().to_string();
                    (
                        StatusCode::CREATED,
                        [
                            ("azure-asyncoperation", format!("http://{host}/op")),
                            ("retry-after", "0".to_string()),
                        ],
                        axum::Json(
                            serde_json::json!({"properties":{"provisioningState":"Creating"}}),
                        ),
                    )
                })
                .get(|| async {
                    axum::Json(serde_json::json!({"properties":{"provisioningState":"Succeeded"}}))
                }),
            )
            .route(
                "/op",
                axum::routing::get(move || {
                    let p = p2.clone();
                    async move {
                        if p.fetch_add(1, Ordering::SeqCst) < 2 {
                            axum::Json(serde_json::json!({"status":"InProgress"}))
                        } else {
                            axum::Json(serde_json::json!({"status":"Succeeded"}))
                        }
                    }
                }),
            );
        let base = serve(app).await;
        let v = client(&base)
            .put("/res", "v", &serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(v["properties"]["provisioningState"], "Succeeded");
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn delete_via_location_and_missing_resources() {
        let app = axum::Router::new()
            .route(
                "/gone",
                axum::routing::delete(|| async { StatusCode::NO_CONTENT }).get(|| async {
                    (
                        StatusCode::NOT_FOUND,
                        axum::Json(
                            serde_json::json!({"error":{"code":"ResourceNotFound","message":"no"}}),
                        ),
                    )
                }),
            )
            .route(
                "/slow",
                axum::routing::delete(|h: HeaderMap| async move {
                    let host = h.get("host").unwrap().to_str().unwrap().to_string();
                    (
                        StatusCode::ACCEPTED,
                        [("location", format!("http://{host}/loc"))],
                    )
                }),
            )
            .route(
                "/loc",
                axum::routing::get(|| async { StatusCode::NO_CONTENT }),
            );
        let base = serve(app).await;
        let c = client(&base);
        assert!(!c.delete("/gone", "v").await.unwrap());
        assert!(c.delete("/slow", "v").await.unwrap());
        assert!(c.get("/gone", "v").await.unwrap().is_none());
    }
}
