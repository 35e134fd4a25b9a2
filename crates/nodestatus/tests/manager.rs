//! The node status manager against a fake API server (kube-rs's mock
//! service): registration, AlreadyExists reconciliation, patches only when
//! the status changed or the report period passed, re-registration of a
//! deleted Node, retries, backoff and stop. Time is paused: waits cost
//! nothing and are measured exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kubelet_nodestatus::{Error, NodeConfig, NodeStatusManager, StaticInputs, UpdateOutcome};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

const NODES: &str = "/api/v1/nodes";
const NODE: &str = "/api/v1/nodes/node-a";
const STATUS: &str = "/api/v1/nodes/node-a/status";
const SMP: &str = "application/strategic-merge-patch+json";

fn manager(config: NodeConfig) -> (NodeStatusManager, Arc<StaticInputs>, Handle) {
    init_tracing();
    let (client, handle) = client();
    let inputs = Arc::new(StaticInputs::new(snapshot()));
    // Heartbeats follow the paused clock.
    let start = Instant::now();
    let manager = NodeStatusManager::new(client, config, inputs.clone()).with_clock(move || {
        let elapsed = k8s_openapi::jiff::SignedDuration::try_from(start.elapsed()).unwrap();
        Time(Timestamp::from_second(1_700_000_000).unwrap() + elapsed)
    });
    (manager, inputs, handle)
}

/// The API server's side of a create: the object with a uid and version.
fn created(mut body: Value) -> Value {
    body["metadata"]["uid"] = json!("uid-1");
    body["metadata"]["resourceVersion"] = json!("1");
    body
}

/// Answers a PATCH of the status by applying it to `state`.
fn answer_patch(req: Req, state: &mut Value) -> Value {
    req.expect("PATCH", STATUS);
    assert_eq!(req.content_type, SMP);
    let patch = req.body.clone();
    apply_patch(state, &patch);
    req.respond(200, state);
    patch
}

#[tokio::test(start_paused = true)]
async fn registers_then_patches_only_on_change_or_report_period() {
    let (manager, inputs, mut api) = manager(NodeConfig::new("node-a"));
    let mut sent = manager.subscribe();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(manager.run(stop_rx));

    // Registration: a create of the initial node.
    let req = next(&mut api).await;
    req.expect("POST", NODES);
    let body = req.body.clone();
    assert_eq!(
        body["metadata"]["labels"]["kubernetes.io/hostname"],
        "node-a"
    );
    assert_eq!(
        body["metadata"]["annotations"]["volumes.kubernetes.io/controller-managed-attach-detach"],
        "true"
    );
    assert_eq!(condition(&body, "Ready")["status"], "True");
    assert_eq!(
        body["status"]["nodeInfo"]["containerRuntimeVersion"],
        "containerd://1.7.24"
    );
    let mut state = created(body);
    req.respond(201, &state);

    // The first status update follows at once: read from the cache, then
    // patched because nothing was reported yet.
    let node = tokio::time::timeout(WAIT, sent.wait_for(|n| n.is_some()))
        .await
        .expect("nothing sent")
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(node.metadata.uid.as_deref(), Some("uid-1"));

    // The first status update follows at once, read from the API server's
    // cache. The Node was created with this very status in the same second:
    // nothing to send.
    let req = next(&mut api).await;
    req.expect("GET", NODE);
    assert!(req.uri.contains("resourceVersion=0"), "{req:?}");
    req.respond(200, &state);

    // Nothing changes: GETs every 10 s (+ up to 4 %), no patch.
    let mut last = Instant::now();
    for _ in 0..3 {
        let req = next(&mut api).await;
        req.expect("GET", NODE);
        let waited = last.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited <= Duration::from_millis(10_400),
            "{waited:?}"
        );
        last = Instant::now();
        req.respond(200, &state);
    }

    // Memory pressure: the next update patches it.
    inputs.update(|s| s.pressure.memory = true);
    let req = next(&mut api).await;
    req.expect("GET", NODE);
    req.respond(200, &state);
    let req = next(&mut api).await;
    let patch = answer_patch(req, &mut state);
    let mem: Vec<&Value> = patch["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "MemoryPressure")
        .collect();
    assert_eq!(mem[0]["status"], "True", "{patch}");
    assert_eq!(mem[0]["reason"], "KubeletHasInsufficientMemory");
    assert_eq!(condition(&state, "MemoryPressure")["status"], "True");
    let pressure_patch = Instant::now();

    // No change again: the next patch waits for the 5 min report period.
    let mut gets = 0;
    loop {
        let req = next(&mut api).await;
        if req.method == "PATCH" {
            let since = pressure_patch.elapsed();
            assert!(since >= Duration::from_secs(300), "patched after {since:?}");
            assert!(since < Duration::from_secs(330), "patched after {since:?}");
            let patch = answer_patch(req, &mut state);
            // Only heartbeats moved.
            for c in patch["status"]["conditions"].as_array().unwrap() {
                let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
                assert_eq!(keys, ["lastHeartbeatTime", "type"], "{patch}");
            }
            break;
        }
        req.expect("GET", NODE);
        gets += 1;
        req.respond(200, &state);
    }
    assert!((28..=30).contains(&gets), "{gets} GETs between patches");

    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn already_exists_is_reconciled_with_a_patch() {
    let (manager, _inputs, mut api) = manager(NodeConfig::new("node-a"));
    let register = tokio::spawn(async move { manager.try_register().await });

    let req = next(&mut api).await;
    req.expect("POST", NODES);
    req.respond(
        409,
        &status(409, "AlreadyExists", "nodes \"node-a\" already exists"),
    );

    let req = next(&mut api).await;
    req.expect("GET", NODE);
    assert!(!req.uri.contains("resourceVersion"), "{req:?}");
    let mut state = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a", "uid": "old-uid", "resourceVersion": "7",
                     "labels": {"kubernetes.io/hostname": "stale", "team": "a"}},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"capacity": {"cpu": "2"}, "allocatable": {"cpu": "2"}}
    });
    req.respond(200, &state);

    let req = next(&mut api).await;
    let patch = answer_patch(req, &mut state);
    assert_eq!(
        patch["metadata"]["labels"]["kubernetes.io/hostname"],
        "node-a"
    );
    assert_eq!(patch["metadata"]["labels"]["kubernetes.io/os"], "linux");
    assert!(patch["metadata"]["labels"].get("team").is_none(), "{patch}");
    assert_eq!(
        patch["metadata"]["annotations"]["volumes.kubernetes.io/controller-managed-attach-detach"],
        "true"
    );
    assert!(patch.get("spec").is_none(), "{patch}");

    let node = done(register).await.unwrap();
    assert_eq!(node.metadata.uid.as_deref(), Some("old-uid"));
    let labels = node.metadata.labels.unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], "node-a");
    assert_eq!(labels["team"], "a");
}

