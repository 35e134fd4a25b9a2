//! The recorder against a fake API server (kube-rs's mock service): an
//! event created as upstream writes it, an identical one PATCHed with its
//! count, similar ones combined, the spam filter, a full queue, API errors
//! and the write rate. Time is paused: waits cost nothing and are measured
//! exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubelet_container::events::{
    EventRecorder, EventType, ObjectReference, container_ref, node_ref, reason,
};
use kubelet_events::{Recorder, RecorderBuilder, RecorderTask, Stats};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

const EVENTS: &str = "/api/v1/namespaces/default/events";
/// The fake wall clock starts here: 2023-11-14T22:13:20Z.
const BASE_SECS: u64 = 1_700_000_000;

fn recorder(
    configure: impl FnOnce(RecorderBuilder) -> RecorderBuilder,
) -> (Recorder, RecorderTask, Handle) {
    init_tracing();
    let (client, handle) = client();
    let start = Instant::now();
    let builder = Recorder::builder(client, "node-a")
        .clock(move || SystemTime::UNIX_EPOCH + Duration::from_secs(BASE_SECS) + start.elapsed());
    let (r, task) = configure(builder).build().unwrap();
    (r, task, handle)
}

fn spawn(task: RecorderTask) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stop_rx) = watch::channel(false);
    (stop, tokio::spawn(task.run(stop_rx)))
}

