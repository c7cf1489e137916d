//! `NodeReady`: the last step. Bootstrap is complete only when the API server shows this node `Ready`,
//! asked with the kubelet's own kubeconfig and credential (its exec plugin, `aks-flex-node token`), so
//! the check proves what the kubelet can do, not what the operator's identity can. The wait is bounded
//! (`AKS_FLEX_NODE_NODE_READY_TIMEOUT`, seconds, default 300); on timeout the error carries the node's
//! conditions, or says the node never registered, with the API server's answer, the kubelet's last
//! journal lines and the likely cause.
//!
//! In a sandbox root nothing runs, so there is no node to wait for: the step plans nothing there.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::{Action, Context, Step, StepError, StepResult};
use crate::model::Phase;
use crate::render::kubelet as rk;

pub struct NodeReady;

pub const NAME: &str = "NodeReady";
/// How long bootstrap waits for the node to be `Ready` unless `AKS_FLEX_NODE_NODE_READY_TIMEOUT` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
pub const TIMEOUT_ENV: &str = "AKS_FLEX_NODE_NODE_READY_TIMEOUT";
const POLL: Duration = Duration::from_secs(2);
/// The answer to one API request, bounded so a hung API server cannot stall the wait.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const JOURNAL_LINES: u32 = 20;

/// The wait bound: `AKS_FLEX_NODE_NODE_READY_TIMEOUT` in seconds (at least 1), else 5 minutes.
pub fn timeout() -> StepResult<Duration> {
    match std::env::var(TIMEOUT_ENV) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
            _ => Err(StepError::failed(format!(
                "{TIMEOUT_ENV}={v:?} is not a number of seconds greater than 0"
            ))),
        },
    }
}

/// What the API server said about the node at one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeView {
    /// The node exists and its `Ready` condition is `True`.
    Ready,
    /// The node exists but is not Ready: its conditions as `Type=Status (Reason: message)`.
    NotReady(Vec<String>),
    /// The API server has no node of that name.
    Missing,
    /// The API server could not be asked (transport) or refused (HTTP status with its message).
    Error {
        status: Option<u16>,
        message: String,
    },
}

/// Read a Node object into a [`NodeView`].
pub fn view_of(node: &Node) -> NodeView {
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    if conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
    {
        return NodeView::Ready;
    }
    NodeView::NotReady(
        conditions
            .iter()
            .map(|c| {
                let mut s = format!("{}={}", c.type_, c.status);
                let reason = c.reason.clone().unwrap_or_default();
                let message = c.message.clone().unwrap_or_default();
                if !reason.is_empty() || !message.is_empty() {
                    s.push_str(&format!(" ({reason}: {message})"));
                }
                s
            })
            .collect(),
    )
}

/// A client that authenticates exactly as the kubelet does: its kubeconfig (the text of
/// [`rk::KUBECONFIG_PATH`]), its exec credential.
pub async fn kubelet_client(kubeconfig: &str) -> Result<kube::Client, String> {
    let path = rk::KUBECONFIG_PATH;
    let kc = Kubeconfig::from_yaml(kubeconfig).map_err(|e| format!("reading {path}: {e}"))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("using {path}: {e}"))?;
    config.connect_timeout = Some(REQUEST_TIMEOUT);
    config.read_timeout = Some(REQUEST_TIMEOUT);
    kube::Client::try_from(config).map_err(|e| format!("client for {path}: {e}"))
}

/// One look at the node through `client`.
pub async fn look(client: &kube::Client, node_name: &str) -> NodeView {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.get_opt(node_name).await {
        Ok(Some(node)) => view_of(&node),
        Ok(None) => NodeView::Missing,
        Err(kube::Error::Api(s)) => NodeView::Error {
            status: Some(s.code),
            message: s.message.clone(),
        },
        Err(e) => NodeView::Error {
            status: None,
            message: e.to_string(),
        },
    }
}

