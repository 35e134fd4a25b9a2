//! The API server source against kube-rs's mock service (`tower-test`): the
//! initial list, watch events, a watch that breaks and resumes from its
//! resourceVersion, and a watch that expires (410) and relists.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use hyper::{Request, Response};
use kube::client::Body;
use kubelet_podconfig::{ApiServerSource, PodConfig, PodOperation};
use serde_json::json;

const NODE: &str = "node-k";
const WAIT: Duration = Duration::from_secs(10);

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn pod(name: &str, uid: &str, rv: &str, message: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team", "uid": uid, "resourceVersion": rv},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "nginx"}]},
        "status": {"message": message}
    })
}

fn list(rv: &str, items: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": rv},
        "items": items
    }))
    .unwrap()
}

fn events(events: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, object) in events {
        body.extend(serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap());
        body.push(b'\n');
    }
    body
}

/// Answers the next request, after checking it is a list (`watch` false) or
/// a watch (`watch` true, from `rv`). Returns the query string.
async fn answer(
    handle: &mut Handle,
    watch: bool,
    rv: Option<&str>,
    status: u16,
    body: Vec<u8>,
) -> String {
    let (request, send) = tokio::time::timeout(WAIT, handle.next_request())
        .await
        .expect("the source made no request")
        .expect("mock closed");
    let uri = request.uri().to_string();
    assert!(uri.starts_with("/api/v1/pods?"), "{uri}");
    assert!(
        uri.contains("fieldSelector=spec.nodeName%3Dnode-k"),
        "{uri}"
    );
    assert_eq!(uri.contains("watch=true"), watch, "{uri}");
    if let Some(rv) = rv {
        assert!(uri.contains(&format!("resourceVersion={rv}")), "{uri}");
    }
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(body))
            .unwrap(),
    );
    uri
}

#[tokio::test]
async fn list_watch_break_resume_and_relist() {
    init_tracing();
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(mock, "default");
    let (config, mut updates) = PodConfig::builder(NODE)
        .source(ApiServerSource::new(client, NODE))
        .start();

    // Initial list: the source is seen after it.
    answer(
        &mut handle,
        false,
        None,
        200,
        list(
            "10",
            vec![pod("a", "ua", "5", "0"), pod("b", "ub", "6", "0")],
        ),
    )
    .await;
    let add = expect(&mut updates, WAIT, PodOperation::Add, &["a", "b"]).await;
    assert_eq!(add.source, "api");
    assert!(config.sources_ready());

    // A watch with three events, then the body ends: the watch "breaks".
    answer(
        &mut handle,
        true,
        Some("10"),
        200,
        events(&[
            ("ADDED", pod("c", "uc", "11", "0")),
            ("MODIFIED", pod("a", "ua", "12", "status only")),
            ("DELETED", pod("b", "ub", "13", "0")),
        ]),
    )
    .await;
    expect(&mut updates, WAIT, PodOperation::Add, &["c"]).await;
    let reconcile = expect(&mut updates, WAIT, PodOperation::Reconcile, &["a"]).await;
    assert_eq!(
        reconcile.pods[0]
            .status
            .as_ref()
            .unwrap()
            .message
            .as_deref(),
        Some("status only")
    );
    expect(&mut updates, WAIT, PodOperation::Remove, &["b"]).await;

    // It resumes from the last resourceVersion, without a relist. A spec
    // change is an UPDATE; a pod replaced under its name gets REMOVE + ADD.
    let mut changed = pod("c", "uc", "14", "0");
    changed["spec"]["containers"][0]["image"] = json!("nginx:2");
    answer(
        &mut handle,
        true,
        Some("13"),
        200,
        events(&[
            ("MODIFIED", changed),
            ("ADDED", pod("a", "ua-2", "15", "0")),
        ]),
    )
    .await;
    let update = expect(&mut updates, WAIT, PodOperation::Update, &["c"]).await;
    assert_eq!(
        update.pods[0].spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("nginx:2")
    );
    let removed = expect(&mut updates, WAIT, PodOperation::Remove, &["a"]).await;
    assert_eq!(removed.pods[0].metadata.uid.as_deref(), Some("ua"));
    let added = expect(&mut updates, WAIT, PodOperation::Add, &["a"]).await;
    assert_eq!(added.pods[0].metadata.uid.as_deref(), Some("ua-2"));

    // The next watch expires (410 Gone): the watcher relists, and what
    // vanished meanwhile is removed by the new snapshot.
    let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired", "message": "too old resource version"});
    answer(
        &mut handle,
        true,
        Some("15"),
        200,
        events(&[("ERROR", gone)]),
    )
    .await;
    answer(
        &mut handle,
        false,
        None,
        200,
        list("30", vec![pod("c", "uc", "14", "0")]),
    )
    .await;
    // c changed spec above and is unchanged now; a (ua-2) vanished.
    expect(&mut updates, WAIT, PodOperation::Remove, &["a"]).await;
    assert_eq!(names(&config.merged_pods()), ["c"]);

    // And watches again from the new list's version.
    answer(
        &mut handle,
        true,
        Some("30"),
        200,
        events(&[("ADDED", pod("d", "ud", "31", "0"))]),
    )
    .await;
    expect(&mut updates, WAIT, PodOperation::Add, &["d"]).await;
}

#[tokio::test]
async fn failed_initial_list_is_retried_and_the_source_is_not_seen_until_it_succeeds() {
    init_tracing();
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(mock, "default");
    let (config, mut updates) = PodConfig::builder(NODE)
        .source(ApiServerSource::new(client, NODE))
        .start();
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "reason": "InternalError", "message": "boom"});
    answer(
        &mut handle,
        false,
        None,
        500,
        serde_json::to_vec(&status).unwrap(),
    )
    .await;
    expect_quiet(&mut updates, Duration::from_millis(300)).await;
    assert!(!config.sources_ready());
    // Retried after the backoff.
    answer(&mut handle, false, None, 200, list("1", vec![])).await;
    expect(&mut updates, WAIT, PodOperation::Add, &[]).await;
    assert!(config.sources_ready());
}
