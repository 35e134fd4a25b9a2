//! A fake API server over kube-rs's mock service (`tower-test`): requests
//! are read one by one and answered by the test (as the node lease's tests).
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hyper::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
pub type Sender = tower_test::mock::SendResponse<Response<Body>>;

/// Long enough for any wait of the code under test: with paused time it
/// costs nothing.
pub const WAIT: Duration = Duration::from_secs(3600);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("kubelet_events=debug")
        .try_init();
}

pub fn client() -> (kube::Client, Handle) {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(mock, "default"), handle)
}

/// One request the code under test made.
pub struct Req {
    pub method: String,
    pub uri: String,
    pub content_type: String,
    pub body: Value,
    send: Sender,
}

impl std::fmt::Debug for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.uri)
    }
}

impl Req {
    /// Fails the request as a broken connection would.
    pub fn fail(self) {
        self.send.send_error("connection reset by peer");
    }

    /// Answers with the request's own object and a resource version, as
    /// the API server answers a create.
    pub fn echo(self, resource_version: &str) -> Value {
        let mut body = self.body.clone();
        body["metadata"]["resourceVersion"] = json!(resource_version);
        self.respond(201, &body);
        body
    }

    pub fn respond(self, status: u16, body: &Value) {
        self.send.send_response(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }

    /// Asserts the method and path (query string excluded).
    pub fn expect(&self, method: &str, path: &str) {
        let got = self.uri.split('?').next().unwrap_or_default();
        assert_eq!((self.method.as_str(), got), (method, path), "{self:?}");
    }
}

/// Whether no request comes within `d`.
pub async fn quiet(handle: &mut Handle, d: Duration) -> bool {
    tokio::time::timeout(d, handle.next_request())
        .await
        .is_err()
}

pub async fn next(handle: &mut Handle) -> Req {
    let (request, send) = tokio::time::timeout(WAIT, handle.next_request())
        .await
        .expect("no request")
        .expect("mock closed");
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Req {
        method,
        uri,
        content_type,
        body,
        send,
    }
}

/// The output of a spawned task, failing (not hanging) when it does not
/// finish.
pub async fn done<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the task did not finish")
        .expect("the task panicked")
}

pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message})
}