#[tokio::test(start_paused = true)]
async fn already_exists_and_in_line_needs_no_patch() {
    let (manager, _inputs, mut api) = manager(NodeConfig::new("node-a"));
    let register = tokio::spawn(async move { manager.try_register().await });
    let req = next(&mut api).await;
    let existing = created(req.body.clone());
    req.respond(409, &status(409, "AlreadyExists", "exists"));
    let req = next(&mut api).await;
    req.expect("GET", NODE);
    req.respond(200, &existing);
    let node = done(register).await.unwrap();
    assert_eq!(node.metadata.uid.as_deref(), Some("uid-1"));
}

#[tokio::test(start_paused = true)]
async fn forbidden_registration_names_verb_and_resource_and_backs_off() {
    let (manager, _inputs, mut api) = manager(NodeConfig::new("node-a"));
    let manager = Arc::new(manager);

    // One attempt: the error says what the credentials lack.
    let m = manager.clone();
    let attempt = tokio::spawn(async move { m.try_register().await });
    let req = next(&mut api).await;
    req.expect("POST", NODES);
    req.respond(
        403,
        &status(
            403,
            "Forbidden",
            "nodes is forbidden: User \"system:anonymous\" cannot create resource \"nodes\"",
        ),
    );
    let err: Error = done(attempt).await.unwrap_err();
    assert!(err.is_forbidden());
    let text = err.to_string();
    assert!(text.contains("may not create nodes"), "{text}");

    // register() retries after 100 ms, then 200, 400, 800 ms.
    let (stop, mut stop_rx) = watch::channel(false);
    let m = manager.clone();
    let start = Instant::now();
    let register = tokio::spawn(async move { m.register(&mut stop_rx).await });
    let mut at = Vec::new();
    for _ in 0..4 {
        let req = next(&mut api).await;
        req.expect("POST", NODES);
        at.push(start.elapsed());
        req.respond(500, &status(500, "InternalError", "etcd down"));
    }
    let ms: Vec<u128> = at.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [100, 300, 700, 1500]);
    stop.send(true).unwrap();
    assert!(done(register).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn deleted_node_is_registered_again() {
    let (manager, _inputs, mut api) = manager(NodeConfig::new("node-a"));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(manager.run(stop_rx));

    let req = next(&mut api).await;
    req.expect("POST", NODES);
    let state = created(req.body.clone());
    req.respond(201, &state);
    let req = next(&mut api).await;
    req.expect("GET", NODE);
    req.respond(200, &state);

    // Someone deletes the Node: one GET finds nothing, no more retries,
    // and the next request is a create.
    let req = next(&mut api).await;
    req.expect("GET", NODE);
    req.respond(404, &status(404, "NotFound", "nodes \"node-a\" not found"));
    let req = next(&mut api).await;
    req.expect("POST", NODES);
    let state = created(req.body.clone());
    req.respond(201, &state);
    // And the status loop goes on.
    for _ in 0..2 {
        let req = next(&mut api).await;
        req.expect("GET", NODE);
        req.respond(200, &state);
    }

    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn deleted_node_is_left_alone_when_asked() {
    let mut config = NodeConfig::new("node-a");
    config.register_node = false;
    let (manager, _inputs, mut api) = manager(config);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(manager.run(stop_rx));

    // Without register_node the loop starts with a status update.
    for _ in 0..2 {
        let req = next(&mut api).await;
        req.expect("GET", NODE);
        req.respond(404, &status(404, "NotFound", "not found"));
    }
    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn failed_tries_are_retried_fresh_and_call_the_hook() {
    let hook_calls = Arc::new(AtomicUsize::new(0));
    let calls = hook_calls.clone();
    let (manager, _inputs, mut api) = manager(NodeConfig::new("node-a"));
    let manager = manager.with_on_repeated_heartbeat_failure(move || {
        calls.fetch_add(1, Ordering::SeqCst);
    });
    let update = tokio::spawn(async move { manager.update_node_status().await });
    for i in 0..5 {
        let req = next(&mut api).await;
        req.expect("GET", NODE);
        // The first try reads the cache, the others read fresh.
        assert_eq!(req.uri.contains("resourceVersion=0"), i == 0, "{req:?}");
        req.respond(500, &status(500, "InternalError", "boom"));
    }
    let err = done(update).await.unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { tries: 5, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("get nodes \"node-a\""), "{err}");
    assert_eq!(hook_calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn unchanged_status_is_not_patched_within_the_report_period() {
    let (manager, _inputs, mut api) = manager(NodeConfig::new("node-a"));
    let manager = Arc::new(manager);
    let m = manager.clone();
    let register = tokio::spawn(async move { m.try_register().await });
    let req = next(&mut api).await;
    let mut state = created(req.body.clone());
    req.respond(201, &state);
    done(register).await.unwrap();

    // 10 s later the first update patches the heartbeats (nothing was
    // reported yet); 10 s after that the second does not.
    tokio::time::advance(Duration::from_secs(10)).await;
    let m = manager.clone();
    let update = tokio::spawn(async move { m.update_node_status().await });
    next(&mut api).await.respond(200, &state);
    answer_patch(next(&mut api).await, &mut state);
    assert!(matches!(
        done(update).await.unwrap(),
        UpdateOutcome::Patched(_)
    ));

    tokio::time::advance(Duration::from_secs(10)).await;
    let m = manager.clone();
    let update = tokio::spawn(async move { m.update_node_status().await });
    next(&mut api).await.respond(200, &state);
    assert_eq!(done(update).await.unwrap(), UpdateOutcome::Unchanged);

    // Until the report period has passed.
    tokio::time::advance(Duration::from_secs(300)).await;
    let m = manager.clone();
    let update = tokio::spawn(async move { m.update_node_status().await });
    next(&mut api).await.respond(200, &state);
    answer_patch(next(&mut api).await, &mut state);
    assert!(matches!(
        done(update).await.unwrap(),
        UpdateOutcome::Patched(_)
    ));
}

/// One status update of `manager`: the GET answered with `state`, then,
/// when `patches` holds, the PATCH applied to it (after `failures` PATCHes
/// answered 500, each followed by a fresh GET).
async fn update_once(
    manager: &Arc<NodeStatusManager>,
    api: &mut Handle,
    state: &mut Value,
    patches: bool,
    failures: usize,
) {
    tokio::time::advance(Duration::from_secs(10)).await;
    let m = manager.clone();
    let update = tokio::spawn(async move { m.update_node_status().await });
    for _ in 0..failures {
        next(api).await.respond(200, state);
        let req = next(api).await;
        req.expect("PATCH", STATUS);
        req.respond(500, &status(500, "InternalError", "etcd down"));
    }
    next(api).await.respond(200, state);
    if patches {
        answer_patch(next(api).await, state);
    }
    done(update).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn node_events_are_recorded_once_per_transition() {
    use kubelet_container::events::{EventType, FakeRecorder, node_ref};
    use kubelet_nodestatus::RuntimeSync;

    let events = Arc::new(FakeRecorder::new());
    let (manager, inputs, mut api) = manager(NodeConfig::new("node-a"));
    let manager = Arc::new(manager.with_event_recorder(events.clone()));
    let m = manager.clone();
    let register = tokio::spawn(async move { m.try_register().await });
    let req = next(&mut api).await;
    let mut state = created(req.body.clone());
    req.respond(201, &state);
    done(register).await.unwrap();

    // Registration (upstream `initialNode`): the pressure conditions leave
    // Unknown; the Ready condition is new, which upstream's ReadyCondition
    // adds without an event.
    let registered = events.take();
    let strings: Vec<String> = registered.iter().map(ToString::to_string).collect();
    assert_eq!(
        strings,
        [
            "Normal NodeHasSufficientMemory Node node-a status is now: NodeHasSufficientMemory",
            "Normal NodeHasNoDiskPressure Node node-a status is now: NodeHasNoDiskPressure",
            "Normal NodeHasSufficientPID Node node-a status is now: NodeHasSufficientPID",
        ]
    );
    // About the Node: kind Node, its name as name and UID, no namespace.
    assert!(registered.iter().all(|e| e.object == node_ref("node-a")));

    // Heartbeats alone: no event.
    update_once(&manager, &mut api, &mut state, true, 0).await;
    assert_eq!(events.strings(), Vec::<String>::new());

    // The runtime goes down: NodeNotReady once, however many updates follow.
    inputs.update(|s| s.runtime_health.sync = RuntimeSync::Down);
    update_once(&manager, &mut api, &mut state, true, 0).await;
    assert_eq!(condition(&state, "Ready")["status"], "False");
    update_once(&manager, &mut api, &mut state, false, 0).await;
    update_once(&manager, &mut api, &mut state, false, 0).await;
    assert_eq!(
        events.strings(),
        ["Normal NodeNotReady Node node-a status is now: NodeNotReady"]
    );
    events.take();

    // Back up, with a PATCH that fails first: NodeReady once, when the API
    // server has it.
    inputs.update(|s| s.runtime_health.sync = RuntimeSync::Up);
    update_once(&manager, &mut api, &mut state, true, 1).await;
    update_once(&manager, &mut api, &mut state, false, 0).await;
    assert_eq!(
        events.strings(),
        ["Normal NodeReady Node node-a status is now: NodeReady"]
    );
    events.take();

    // Pressure comes and goes: one event per flip of each condition.
    inputs.update(|s| {
        s.pressure.memory = true;
        s.pressure.disk = true;
        s.pressure.pid = true;
    });
    update_once(&manager, &mut api, &mut state, true, 0).await;
    update_once(&manager, &mut api, &mut state, false, 0).await;
    inputs.update(|s| s.pressure.memory = false);
    update_once(&manager, &mut api, &mut state, true, 0).await;
    let reasons: Vec<String> = events.take().into_iter().map(|e| e.reason).collect();
    assert_eq!(
        reasons,
        [
            "NodeHasInsufficientMemory",
            "NodeHasDiskPressure",
            "NodeHasInsufficientPID",
            "NodeHasSufficientMemory"
        ]
    );

    // A reboot (a new boot ID) is a Warning.
    inputs.update(|s| {
        if let Ok(m) = &mut s.machine {
            m.boot_id = "boot-2".into();
        }
    });
    update_once(&manager, &mut api, &mut state, true, 0).await;
    let rebooted = events.take();
    assert_eq!(rebooted.len(), 1, "{rebooted:?}");
    assert_eq!(rebooted[0].event_type, EventType::Warning);
    assert_eq!(rebooted[0].reason, "Rebooted");
    assert_eq!(
        rebooted[0].message,
        "Node node-a has been rebooted, boot id: boot-2"
    );
}
