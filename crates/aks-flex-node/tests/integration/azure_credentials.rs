//! Credential types against the emulator and tiny loopback stubs: device-code sign-in approved through
//! the emulator's control API, and the error paths of Arc HIMDS and Azure IMDS (no challenge, missing key
//! file, 4xx/5xx answers, nothing listening).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aks_flex_node::azure::credential::{
    jwt_exp, DeviceCodeCredential, HimdsCredential, ImdsCredential, TokenCredential,
};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use azure_emulator::scenario::{self, Scenario};
use azure_emulator::{Emulator, EmulatorOptions};

const ARM: &str = "https://management.azure.com/";

async fn emulator(sc: Scenario, dir: &std::path::Path) -> Emulator {
    Emulator::start(EmulatorOptions {
        scenario: sc,
        himds_key_dir: Some(dir.join("keys")),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn device_code(emu: &Emulator) -> DeviceCodeCredential {
    let login = &emu.urls().login;
    let t = scenario::DEMO_TENANT_ID;
    let mut c = DeviceCodeCredential::new(
        reqwest::Client::new(),
        format!("{login}/{t}/oauth2/v2.0/devicecode"),
        format!("{login}/{t}/oauth2/v2.0/token"),
        true,
    );
    c.max_interval = Duration::from_millis(50);
    c
}

/// The JWT's claims (the emulator's tokens are JWTs; the signature is not checked).
fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_prints_the_code_and_continues_once_a_person_approves_it() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Arc::new(emulator(Scenario::demo(), dir.path()).await);
    // The terminal stand-in: what the agent prints, handed to a "person" who approves the code.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let screen = Arc::new(Mutex::new(Vec::<String>::new()));
    let cred = {
        let screen = screen.clone();
        device_code(&emu).with_prompt(move |m| {
            screen.lock().unwrap().push(m.to_string());
            tx.send(m.to_string()).unwrap();
        })
    };
    let person = {
        let emu = emu.clone();
        std::thread::spawn(move || {
            let msg = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            let code = msg
                .split("enter the code ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .expect("a user code in the message")
                .to_string();
            // Let the agent poll and meet authorization_pending first.
            std::thread::sleep(Duration::from_millis(200));
            emu.approve_device_code(&code, None).unwrap();
            code
        })
    };
    let token = tokio::time::timeout(Duration::from_secs(10), cred.get_token(ARM))
        .await
        .expect("sign-in finished")
        .unwrap();
    let code = person.join().unwrap();
    let shown = screen.lock().unwrap().join("\n");
    assert!(shown.contains(&code) && shown.contains("http"), "{shown}");
    let c = claims(token.token.expose());
    assert_eq!(c["oid"], scenario::DEMO_USER_OBJECT_ID);
    assert_eq!(
        c["aud"].as_str().unwrap().trim_end_matches('/'),
        ARM.trim_end_matches('/')
    );
    assert_eq!(jwt_exp(token.token.expose()), Some(token.expires_on));
    // It polled while the code was pending, then redeemed it exactly once.
    let polls = emu
        .request_log()
        .iter()
        .filter(|e| e.path.ends_with("/oauth2/v2.0/token"))
        .map(|e| e.status)
        .collect::<Vec<_>>();
    assert!(
        polls.len() >= 2 && polls.iter().filter(|s| **s == 200).count() == 1,
        "{polls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_that_nobody_approves_expires_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut sc = Scenario::demo();
    sc.settings.device_code_expires_secs = 1;
    let emu = emulator(sc, dir.path()).await;
    let cred = device_code(&emu).with_prompt(|_| {});
    let e = tokio::time::timeout(Duration::from_secs(10), cred.get_token(ARM))
        .await
        .expect("gave up")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("device code expired") && e.contains("run the command again"),
        "{e}"
    );
}

// ------------------------------------------------------------------------------------------------
// HIMDS

fn himds(url: &str) -> HimdsCredential {
    HimdsCredential::new(reqwest::Client::new(), Some(url)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn himds_of_a_host_that_is_not_connected_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let emu = emulator(Scenario::demo(), dir.path()).await;
    let url = format!(
        "{}/hosts/nowhere/metadata/identity/oauth2/token",
        emu.urls().himds
    );
    let e = himds(&url).get_token(ARM).await.unwrap_err().to_string();
    assert!(
        e.contains("HIMDS answered HTTP 400")
            && e.contains("Identity not found")
            && e.contains("azcmagent show"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn himds_server_errors_are_reported_with_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let emu = emulator(Scenario::demo(), dir.path()).await;
    emu.set_fault(
        serde_json::from_value(serde_json::json!({
            "path": "/metadata/identity/oauth2/token", "kind": "status", "status": 503
        }))
        .unwrap(),
    )
    .unwrap();
    let url = format!("{}/metadata/identity/oauth2/token", emu.urls().himds);
    let e = himds(&url).get_token(ARM).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 503"), "{e}");
}

/// A loopback stub answering every request with `answer(headers)`, recording the request headers and
/// query strings.
struct Stub {
    url: String,
    seen: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

async fn stub(answer: impl Fn(&HeaderMap) -> Response + Clone + Send + Sync + 'static) -> Stub {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let app = axum::Router::new().fallback(move |h: HeaderMap, uri: axum::http::Uri| {
        let (answer, seen) = (answer.clone(), seen2.clone());
        async move {
            seen.lock()
                .unwrap()
                .push((h.clone(), uri.query().unwrap_or("").to_string()));
            answer(&h)
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    Stub {
        url: format!("http://{addr}/metadata/identity/oauth2/token"),
        seen,
    }
}

/// Answers like HIMDS does to a request without `Metadata: true`.
fn needs_metadata(h: &HeaderMap) -> Option<Response> {
    (h.get("metadata").and_then(|v| v.to_str().ok()) != Some("true")).then(|| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "invalid_request", "error_description": "Required metadata header not specified"})),
        )
            .into_response()
    })
}

#[tokio::test]
async fn himds_401_without_a_challenge_is_refused() {
    let s = stub(|h| needs_metadata(h).unwrap_or_else(|| StatusCode::UNAUTHORIZED.into_response()))
        .await;
    let e = himds(&s.url).get_token(ARM).await.unwrap_err().to_string();
    assert!(e.contains("without a Basic realm challenge"), "{e}");
    // The Metadata header was sent (the stub would have answered 400 otherwise).
    assert_eq!(s.seen.lock().unwrap()[0].0["metadata"], "true");
}

#[tokio::test]
async fn himds_challenge_naming_a_missing_key_file_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone.key");
    let realm = format!("Basic realm={}", missing.display());
    let s = stub(move |h| {
        needs_metadata(h).unwrap_or_else(|| {
            (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", realm.clone())],
                "",
            )
                .into_response()
        })
    })
    .await;
    let e = himds(&s.url)
        .with_key_dir(dir.path())
        .get_token(ARM)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot read the HIMDS key file")
            && e.contains("gone.key")
            && e.contains("root or in the himds group"),
        "{e}"
    );
    // Nothing was sent with an Authorization header.
    assert!(s
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|(h, _)| h.get("authorization").is_none()));
}