/// Look at the node every [`POLL`] until it is Ready or `timeout` passed; the last view on timeout.
pub async fn wait_ready(
    client: &kube::Client,
    node_name: &str,
    timeout: Duration,
) -> Result<(), NodeView> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let view = look(client, node_name).await;
        if view == NodeView::Ready {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(view);
        }
        tracing::debug!(node = node_name, ?view, "node not Ready yet");
        tokio::time::sleep(POLL).await;
    }
}

/// The most likely reason for what the API server and the kubelet's journal show.
pub fn likely_cause(view: &NodeView, journal: &str) -> String {
    let j = journal.to_ascii_lowercase();
    let status = match view {
        NodeView::Error { status, .. } => *status,
        _ => None,
    };
    if status == Some(401) || j.contains("unauthorized") {
        "the API server does not accept the node's credential (401): check that the Arc machine's identity gets tokens (`aks-flex-node token`) and that the cluster uses Entra ID authentication".into()
    } else if status == Some(403) || j.contains("forbidden") {
        "the API server refuses the node's identity (403 Forbidden): the Arc machine's managed identity lacks the Kubernetes permissions on the cluster; check the role assignments (azure.arc.roles) and that the cluster uses Azure RBAC".into()
    } else if j.contains("x509") || j.contains("certificate") {
        "TLS to the API server fails: the cluster CA the agent wrote does not match the API server's certificate".into()
    } else if j.contains("cni") || j.contains("networkready=false") || j.contains("network plugin")
    {
        "the pod network is not ready: check the CNI configuration in /etc/cni/net.d and the plugins in /opt/cni/bin".into()
    } else if matches!(view, NodeView::Error { status: None, .. }) {
        "the API server cannot be reached from this machine: check the network path and proxy settings".into()
    } else {
        "see the kubelet's journal lines above (journalctl -u kubelet)".into()
    }
}

/// The timeout error for the operator.
pub fn timeout_message(
    node_name: &str,
    server: &str,
    timeout: Duration,
    view: &NodeView,
    journal: &str,
) -> String {
    let what = match view {
        NodeView::Ready => unreachable!("a Ready node is not a timeout"),
        NodeView::NotReady(conds) => format!(
            "node {node_name} registered with {server} but is not Ready after {}s; its conditions: {}",
            timeout.as_secs(),
            if conds.is_empty() {
                "(none reported yet)".to_string()
            } else {
                conds.join("; ")
            }
        ),
        NodeView::Missing => format!(
            "the node {node_name} never registered with {server} within {}s",
            timeout.as_secs()
        ),
        NodeView::Error { status, message } => format!(
            "the node {node_name} could not be seen on {server} within {}s: the API server answered {}{message}",
            timeout.as_secs(),
            status.map(|s| format!("{s}: ")).unwrap_or_default()
        ),
    };
    format!(
        "{what}.\nLikely cause: {}.\nLast {JOURNAL_LINES} kubelet journal lines (journalctl -u kubelet):\n{}",
        likely_cause(view, journal),
        journal.trim_end()
    )
}

