//! The lease controller against a fake API server (kube-rs's mock
//! service): create then renew, an existing lease getting its owner, a
//! conflict read again, a missing Node holding back the create, backoff,
//! repeated failures, a deleted lease and stop. Time is paused: waits cost
//! nothing and are measured exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kubelet_nodelease::LeaseController;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-a";
const NODE: &str = "/api/v1/nodes/node-a";

fn controller() -> (LeaseController, Handle) {
    init_tracing();
    let (client, handle) = client();
    // renewTime follows the paused clock.
    let start = Instant::now();
    let c = LeaseController::new(client, "node-a", 40).with_clock(move || {
        let elapsed = SignedDuration::try_from(start.elapsed()).unwrap();
        MicroTime(Timestamp::from_second(1_700_000_000).unwrap() + elapsed)
    });
    (c, handle)
}

fn node() -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "uid": "node-uid"}})
}

fn with_version(mut lease: Value, rv: &str) -> Value {
    lease["metadata"]["resourceVersion"] = json!(rv);
    lease
}

fn renew_time(lease: &Value) -> Timestamp {
    lease["spec"]["renewTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Answers the first round: no lease, the Node exists, the create.
async fn create_round(api: &mut Handle) -> Value {
    let req = next(api).await;
    req.expect("GET", LEASE);
    req.respond(404, &status(404, "NotFound", "leases \"node-a\" not found"));
    let req = next(api).await;
    req.expect("GET", NODE);
    req.respond(200, &node());
    let req = next(api).await;
    req.expect("POST", LEASES);
    let lease = with_version(req.body.clone(), "1");
    req.respond(201, &lease);
    lease
}

#[tokio::test(start_paused = true)]
async fn creates_owned_lease_then_renews_every_quarter_of_its_duration() {
    let (controller, mut api) = controller();
    assert_eq!(controller.renew_interval(), Duration::from_secs(10));
    let mut renewed = controller.subscribe();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(controller.run(stop_rx));

    let created = create_round(&mut api).await;
    assert_eq!(created["metadata"]["name"], "node-a");
    assert_eq!(created["metadata"]["namespace"], "kube-node-lease");
    assert_eq!(created["spec"]["holderIdentity"], "node-a");
    assert_eq!(created["spec"]["leaseDurationSeconds"], 40);
    // MicroTime: microseconds on the wire.
    let rt = created["spec"]["renewTime"].as_str().unwrap();
    assert_eq!(rt.len(), "2023-11-14T22:13:20.000000Z".len(), "{rt}");
    assert_eq!(
        created["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "node-uid"}])
    );
    tokio::time::timeout(WAIT, renewed.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        renewed
            .borrow_and_update()
            .as_ref()
            .unwrap()
            .metadata
            .resource_version
            .as_deref(),
        Some("1")
    );

    // Renewals: updates of the last lease written, no GET, every 10 s.
    let mut last = created;
    let mut at = Instant::now();
    for rv in 2..5 {
        let req = next(&mut api).await;
        req.expect("PUT", LEASE);
        let waited = at.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited <= Duration::from_millis(10_400),
            "{waited:?}"
        );
        at = Instant::now();
        let body = req.body.clone();
        assert_eq!(
            body["metadata"]["resourceVersion"],
            last["metadata"]["resourceVersion"]
        );
        assert_eq!(
            body["metadata"]["ownerReferences"],
            last["metadata"]["ownerReferences"]
        );
        assert!(
            renew_time(&body) >= renew_time(&last) + SignedDuration::from_secs(10),
            "{body}"
        );
        last = with_version(body, &rv.to_string());
        req.respond(200, &last);
        tokio::time::timeout(WAIT, renewed.changed())
            .await
            .unwrap()
            .unwrap();
        let seen = renewed.borrow_and_update().clone().unwrap();
        assert_eq!(seen.metadata.resource_version, Some(rv.to_string()));
    }

    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn existing_lease_without_owner_gets_one_at_renewal() {
    let (mut controller, mut api) = controller();
    let sync = tokio::spawn(async move {
        controller.sync().await;
        controller
    });
    let req = next(&mut api).await;
    req.expect("GET", LEASE);
    req.respond(
        200,
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "node-a", "namespace": "kube-node-lease", "resourceVersion": "5"},
                "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 40}}),
    );
    // Found, not created: renewed at once, with the owner looked up.
    let req = next(&mut api).await;
    req.expect("GET", NODE);
    req.respond(200, &node());
    let req = next(&mut api).await;
    req.expect("PUT", LEASE);
    assert_eq!(req.body["metadata"]["resourceVersion"], "5");
    assert_eq!(
        req.body["metadata"]["ownerReferences"][0]["uid"],
        "node-uid"
    );
    assert!(req.body["spec"]["renewTime"].is_string());
    let body = with_version(req.body.clone(), "6");
    req.respond(200, &body);
    let controller = done(sync).await;
    let seen = controller.subscribe().borrow().clone().unwrap();
    assert_eq!(seen.metadata.resource_version.as_deref(), Some("6"));
}

#[tokio::test(start_paused = true)]
async fn conflict_reads_the_lease_again_and_retries() {
    let (controller, mut api) = controller();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(controller.run(stop_rx));
    create_round(&mut api).await;

    let req = next(&mut api).await;
    req.expect("PUT", LEASE);
    assert_eq!(req.body["metadata"]["resourceVersion"], "1");
    req.respond(
        409,
        &status(409, "Conflict", "the object has been modified"),
    );
    let req = next(&mut api).await;
    req.expect("GET", LEASE);
    let fresh = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "node-a", "namespace": "kube-node-lease", "resourceVersion": "9",
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "node-uid"}]},
        "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 40}});
    req.respond(200, &fresh);
    let req = next(&mut api).await;
    req.expect("PUT", LEASE);
    assert_eq!(req.body["metadata"]["resourceVersion"], "9");
    let body = with_version(req.body.clone(), "10");
    req.respond(200, &body);

    // The next round renews from version 10.
    let req = next(&mut api).await;
    req.expect("PUT", LEASE);
    assert_eq!(req.body["metadata"]["resourceVersion"], "10");
    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn no_lease_before_the_node_exists() {
    let (controller, mut api) = controller();
    let (stop, stop_rx) = watch::channel(false);
    let renewed = controller.subscribe();
    let task = tokio::spawn(controller.run(stop_rx));
    let mut at = Instant::now();
    for _ in 0..2 {
        let req = next(&mut api).await;
        req.expect("GET", LEASE);
        let waited = at.elapsed();
        at = Instant::now();
        req.respond(404, &status(404, "NotFound", "not found"));
        let req = next(&mut api).await;
        req.expect("GET", NODE);
        req.respond(404, &status(404, "NotFound", "nodes \"node-a\" not found"));
        // Not created: the next try is the next round's.
        assert!(
            waited == Duration::ZERO || waited >= Duration::from_secs(10),
            "{waited:?}"
        );
    }
    assert!(renewed.borrow().is_none());
    // Once the Node exists the lease is created.
    create_round(&mut api).await;
    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn ensuring_the_lease_backs_off_to_seven_seconds() {
    let (controller, mut api) = controller();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(controller.run(stop_rx));
    let mut last = Instant::now();
    let mut waits = Vec::new();
    for i in 0..9 {
        let req = next(&mut api).await;
        req.expect("GET", LEASE);
        if i > 0 {
            waits.push(last.elapsed().as_millis());
        }
        last = Instant::now();
        req.respond(500, &status(500, "InternalError", "etcd is down"));
    }
    assert_eq!(waits, [200, 400, 800, 1600, 3200, 6400, 7000, 7000]);
    // Stop ends the backoff too.
    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn repeated_update_failures_call_the_hook_then_fall_back_to_ensure() {
    let (controller, mut api) = controller();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let controller = controller.with_on_repeated_heartbeat_failure(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(controller.run(stop_rx));
    let created = create_round(&mut api).await;

    // Five immediate tries from the latest lease...
    for _ in 0..5 {
        let req = next(&mut api).await;
        req.expect("PUT", LEASE);
        req.respond(500, &status(500, "InternalError", "timeout"));
    }
    // ...then the lease is read again and renewed.
    let req = next(&mut api).await;
    req.expect("GET", LEASE);
    // Every failure after the first called the hook.
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    req.respond(200, &created);
    let req = next(&mut api).await;
    req.expect("PUT", LEASE);
    assert_eq!(req.body["metadata"]["resourceVersion"], "1");
    let body = with_version(req.body.clone(), "2");
    req.respond(200, &body);
    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn deleted_lease_is_created_again_without_doomed_retries() {
    let (controller, mut api) = controller();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(controller.run(stop_rx));
    create_round(&mut api).await;

    let req = next(&mut api).await;
    req.expect("PUT", LEASE);
    req.respond(404, &status(404, "NotFound", "leases \"node-a\" not found"));
    // Straight to ensure: read, owner, create.
    let again = create_round(&mut api).await;
    assert_eq!(again["metadata"]["ownerReferences"][0]["uid"], "node-uid");
    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn stop_ends_a_round_waiting_on_the_api_server() {
    let (controller, mut api) = controller();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(controller.run(stop_rx));
    let req = next(&mut api).await;
    req.expect("GET", LEASE);
    // Never answered.
    stop.send(true).unwrap();
    done(task).await;
    drop(req);
}
