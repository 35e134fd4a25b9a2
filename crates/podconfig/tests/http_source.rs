//! The HTTP source against a local server on 127.0.0.1.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kubelet_podconfig::{Error, HttpSource, PodConfig, PodOperation, PodUpdates};

const NODE: &str = "node-h";
const WAIT: Duration = Duration::from_secs(5);
const PERIOD: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Served {
    status: u16,
    body: String,
    delay: Duration,
    requests: usize,
    last_header: Option<String>,
}

type State = Arc<Mutex<Served>>;

async fn serve() -> (String, State) {
    let state: State = Arc::new(Mutex::new(Served {
        status: 200,
        ..Default::default()
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/pods", listener.local_addr().unwrap());
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let st = st.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let st = st.clone();
                    async move {
                        let (status, body, delay) = {
                            let mut s = st.lock().unwrap();
                            s.requests += 1;
                            s.last_header = req
                                .headers()
                                .get("x-token")
                                .and_then(|v| v.to_str().ok())
                                .map(String::from);
                            (s.status, s.body.clone(), s.delay)
                        };
                        tokio::time::sleep(delay).await;
                        let mut response = Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, state)
}

fn set(state: &State, status: u16, body: &str) {
    let mut s = state.lock().unwrap();
    s.status = status;
    s.body = body.to_string();
}

fn pod_json(name: &str, image: &str) -> String {
    format!(
        r#"{{"metadata":{{"name":"{name}"}},"spec":{{"containers":[{{"name":"c","image":"{image}"}}]}}}}"#
    )
}

fn single(name: &str, image: &str) -> String {
    pod_json(name, image).replacen('{', r#"{"apiVersion":"v1","kind":"Pod","#, 1)
}

fn list(items: &[String]) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"PodList","items":[{}]}}"#,
        items.join(",")
    )
}

fn start(url: &str) -> (PodConfig, PodUpdates) {
    init_tracing();
    let source = HttpSource::new(url, NODE)
        .header("X-Token", "s3cret")
        .period(PERIOD);
    PodConfig::builder(NODE).source(source).start()
}

async fn wait_rejected(config: &PodConfig, url: &str, pred: impl Fn(&Error) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(r) = config
            .rejected_manifests()
            .iter()
            .find(|r| r.origin == url && pred(&r.error))
        {
            assert_eq!(r.source, "http");
            return r.error.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rejection: {:?}",
            config.rejected_manifests()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn single_pod_list_unchanged_and_invalid_bodies() {
    let (url, state) = serve().await;
    set(&state, 200, &single("web", "nginx"));
    let (config, mut updates) = start(&url);

    let add = expect(&mut updates, WAIT, PodOperation::Add, &["web-node-h"]).await;
    assert_eq!(add.source, "http");
    let pod = &add.pods[0];
    assert!(
        pod.spec.as_ref().unwrap().tolerations.is_none(),
        "no NoExecute toleration for URL pods"
    );
    assert_eq!(state.lock().unwrap().last_header.as_deref(), Some("s3cret"));

    // The same body again and again: requests happen, updates do not.
    let before = state.lock().unwrap().requests;
    expect_quiet(&mut updates, PERIOD * 6).await;
    assert!(state.lock().unwrap().requests >= before + 3);

    // A PodList replaces the single pod.
    set(
        &state,
        200,
        &list(&[pod_json("a", "busybox"), pod_json("b", "busybox")]),
    );
    expect(&mut updates, WAIT, PodOperation::Remove, &["web-node-h"]).await;
    expect(
        &mut updates,
        WAIT,
        PodOperation::Add,
        &["a-node-h", "b-node-h"],
    )
    .await;

    // One invalid pod rejects the whole body: nothing changes.
    set(
        &state,
        200,
        &list(&[pod_json("a", "busybox"), pod_json("c", "")]),
    );
    let reason = wait_rejected(&config, &url, |e| matches!(e, Error::Invalid { .. })).await;
    assert!(
        reason.contains("items[1]") && reason.contains("image: Required value"),
        "{reason}"
    );
    expect_quiet(&mut updates, PERIOD * 4).await;
    assert_eq!(names(&config.merged_pods()), ["a-node-h", "b-node-h"]);

    // A good body again clears the rejection.
    set(&state, 200, &list(&[pod_json("a", "busybox")]));
    expect(&mut updates, WAIT, PodOperation::Remove, &["b-node-h"]).await;
    assert!(config.rejected_manifests().is_empty());

    // Not a pod at all.
    set(&state, 200, "apiVersion: v1\nkind: ConfigMap\n");
    wait_rejected(&config, &url, |e| matches!(e, Error::Decode { .. })).await;

    // Non-200: an error, nothing sent.
    set(&state, 500, &single("x", "y"));
    let reason = wait_rejected(&config, &url, |e| matches!(e, Error::Http { .. })).await;
    assert!(reason.contains("500"), "{reason}");
    expect_quiet(&mut updates, PERIOD * 4).await;

    // An empty body is an empty snapshot plus an error.
    set(&state, 200, "");
    expect(&mut updates, WAIT, PodOperation::Remove, &["a-node-h"]).await;
    let reason = wait_rejected(&config, &url, |e| {
        matches!(e, Error::Http { .. }) && e.to_string().contains("zero-length")
    })
    .await;
    assert!(reason.contains(&url));
}

#[tokio::test]
async fn empty_first_body_makes_the_source_ready() {
    let (url, state) = serve().await;
    set(&state, 200, "");
    let (config, mut updates) = start(&url);
    expect(&mut updates, WAIT, PodOperation::Add, &[]).await;
    assert!(config.sources_ready());
}

#[tokio::test]
async fn unreachable_and_slow_servers_are_reported() {
    // Nothing listens on this port once the listener is dropped.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/pods");
    let (config, _updates) = start(&url);
    wait_rejected(&config, &url, |e| matches!(e, Error::Http { .. })).await;
    assert!(!config.sources_ready());

    let (url, state) = serve().await;
    set(&state, 200, &single("slow", "nginx"));
    state.lock().unwrap().delay = Duration::from_secs(3);
    init_tracing();
    let source = HttpSource::new(&url, NODE)
        .period(PERIOD)
        .timeout(Duration::from_millis(200));
    let (config, _updates) = PodConfig::builder(NODE).source(source).start();
    let reason = wait_rejected(&config, &url, |e| e.to_string().contains("timed out")).await;
    assert!(reason.contains("200ms"), "{reason}");
}