fn app() -> ObjectReference {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("uid-web".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    container_ref(&pod, "app")
}

fn event_path(body: &Value) -> String {
    format!("{EVENTS}/{}", body["metadata"]["name"].as_str().unwrap())
}

async fn stats_settle(r: &Recorder, want: impl Fn(&Stats) -> bool) -> Stats {
    for _ in 0..100 {
        let s = r.stats();
        if want(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r.stats()
}

#[tokio::test(start_paused = true)]
async fn creates_an_event_as_upstream_writes_it() {
    let (r, task, mut api) = recorder(|b| b);
    let (stop, task) = spawn(task);
    r.event(
        &app(),
        EventType::Normal,
        reason::PULLING_IMAGE,
        "Pulling image \"busybox\"".into(),
    );
    let req = next(&mut api).await;
    req.expect("POST", EVENTS);
    let b = &req.body;
    assert_eq!(b["apiVersion"], "v1");
    assert_eq!(b["kind"], "Event");
    // Upstream: <object name>.<hex UnixNano>.
    assert_eq!(b["metadata"]["name"], "web.17979cfe362a0000");
    assert_eq!(b["metadata"]["namespace"], "default");
    assert_eq!(
        b["involvedObject"],
        json!({"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": "default",
               "uid": "uid-web", "fieldPath": "spec.containers{app}"})
    );
    assert_eq!(b["reason"], "Pulling");
    assert_eq!(b["message"], "Pulling image \"busybox\"");
    assert_eq!(b["type"], "Normal");
    assert_eq!(b["count"], 1);
    assert_eq!(
        b["source"],
        json!({"component": "kubelet", "host": "node-a"})
    );
    assert_eq!(b["reportingComponent"], "kubelet");
    assert_eq!(b["reportingInstance"], "node-a");
    assert_eq!(b["firstTimestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(b["lastTimestamp"], "2023-11-14T22:13:20Z");
    assert!(b["metadata"].get("resourceVersion").is_none());
    req.echo("1");

    // A node event goes to default, about the Node (no namespace); two
    // events of the same nanosecond still get different names.
    r.event(
        &node_ref("node-a"),
        EventType::Normal,
        reason::STARTING_KUBELET,
        "Starting kubelet.".into(),
    );
    let req = next(&mut api).await;
    req.expect("POST", EVENTS);
    assert_eq!(req.body["metadata"]["name"], "node-a.17979cfe362a0001");
    assert_eq!(
        req.body["involvedObject"],
        json!({"kind": "Node", "name": "node-a", "uid": "node-a"})
    );
    req.echo("2");

    // Upstream `AnnotatedEventf` (the eviction manager's Evicted): the
    // annotations are the Event's.
    r.annotated_event(
        &app(),
        &[("starved_resource".to_owned(), "memory".to_owned())].into(),
        EventType::Warning,
        reason::EVICTED,
        "The node was low on resource: memory. ".into(),
    );
    let req = next(&mut api).await;
    req.expect("POST", EVENTS);
    assert_eq!(
        req.body["metadata"]["annotations"],
        json!({"starved_resource": "memory"})
    );
    assert_eq!(req.body["reason"], "Evicted");
    req.echo("3");

    let s = stats_settle(&r, |s| s.created == 3).await;
    assert_eq!(
        s,
        Stats {
            created: 3,
            ..Stats::default()
        }
    );
    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn an_identical_event_is_patched_with_its_count() {
    let (r, task, mut api) = recorder(|b| b);
    let (stop, task) = spawn(task);
    let back_off = || {
        r.event(
            &app(),
            EventType::Warning,
            reason::BACK_OFF_START_CONTAINER,
            "Back-off restarting failed container app in pod web_default(uid-web)".into(),
        )
    };
    back_off();
    let req = next(&mut api).await;
    req.expect("POST", EVENTS);
    let created = req.echo("1");

    tokio::time::sleep(Duration::from_secs(5)).await;
    back_off();
    let req = next(&mut api).await;
    req.expect("PATCH", &event_path(&created));
    assert_eq!(req.content_type, "application/strategic-merge-patch+json");
    assert_eq!(
        req.body,
        json!({"count": 2, "lastTimestamp": "2023-11-14T22:13:25Z",
               "message": "Back-off restarting failed container app in pod web_default(uid-web)"})
    );
    let mut patched = created.clone();
    patched["count"] = json!(2);
    patched["lastTimestamp"] = req.body["lastTimestamp"].clone();
    patched["metadata"]["resourceVersion"] = json!("2");
    req.respond(200, &patched);

    // The event expired meanwhile: the PATCH finds nothing, so it is
    // created again under its name, with its count.
    tokio::time::sleep(Duration::from_secs(5)).await;
    back_off();
    let req = next(&mut api).await;
    req.expect("PATCH", &event_path(&created));
    assert_eq!(req.body["count"], 3);
    req.respond(404, &status(404, "NotFound", "events \"web\" not found"));
    let req = next(&mut api).await;
    req.expect("POST", EVENTS);
    assert_eq!(req.body["metadata"]["name"], created["metadata"]["name"]);
    assert_eq!(req.body["count"], 3);
    assert_eq!(req.body["firstTimestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(req.body["lastTimestamp"], "2023-11-14T22:13:30Z");
    assert!(req.body["metadata"].get("resourceVersion").is_none());
    req.echo("3");

    // Created twice (the second time after the PATCH found nothing),
    // patched once.
    let s = stats_settle(&r, |s| s.created == 2).await;
    assert_eq!((s.created, s.patched, s.failed), (2, 1, 0));
    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn the_tenth_similar_event_is_combined() {
    let (r, task, mut api) = recorder(|b| b);
    let (stop, task) = spawn(task);
    let unhealthy = |i: usize| {
        r.event(
            &app(),
            EventType::Warning,
            reason::CONTAINER_UNHEALTHY,
            format!("Liveness probe failed: attempt {i}"),
        )
    };
    for i in 0..9 {
        unhealthy(i);
        let req = next(&mut api).await;
        req.expect("POST", EVENTS);
        assert_eq!(
            req.body["message"],
            format!("Liveness probe failed: attempt {i}")
        );
        req.echo("1");
    }
    unhealthy(9);
    let req = next(&mut api).await;
    req.expect("POST", EVENTS);
    assert_eq!(
        req.body["message"],
        "(combined from similar events): Liveness probe failed: attempt 9"
    );
    assert_eq!(req.body["reason"], "Unhealthy");
    assert_eq!(req.body["type"], "Warning");
    assert_eq!(req.body["count"], 1);
    assert!(
        req.body["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("web.")
    );
    let combined = req.echo("2");

    // The next similar one counts on the combined event.
    unhealthy(10);
    let req = next(&mut api).await;
    req.expect("PATCH", &event_path(&combined));
    assert_eq!(req.body["count"], 2);
    assert_eq!(
        req.body["message"],
        "(combined from similar events): Liveness probe failed: attempt 10"
    );
    let mut patched = combined.clone();
    patched["count"] = json!(2);
    req.respond(200, &patched);
    stats_settle(&r, |s| s.patched == 1).await;
    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn the_spam_filter_lets_25_events_per_object_through_then_one_per_5_minutes() {
    let (r, task, mut api) = recorder(|b| b);
    let (stop, task) = spawn(task);
    // Distinct reasons: neither counted nor combined, only filtered.
    for i in 0..30 {
        r.event(&app(), EventType::Normal, &format!("Reason{i}"), "m".into());
    }
    for i in 0..25 {
        let req = next(&mut api).await;
        req.expect("POST", EVENTS);
        assert_eq!(req.body["reason"], format!("Reason{i}"));
        req.echo("1");
    }
    assert!(quiet(&mut api, Duration::from_secs(60)).await);
    assert_eq!(r.stats().filtered, 5);
    // Another object is not held back.
    r.event(&node_ref("node-a"), EventType::Normal, "Other", "m".into());
    next(&mut api).await.echo("2");

    // Five minutes after the burst, one more token.
    tokio::time::sleep(Duration::from_secs(300)).await;
    r.event(&app(), EventType::Normal, "Later", "m".into());
    r.event(&app(), EventType::Normal, "TooSoon", "m".into());
    let req = next(&mut api).await;
    assert_eq!(req.body["reason"], "Later");
    req.echo("3");
    assert!(quiet(&mut api, Duration::from_secs(60)).await);
    assert_eq!(r.stats().filtered, 6);
    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_events_without_blocking() {
    let (r, task, mut api) = recorder(|b| b.queue_capacity(2));
    // The task is not running yet: the queue fills.
    for i in 0..5 {
        r.event(&app(), EventType::Normal, &format!("R{i}"), "m".into());
    }
    assert_eq!(r.stats().dropped, 3);
    let (stop, task) = spawn(task);
    for i in 0..2 {
        let req = next(&mut api).await;
        assert_eq!(req.body["reason"], format!("R{i}"));
        req.echo("1");
    }
    assert!(quiet(&mut api, Duration::from_secs(60)).await);
    stop.send(true).unwrap();
    done(task).await;
    // The task is gone: events are dropped, still without blocking.
    r.event(&app(), EventType::Normal, "After", "m".into());
    assert_eq!(r.stats().dropped, 4);
}

#[tokio::test(start_paused = true)]
async fn api_errors_are_logged_and_retries_are_bounded() {
    let (r, task, mut api) = recorder(|b| b.retries(3, Duration::from_secs(10)));
    let (stop, task) = spawn(task);

    // An answer from the API server is final: no retry.
    r.event(&app(), EventType::Normal, "Refused", "m".into());
    next(&mut api).await.respond(
        403,
        &status(
            403,
            "Forbidden",
            "events is forbidden: User \"system:node:node-a\" cannot create",
        ),
    );
    // A lost request is tried again: after a random part of 10 s, then 10 s.
    r.event(&app(), EventType::Normal, "Lost", "m".into());
    let req = next(&mut api).await;
    assert_eq!(req.body["reason"], "Lost");
    let mut at = Instant::now();
    req.fail();
    let req = next(&mut api).await;
    assert_eq!(req.body["reason"], "Lost");
    assert!(
        at.elapsed() <= Duration::from_secs(10),
        "{:?}",
        at.elapsed()
    );
    at = Instant::now();
    req.fail();
    let req = next(&mut api).await;
    assert_eq!(req.body["reason"], "Lost");
    assert_eq!(at.elapsed(), Duration::from_secs(10));
    req.fail();
    let s = stats_settle(&r, |s| s.failed == 2).await;
    assert_eq!((s.created, s.failed), (0, 2));

    // While writes fail, each event is tried once, not three times.
    r.event(&app(), EventType::Normal, "Outage", "m".into());
    let req = next(&mut api).await;
    assert_eq!(req.body["reason"], "Outage");
    req.fail();
    r.event(&app(), EventType::Normal, "Back", "m".into());
    let req = next(&mut api).await;
    assert_eq!(req.body["reason"], "Back");
    req.echo("1");
    // Once a write succeeds, retries are back.
    r.event(&app(), EventType::Normal, "Blip", "m".into());
    next(&mut api).await.fail();
    let req = next(&mut api).await;
    assert_eq!(req.body["reason"], "Blip");
    req.echo("2");
    let s = stats_settle(&r, |s| s.created == 2).await;
    assert_eq!((s.created, s.failed), (2, 3));

    // Stop ends a wait between tries.
    r.event(&app(), EventType::Normal, "Stopped", "m".into());
    next(&mut api).await.fail();
    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn writes_follow_the_event_qps_and_burst() {
    let (r, task, mut api) = recorder(|b| b.rate_limit(1, 2));
    let (stop, task) = spawn(task);
    let start = Instant::now();
    for i in 0..4 {
        r.event(&app(), EventType::Normal, &format!("R{i}"), "m".into());
    }
    let mut at = Vec::new();
    for _ in 0..4 {
        let req = next(&mut api).await;
        at.push(start.elapsed());
        req.echo("1");
    }
    assert_eq!(at[0], Duration::ZERO);
    assert_eq!(at[1], Duration::ZERO);
    assert!(
        at[2] >= Duration::from_secs(1) && at[2] < Duration::from_millis(1100),
        "{at:?}"
    );
    assert!(
        at[3] >= Duration::from_secs(2) && at[3] < Duration::from_millis(2100),
        "{at:?}"
    );
    stop.send(true).unwrap();
    done(task).await;
}

#[tokio::test(start_paused = true)]
async fn the_task_ends_when_every_recorder_is_dropped() {
    let (r, task, mut api) = recorder(|b| b);
    let (_stop, task) = spawn(task);
    r.event(&app(), EventType::Normal, "Last", "m".into());
    drop(r);
    next(&mut api).await.echo("1");
    done(task).await;
}

#[tokio::test]
async fn an_empty_node_name_or_queue_is_refused() {
    let (client, _h) = client();
    assert!(Recorder::new(client.clone(), "").is_err());
    let e = Recorder::builder(client.clone(), "n")
        .queue_capacity(0)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("queue"), "{e}");
    let e = Recorder::builder(client, "n")
        .rate_limit(5, 0)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("burst"), "{e}");
}