#[async_trait::async_trait]
impl Step for NodeReady {
    fn name(&self) -> &'static str {
        NAME
    }

    fn phase(&self) -> Phase {
        Phase::Activation
    }

    async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
        if ctx.host.is_sandbox() {
            return Ok(Vec::new());
        }
        let node = &ctx.config.agent.node_name;
        let wait = Action::WaitNodeReady {
            node: node.clone(),
            timeout_seconds: timeout()?.as_secs(),
        };
        let Some(kubeconfig) = ctx.host.fs.read_to_string(Path::new(rk::KUBECONFIG_PATH))? else {
            return Ok(vec![wait]);
        };
        // Read-only: one GET of the Node object. Any doubt plans the wait, which reports it.
        match kubelet_client(&kubeconfig).await {
            Ok(client) if look(&client, node).await == NodeView::Ready => Ok(Vec::new()),
            _ => Ok(vec![wait]),
        }
    }

    async fn apply_remote(&self, ctx: &Context, action: &Action) -> StepResult<()> {
        let Action::WaitNodeReady {
            node,
            timeout_seconds,
        } = action
        else {
            return Err(StepError::failed(format!(
                "{NAME} cannot apply {}",
                action.summary()
            )));
        };
        let timeout = std::time::Duration::from_secs(*timeout_seconds);
        let kubeconfig = ctx
            .host
            .fs
            .read_to_string(Path::new(rk::KUBECONFIG_PATH))?
            .ok_or_else(|| {
                StepError::failed(format!(
                    "{} is missing: the KubeletInstaller step writes it",
                    rk::KUBECONFIG_PATH
                ))
            })?;
        let server = super::kubelet::endpoint(ctx)
            .map(|e| e.server)
            .unwrap_or_else(|_| "the API server".into());
        let client = kubelet_client(&kubeconfig).await.map_err(|e| {
            StepError::failed(format!("cannot ask the API server about node {node}: {e}"))
        })?;
        tracing::info!(node = %node, "waiting for the node to be Ready (up to {}s)", timeout.as_secs());
        let started = std::time::Instant::now();
        match wait_ready(&client, node, timeout).await {
            Ok(()) => {
                tracing::info!(
                    node = %node,
                    "node is Ready ({:.1}s after the wait began)",
                    started.elapsed().as_secs_f32()
                );
                Ok(())
            }
            Err(view) => {
                let journal = ctx.host.unit_journal_tail("kubelet", JOURNAL_LINES).await;
                Err(StepError::failed(timeout_message(
                    node, &server, timeout, &view, &journal,
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// How the fake API server answers GET /api/v1/nodes/NAME.
    #[derive(Clone, Copy)]
    enum Answer {
        /// NotReady for the first N looks, then Ready.
        ReadyAfter(usize),
        Forbidden,
        NotFound,
    }

    fn node_json(name: &str, ready: bool) -> serde_json::Value {
        let (status, reason, message) = if ready {
            ("True", "KubeletReady", "kubelet is posting ready status")
        } else {
            (
                "False",
                "KubeletNotReady",
                "runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni config uninitialized",
            )
        };
        serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": name },
            "status": { "conditions": [
                { "type": "MemoryPressure", "status": "False" },
                { "type": "Ready", "status": status, "reason": reason, "message": message }
            ]}
        })
    }

    fn status_json(code: u16, reason: &str, message: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": message, "reason": reason, "code": code
        })
    }

    /// A loopback API server that only accepts the token the exec plugin hands out.
    async fn fake_api(answer: Answer) -> (String, Arc<AtomicUsize>) {
        let looks = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .route(
                "/api/v1/nodes/{name}",
                get(
                    |State((answer, looks)): State<(Answer, Arc<AtomicUsize>)>,
                     UrlPath(name): UrlPath<String>,
                     headers: HeaderMap| async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        if auth != "Bearer node-token" {
                            let body = status_json(401, "Unauthorized", "Unauthorized");
                            return (StatusCode::UNAUTHORIZED, axum::Json(body));
                        }
                        let n = looks.fetch_add(1, Ordering::SeqCst);
                        match answer {
                            Answer::ReadyAfter(k) => (StatusCode::OK, axum::Json(node_json(&name, n >= k))),
                            Answer::Forbidden => (
                                StatusCode::FORBIDDEN,
                                axum::Json(status_json(
                                    403,
                                    "Forbidden",
                                    &format!("nodes \"{name}\" is forbidden: User \"oid\" cannot get resource \"nodes\""),
                                )),
                            ),
                            Answer::NotFound => (
                                StatusCode::NOT_FOUND,
                                axum::Json(status_json(404, "NotFound", &format!("nodes \"{name}\" not found"))),
                            ),
                        }
                    },
                ),
            )
            .with_state((answer, looks.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), looks)
    }

    /// A kubelet-style kubeconfig whose exec plugin (v1beta1, as kubelet 1.20 needs) prints a token.
    fn kubeconfig(server: &str) -> String {
        format!(
            r#"apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: "{server}"
contexts:
- name: ctx
  context:
    cluster: c
    user: node
current-context: ctx
users:
- name: node
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: sh
      args:
      - -c
      - 'echo {{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"node-token\"}}}}'
      env: null
      interactiveMode: Never
      provideClusterInfo: false
"#
        )
    }

    #[tokio::test]
    async fn waits_through_not_ready_until_ready_with_the_exec_credential() {
        let (server, looks) = fake_api(Answer::ReadyAfter(2)).await;
        let client = kubelet_client(&kubeconfig(&server)).await.unwrap();
        let first = look(&client, "flex-node-1").await;
        match &first {
            NodeView::NotReady(c) => assert!(
                c.iter()
                    .any(|c| c
                        .starts_with("Ready=False (KubeletNotReady: runtime network not ready")),
                "{c:?}"
            ),
            other => panic!("expected NotReady, got {other:?}"),
        }
        wait_ready(&client, "flex-node-1", Duration::from_secs(30))
            .await
            .unwrap();
        assert!(looks.load(Ordering::SeqCst) >= 3, "it polled until Ready");
    }

    #[tokio::test]
    async fn a_forbidden_node_times_out_naming_the_role_assignments() {
        let (server, _) = fake_api(Answer::Forbidden).await;
        let client = kubelet_client(&kubeconfig(&server)).await.unwrap();
        let view = wait_ready(&client, "flex-node-1", Duration::from_millis(10))
            .await
            .unwrap_err();
        assert!(
            matches!(
                view,
                NodeView::Error {
                    status: Some(403),
                    ..
                }
            ),
            "{view:?}"
        );
        let msg = timeout_message(
            "flex-node-1",
            &server,
            Duration::from_secs(300),
            &view,
            "E1203 kubelet.go: nodes is forbidden\n",
        );
        assert!(msg.contains("could not be seen"), "{msg}");
        assert!(msg.contains("403"), "{msg}");
        assert!(msg.contains("azure.arc.roles"), "{msg}");
        assert!(
            msg.contains("nodes is forbidden"),
            "the kubelet's journal is quoted: {msg}"
        );
    }

    #[tokio::test]
    async fn a_node_that_never_registers_says_so() {
        let (server, _) = fake_api(Answer::NotFound).await;
        let client = kubelet_client(&kubeconfig(&server)).await.unwrap();
        let view = wait_ready(&client, "flex-node-1", Duration::from_millis(10))
            .await
            .unwrap_err();
        assert_eq!(view, NodeView::Missing);
        let msg = timeout_message("flex-node-1", &server, Duration::from_secs(60), &view, "");
        assert!(msg.contains("never registered"), "{msg}");
    }

    #[tokio::test]
    async fn a_wrong_credential_is_a_401_with_its_cause() {
        let (server, _) = fake_api(Answer::ReadyAfter(0)).await;
        let client = kubelet_client(&kubeconfig(&server).replace("node-token", "stale"))
            .await
            .unwrap();
        let view = look(&client, "flex-node-1").await;
        assert!(
            matches!(
                view,
                NodeView::Error {
                    status: Some(401),
                    ..
                }
            ),
            "{view:?}"
        );
        assert!(likely_cause(&view, "").contains("401"));
    }

    #[test]
    fn likely_causes_from_the_kubelet_journal() {
        let missing = NodeView::Missing;
        assert!(
            likely_cause(&missing, "x509: certificate signed by unknown authority").contains("CA")
        );
        assert!(likely_cause(
            &missing,
            "Container runtime network not ready: cni config uninitialized"
        )
        .contains("CNI"));
        assert!(likely_cause(&missing, "").contains("journal"));
    }

    #[test]
    fn the_timeout_is_read_from_the_environment_and_checked() {
        // Only this test sets the variable.
        std::env::set_var(TIMEOUT_ENV, "nope");
        assert!(timeout().unwrap_err().to_string().contains(TIMEOUT_ENV));
        std::env::set_var(TIMEOUT_ENV, "45");
        assert_eq!(timeout().unwrap(), Duration::from_secs(45));
        std::env::remove_var(TIMEOUT_ENV);
        assert_eq!(timeout().unwrap(), DEFAULT_TIMEOUT);
    }
}