/// A local impostor on the HIMDS port names files outside the key directory in its challenge: each is
/// refused by its rule, and nothing is ever sent back as Basic auth.
#[tokio::test]
async fn himds_impostor_challenges_naming_other_files_are_refused_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("tokens");
    std::fs::create_dir_all(keys.join("sub")).unwrap();
    let secret = dir.path().join("private.key");
    std::fs::write(&secret, "ROOT-ONLY-SECRET").unwrap();
    std::fs::write(keys.join("sub/x.key"), "ROOT-ONLY-SECRET").unwrap();
    std::fs::write(keys.join("x.pem"), "ROOT-ONLY-SECRET").unwrap();
    std::fs::write(keys.join("big.key"), "ROOT-ONLY-SECRET".repeat(300)).unwrap();
    std::os::unix::fs::symlink(&secret, keys.join("link.key")).unwrap();
    let k = |n: &str| keys.join(n).to_string_lossy().into_owned();
    for (realm, rule) in [
        (
            format!("{}/../private.key", keys.display()),
            "contains a \"..\" or \".\" component",
        ),
        (k("link.key"), "is a symbolic link"),
        (k("x.pem"), "does not end in .key"),
        (k("big.key"), "larger than 4096"),
        (k("sub/x.key"), "is not directly inside"),
    ] {
        let challenge = format!("Basic realm={realm}");
        let s = stub(move |h| {
            needs_metadata(h).unwrap_or_else(|| {
                (
                    StatusCode::UNAUTHORIZED,
                    [("www-authenticate", challenge.clone())],
                    "",
                )
                    .into_response()
            })
        })
        .await;
        // IDENTITY_ENDPOINT-style construction (an explicit URL): the rule applies all the same.
        let e = himds(&s.url)
            .with_key_dir(&keys)
            .get_token(ARM)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&realm) && e.contains(rule) && e.contains("refusing to read it"),
            "{realm}: {e}"
        );
        assert!(!e.contains("ROOT-ONLY-SECRET"), "{e}");
        let seen = s.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{realm}: asked again");
        assert!(seen[0].0.get("authorization").is_none());
    }
}

