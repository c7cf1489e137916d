//! Fault injection: latency, status (429/500/503), reset, principal_not_found, schedules,
//! token expiry and write throttling.

use std::time::Instant;

use azure_emulator::{FaultKind, FaultRule};
use reqwest::Method;
use serde_json::json;

use crate::{cluster_path, error_code, machine_path, start, start_with};

fn rule(kind: FaultKind) -> FaultRule {
    FaultRule {
        id: None,
        method: None,
        path: None,
        path_regex: None,
        api_version: None,
        kind,
        latency_ms: None,
        status: None,
        retry_after_secs: None,
        after: 0,
        count: None,
    }
}

#[tokio::test]
async fn status_faults_answer_with_arm_errors_and_retry_after() {
    let h = start().await;
    let tok = h.sp_token().await;
    let url = format!("{}?api-version=2024-02-01", cluster_path());
    h.emu
        .set_fault(FaultRule {
            method: Some("GET".into()),
            path: Some("/subscriptions/*/resourceGroups/*/providers/Microsoft.ContainerService/managedClusters/*".into()),
            status: Some(429),
            retry_after_secs: Some(7),
            count: Some(1),
            ..rule(FaultKind::Status)
        })
        .unwrap();
    h.emu
        .set_fault(FaultRule {
            path_regex: Some("managedClusters".into()),
            status: Some(503),
            after: 1,
            count: Some(1),
            ..rule(FaultKind::Status)
        })
        .unwrap();
    let (s, hd, b) = h.arm(Method::GET, &url, Some(&tok), None).await;
    assert_eq!((s, error_code(&b)), (429, "TooManyRequests"));
    assert_eq!(hd["retry-after"], "7");
    let (s, _, b) = h.arm(Method::GET, &url, Some(&tok), None).await;
    assert_eq!(s, 200, "the 503 rule lets its first match through: {b}");
    let (s, _, b) = h.arm(Method::GET, &url, Some(&tok), None).await;
    assert_eq!((s, error_code(&b)), (503, "ServiceUnavailable"));
    let (s, _, _) = h.arm(Method::GET, &url, Some(&tok), None).await;
    assert_eq!(s, 200, "both rules exhausted");

    h.emu
        .set_fault(FaultRule {
            path: Some("/*/oauth2/v2.0/token".into()),
            status: Some(500),
            count: Some(1),
            ..rule(FaultKind::Status)
        })
        .unwrap();
    let (s, b) = h
        .token_request(
            azure_emulator::scenario::DEMO_TENANT_ID,
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (500, Some("temporarily_unavailable"))
    );

    let log = h.emu.request_log();
    let faulted: Vec<_> = log
        .iter()
        .filter(|e| e.fault.is_some())
        .map(|e| e.status)
        .collect();
    assert_eq!(faulted, vec![429, 503, 500]);
}

#[tokio::test]
async fn latency_delays_then_serves() {
    let h = start().await;
    h.emu
        .set_fault(FaultRule {
            path: Some("/**".into()),
            latency_ms: Some(120),
            count: Some(1),
            ..rule(FaultKind::Latency)
        })
        .unwrap();
    let t = Instant::now();
    let tok = h.sp_token().await;
    assert!(t.elapsed().as_millis() >= 120, "{:?}", t.elapsed());
    assert!(!tok.is_empty());
    assert!(h.emu.request_log()[0].duration_ms >= 120);
}

#[tokio::test]
async fn reset_drops_the_connection_without_a_response() {
    let h = start().await;
    h.emu
        .set_fault(FaultRule {
            method: Some("POST".into()),
            path: Some("/**".into()),
            count: Some(1),
            ..rule(FaultKind::Reset)
        })
        .unwrap();
    let err = h
        .http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            h.base,
            azure_emulator::scenario::DEMO_TENANT_ID
        ))
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect_err("connection must be dropped");
    assert!(
        err.is_request() || err.is_connect() || err.to_string().contains("connection"),
        "{err}"
    );
    assert_eq!(h.emu.request_log()[0].status, 0);
    // The next request is served normally.
    assert!(!h.sp_token().await.is_empty());
}

#[tokio::test]
async fn principal_not_found_for_the_first_n_role_assignment_puts() {
    let h = start().await;
    let tok = h.sp_token().await;
    let principal = h.connect_machine("pnf").await;
    h.emu
        .set_fault(FaultRule {
            method: Some("PUT".into()),
            path_regex: Some("/providers/Microsoft.Authorization/roleAssignments/".into()),
            count: Some(2),
            ..rule(FaultKind::PrincipalNotFound)
        })
        .unwrap();
    let body = json!({"properties": {"roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7", "principalId": principal}});
    let mut got = Vec::new();
    for _ in 0..3 {
        let path = format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
            cluster_path(),
            uuid::Uuid::new_v4()
        );
        let (s, _, b) = h
            .arm(Method::PUT, &path, Some(&tok), Some(body.clone()))
            .await;
        got.push((s, error_code(&b).to_string()));
        if s == 400 {
            assert!(b["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&principal.replace('-', "")));
        }
    }
    assert_eq!(
        got,
        vec![
            (400, "PrincipalNotFound".into()),
            (400, "PrincipalNotFound".into()),
            (201, String::new())
        ]
    );
}

#[tokio::test]
async fn arm_write_throttling_answers_429_with_retry_after() {
    let mut sc = crate::scenario();
    sc.settings.arm_writes_per_second = Some(1);
    let h = start_with(sc).await;
    let tok = h.sp_token().await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let (s, hd, _) = h
            .arm(
                Method::PUT,
                &format!("{}?api-version=2022-03-10", machine_path(&format!("t{i}"))),
                Some(&tok),
                Some(json!({"location": "eastus"})),
            )
            .await;
        if s == 429 {
            assert_eq!(hd["retry-after"], "1");
        }
        statuses.push(s);
    }
    // Three writes span at most two one-second windows, so at least one is throttled.
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    // Reads are never throttled.
    let (s, _, _) = h
        .arm(
            Method::GET,
            &format!("{}?api-version=2024-02-01", cluster_path()),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn scenario_faults_are_active_from_start_and_bad_rules_are_rejected() {
    let mut sc = crate::scenario();
    sc.faults.push(FaultRule {
        path: Some("/*/oauth2/v2.0/token".into()),
        status: Some(503),
        count: Some(1),
        ..rule(FaultKind::Status)
    });
    let h = start_with(sc).await;
    let (s, _) = h
        .token_request(azure_emulator::scenario::DEMO_TENANT_ID, &[])
        .await;
    assert_eq!(s, 503);
    let err = h.emu.set_fault(rule(FaultKind::Latency)).unwrap_err();
    assert!(err.to_string().contains("latency_ms"), "{err}");
}