#[tokio::test]
async fn himds_answering_without_metadata_header_support_is_reported() {
    // A server that rejects the request as if the Metadata header were missing: the error carries its words.
    let s = stub(|_| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "invalid_request", "error_description": "Required metadata header not specified"})),
        )
            .into_response()
    })
    .await;
    let e = himds(&s.url).get_token(ARM).await.unwrap_err().to_string();
    assert!(
        e.contains("HTTP 400") && e.contains("Required metadata header not specified"),
        "{e}"
    );
}

async fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/metadata/identity/oauth2/token")
}

#[tokio::test]
async fn himds_not_listening_points_at_the_arc_agent() {
    let e = himds(&closed_port_url().await)
        .get_token(ARM)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("himdsd running") && e.contains("azcmagent show"),
        "{e}"
    );
}

// ------------------------------------------------------------------------------------------------
// IMDS

fn imds(url: &str, client_id: Option<&str>) -> ImdsCredential {
    ImdsCredential::new(
        reqwest::Client::new(),
        Some(url),
        client_id.map(str::to_string),
    )
    .unwrap()
}

#[tokio::test]
async fn imds_4xx_and_5xx_are_errors_with_the_server_words() {
    for (status, body) in [
        (
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_request", "error_description": "Identity not found"}),
        ),
        (
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found", "error_description": "The requested identity has not been assigned to this resource."}),
        ),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": "unknown_error", "error_description": "IMDS is unavailable"}),
        ),
    ] {
        let body2 = body.clone();
        let s = stub(move |h| {
            needs_metadata(h).unwrap_or_else(|| (status, axum::Json(body2.clone())).into_response())
        })
        .await;
        let e = imds(&s.url, Some("aaaaaaaa-0000-4000-8000-000000000001"))
            .get_token(ARM)
            .await
            .unwrap_err()
            .to_string();
        let words = body["error_description"].as_str().unwrap();
        assert!(
            e.contains(words) || e.contains(body["error"].as_str().unwrap()),
            "{status}: {e}"
        );
        assert!(e.contains("IMDS"), "{e}");
        let seen = s.seen.lock().unwrap();
        assert_eq!(seen[0].0["metadata"], "true");
        assert!(
            seen[0]
                .1
                .contains("client_id=aaaaaaaa-0000-4000-8000-000000000001"),
            "{}",
            seen[0].1
        );
        assert!(
            seen[0].1.contains("api-version=2018-02-01"),
            "{}",
            seen[0].1
        );
    }
}

#[tokio::test]
async fn imds_success_and_not_listening() {
    let s = stub(|h| {
        needs_metadata(h).unwrap_or_else(|| {
            axum::Json(serde_json::json!({
                "access_token": "imds-token", "expires_on": "4102444800", "expires_in": "3600",
                "resource": ARM, "token_type": "Bearer"
            }))
            .into_response()
        })
    })
    .await;
    let t = imds(&s.url, None).get_token(ARM).await.unwrap();
    assert_eq!(t.token.expose(), "imds-token");
    assert_eq!(t.expires_on, 4102444800);
    assert!(!s.seen.lock().unwrap()[0].1.contains("client_id"));
    let e = imds(&closed_port_url().await, None)
        .get_token(ARM)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("IMDS"), "{e}");
}
