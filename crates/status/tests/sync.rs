//! The status syncer against kube-rs's mock service (`tower-test`), whose
//! requests a fake API server answers: what is PATCHed (once, with the UID
//! precondition), what is not re-sent, what the merge keeps, the deletion
//! handshake, NotFound, errors and retries, static pods and their mirror
//! pods, and `run` itself.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hyper::{Request, Response};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, PodCondition,
    PodStatus,
};
use kube::client::Body;
use kubelet_status::{PodSyncOutcome, StatusError, StatusManager, StatusSync, phase};
use serde_json::{Value, json};

struct Fixture {
    api: Arc<FakeApi>,
    pods: Arc<FakePods>,
    safety: Arc<Safety>,
    statuses: Arc<StatusManager>,
    sync: StatusSync,
    handle: Handle,
}

fn fixture(could_run: bool) -> Fixture {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(mock, "default");
    let api = FakeApi::new();
    let pods = FakePods::new(&api);
    let safety = Safety::new(could_run);
    let statuses = Arc::new(StatusManager::default());
    let sync = StatusSync::new(client, Arc::clone(&statuses), pods.clone(), safety.clone());
    Fixture {
        api,
        pods,
        safety,
        statuses,
        sync,
        handle,
    }
}

impl Fixture {
    async fn round(&mut self, all: bool) -> (Vec<kubelet_status::PodSyncReport>, Vec<Seen>) {
        round(&mut self.sync, &mut self.handle, &self.api, all).await
    }
}

fn running(name: &str) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        image: "busybox".into(),
        ready: true,
        started: Some(true),
        state: Some(ContainerState {
            running: Some(ContainerStateRunning { started_at: None }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn exited(name: &str, code: i32) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        image: "busybox".into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cond(kind: &str, status: &str) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: status.into(),
        ..Default::default()
    }
}

fn kubelet_status(phase: &str, containers: Vec<ContainerStatus>, ready: bool) -> PodStatus {
    let r = if ready { "True" } else { "False" };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![
            cond("PodReadyToStartContainers", "True"),
            cond("Initialized", "True"),
            cond("ContainersReady", r),
            cond("Ready", r),
            cond("PodScheduled", "True"),
        ]),
        container_statuses: Some(containers),
        pod_ip: Some("10.0.0.7".into()),
        ..Default::default()
    }
}

fn only(seen: &[Seen]) -> Vec<String> {
    seen.iter().map(Seen::verb_path).collect()
}

const GET: &str = "GET /api/v1/namespaces/team/pods/web";
const PATCH: &str = "PATCH /api/v1/namespaces/team/pods/web/status";
const DELETE: &str = "DELETE /api/v1/namespaces/team/pods/web";

#[tokio::test]
async fn a_status_is_patched_once_with_the_uid_precondition() {
    let mut f = fixture(true);
    let pod = pod_json("web", "u1", "Pending");
    f.api.put(pod.clone());
    f.statuses
        .set_pod_status(
            &pod_of(&pod),
            kubelet_status(phase::RUNNING, vec![running("app")], true),
        )
        .unwrap();
    assert_eq!(f.statuses.version("u1"), Some(1));

    let (reports, seen) = f.round(false).await;
    assert_eq!(only(&seen), [GET, PATCH]);
    let patch = &seen[1];
    assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
    assert_eq!(patch.body["metadata"], json!({"uid": "u1"}));
    assert_eq!(patch.body["status"]["phase"], "Running");
    assert_eq!(patch.body["status"]["podIP"], "10.0.0.7");
    assert_eq!(reports.len(), 1);
    assert_eq!(
        reports[0].result.as_ref().unwrap(),
        &PodSyncOutcome::Synced {
            patched: true,
            deleted: false
        }
    );
    assert_eq!(f.sync.api_status_version("u1"), Some(1));
    let stored = f.api.pod("team", "web").unwrap().status.unwrap();
    assert_eq!(stored.phase.as_deref(), Some("Running"));
    assert_eq!(stored.container_statuses.unwrap()[0].name, "app");

    // Nothing new: no request, neither on a change round nor on the
    // periodic reconcile (the API now agrees).
    let (_, seen) = f.round(false).await;
    assert_eq!(only(&seen), Vec::<String>::new());
    let (_, seen) = f.round(true).await;
    assert_eq!(only(&seen), Vec::<String>::new());
}

#[tokio::test]
async fn an_unchanged_status_is_not_resent() {
    let mut f = fixture(true);
    let pod = pod_json("web", "u1", "Pending");
    f.api.put(pod.clone());
    let status = kubelet_status(phase::RUNNING, vec![running("app")], true);
    f.statuses
        .set_pod_status(&pod_of(&pod), status.clone())
        .unwrap();
    let (_, seen) = f.round(false).await;
    assert_eq!(only(&seen), [GET, PATCH]);

    // The same status again (new transition times, same meaning): no new
    // version, nothing sent.
    f.statuses
        .set_pod_status(&pod_of(&pod), status.clone())
        .unwrap();
    let _ = f.statuses.set("u1", status);
    assert_eq!(f.statuses.version("u1"), Some(1));
    let (reports, seen) = f.round(false).await;
    assert!(reports.is_empty());
    assert_eq!(only(&seen), Vec::<String>::new());

    // A status whose only difference the API server already has: GET,
    // no PATCH.
    f.api.put({
        let mut p = f.api.pods.lock().unwrap()["team/web"].clone();
        p["status"]["message"] = json!("from elsewhere");
        p
    });
    let mut s = f.statuses.get("u1").unwrap();
    s.message = Some("from elsewhere".into());
    f.statuses.set_pod_status(&pod_of(&pod), s).unwrap();
    assert_eq!(f.statuses.version("u1"), Some(2));
    let (reports, seen) = f.round(false).await;
    assert_eq!(only(&seen), [GET]);
    assert_eq!(
        reports[0].result.as_ref().unwrap(),
        &PodSyncOutcome::Synced {
            patched: false,
            deleted: false
        }
    );
    assert_eq!(f.sync.api_status_version("u1"), Some(2));
}

#[tokio::test]
async fn a_terminal_phase_in_the_api_is_not_regressed() {
    let mut f = fixture(false);
    let pod = pod_json("web", "u1", "Succeeded");
    f.api.put(pod.clone());
    // The kubelet (restarted, say) thinks the container runs again.
    let mut local = pod_of(&pod);
    local.status = None;
    f.statuses
        .set_pod_status(
            &local,
            kubelet_status(phase::RUNNING, vec![running("app")], true),
        )
        .unwrap();
    let (_, seen) = f.round(false).await;
    assert_eq!(only(&seen), [GET, PATCH]);
    let status = &seen[1].body["status"];
    assert!(
        status.get("phase").is_none(),
        "phase must not be patched: {status}"
    );
    let stored = f.api.pod("team", "web").unwrap().status.unwrap();
    assert_eq!(stored.phase.as_deref(), Some("Succeeded"));
    // And a terminal phase is never reported ready.
    let ready = stored
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("PodCompleted"))
    );
}

#[tokio::test]
async fn conditions_the_kubelet_does_not_own_survive_the_merge() {
    let mut f = fixture(true);
    let mut pod = pod_json("web", "u1", "Pending");
    pod["status"]["conditions"] = json!([
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"},
        {"type": "example.com/load-balancer", "status": "True", "reason": "Registered"},
        {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    ]);
    f.api.put(pod.clone());
    // A status that was made without the API's view (no old status): its
    // PodScheduled is stamped now.
    f.statuses.set(
        "u1",
        kubelet_status(phase::RUNNING, vec![running("app")], true),
    );
    let (_, seen) = f.round(false).await;
    assert_eq!(only(&seen), [GET, PATCH]);
    let patch = &seen[1].body["status"];
    assert!(
        !patch.to_string().contains("$patch"),
        "nothing may be deleted: {patch}"
    );
    let conditions = f
        .api
        .pod("team", "web")
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap();
    let by = |t: &str| conditions.iter().find(|c| c.type_ == t).cloned();
    let scheduled = by("PodScheduled").expect("PodScheduled kept");
    assert_eq!(scheduled.status, "True");
    assert_eq!(
        serde_json::to_value(&scheduled.last_transition_time).unwrap(),
        json!("2020-01-01T00:00:00Z"),
        "the scheduler's transition time is kept"
    );
    assert_eq!(
        by("example.com/load-balancer").unwrap().reason.as_deref(),
        Some("Registered")
    );
    assert_eq!(
        by("DisruptionTarget").unwrap().reason.as_deref(),
        Some("EvictionByEvictionAPI")
    );
    assert_eq!(by("Ready").unwrap().status, "True");
}

#[tokio::test]
async fn a_deleted_pod_is_removed_once_no_container_can_run() {
    let mut f = fixture(true);
    let mut pod = pod_json("web", "u1", "Running");
    pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T00:00:00Z");
    pod["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    f.api.put(pod.clone());
    let done = kubelet_status(phase::SUCCEEDED, vec![exited("app", 0)], false);
    f.statuses
        .set_pod_status(&pod_of(&pod), done.clone())
        .unwrap();

    // Containers could still run: the terminal phase is held back, and the
    // pod is not deleted, neither now nor on the periodic round.
    let (reports, seen) = f.round(false).await;
    assert_eq!(only(&seen), [GET, PATCH]);
    assert!(seen[1].body["status"].get("phase").is_none());
    assert_eq!(
        reports[0].result.as_ref().unwrap(),
        &PodSyncOutcome::Synced {
            patched: true,
            deleted: false
        }
    );
    let (_, seen) = f.round(true).await;
    assert!(!only(&seen).contains(&DELETE.to_owned()), "{seen:?}");
    assert_eq!(
        f.api
            .pod("team", "web")
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Running")
    );

    // They stopped: the periodic round reconciles, sends the terminal
    // phase, then deletes with grace 0 and the UID precondition.
    f.safety.set(false);
    let (reports, seen) = f.round(true).await;
    assert_eq!(only(&seen), [GET, PATCH, DELETE]);
    assert_eq!(seen[1].body["status"]["phase"], "Succeeded");
    assert_eq!(seen[2].body["gracePeriodSeconds"], 0);
    assert_eq!(seen[2].body["preconditions"], json!({"uid": "u1"}));
    assert_eq!(
        reports[0].result.as_ref().unwrap(),
        &PodSyncOutcome::Synced {
            patched: true,
            deleted: true
        }
    );
    assert!(f.api.pod("team", "web").is_none());
    assert_eq!(
        f.statuses.get("u1"),
        None,
        "a deleted pod's status is forgotten"
    );
}

#[tokio::test]
async fn a_terminal_pod_is_not_deleted_while_containers_could_run() {
    let mut f = fixture(true);
    let mut pod = pod_json("web", "u1", "Failed");
    pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T00:00:00Z");
    f.api.put(pod.clone());
    let mut local = pod_of(&pod);
    local.status = None;
    f.statuses.terminate_pod(&local).unwrap();
    assert!(f.statuses.versioned("u1").unwrap().finished);
    let (_, seen) = f.round(true).await;
    assert!(!only(&seen).contains(&DELETE.to_owned()), "{seen:?}");
    assert!(f.api.pod("team", "web").is_some());

    f.safety.set(false);
    let (_, seen) = f.round(true).await;
    assert_eq!(only(&seen).last().map(String::as_str), Some(DELETE));
    assert!(f.api.pod("team", "web").is_none());
}

#[tokio::test]
async fn a_mirror_pod_is_never_deleted_by_the_status_syncer() {
    let mut f = fixture(false);
    let mut mirror = pod_json("web", "m1", "Succeeded");
    mirror["metadata"]["deletionTimestamp"] = json!("2024-05-01T00:00:00Z");
    mirror["metadata"]["annotations"] =
        json!({"kubernetes.io/config.mirror": "h", "kubernetes.io/config.source": "file"});
    f.api.put(mirror.clone());
    let mut static_pod = pod_of(&mirror);
    static_pod.metadata.uid = Some("s1".into());
    static_pod.metadata.annotations =
        Some([("kubernetes.io/config.source".to_owned(), "file".to_owned())].into());
    static_pod.status = None;
    f.pods
        .static_pods
        .lock()
        .unwrap()
        .insert("s1".into(), static_pod.clone());
    f.statuses
        .set_pod_status(
            &static_pod,
            kubelet_status(phase::SUCCEEDED, vec![exited("app", 0)], false),
        )
        .unwrap();
    let (_, seen) = f.round(true).await;
    assert!(!only(&seen).contains(&DELETE.to_owned()), "{seen:?}");
}

#[tokio::test]
async fn not_found_forgets_the_pod() {
    let mut f = fixture(true);
    let pod = pod_of(&pod_json("web", "u1", "Pending"));
    f.statuses
        .set_pod_status(
            &pod,
            kubelet_status(phase::RUNNING, vec![running("app")], true),
        )
        .unwrap();
    let (reports, seen) = f.round(false).await;
    assert_eq!(only(&seen), [GET]);
    assert_eq!(
        reports[0].result.as_ref().unwrap(),
        &PodSyncOutcome::NotFound
    );
    assert_eq!(f.statuses.get("u1"), None);
    let (_, seen) = f.round(true).await;
    assert!(seen.is_empty());
}

#[tokio::test]
async fn a_recreated_pod_is_skipped_and_forgotten() {
    let mut f = fixture(true);
    let old = pod_of(&pod_json("web", "u1", "Pending"));
    f.api.put(pod_json("web", "u2", "Pending"));
    f.statuses
        .set_pod_status(
            &old,
            kubelet_status(phase::RUNNING, vec![running("app")], true),
        )
        .unwrap();
    let (reports, seen) = f.round(false).await;
    assert_eq!(only(&seen), [GET]);
    assert_eq!(
        reports[0].result.as_ref().unwrap(),
        &PodSyncOutcome::Recreated {
            api_uid: "u2".into()
        }
    );
    assert_eq!(f.statuses.get("u1"), None);
}

#[tokio::test]
async fn an_api_error_keeps_the_status_and_the_newest_is_sent_next_round() {
    let mut f = fixture(true);
    let pod = pod_json("web", "u1", "Pending");
    f.api.put(pod.clone());
    f.statuses
        .set_pod_status(&pod_of(&pod), kubelet_status(phase::PENDING, vec![], false))
        .unwrap();

    // The API server is unreachable (the connection fails).
    let sync = &mut f.sync;
    let handle = &mut f.handle;
    let work = async {
        let batch = sync.sync_batch(false);
        tokio::pin!(batch);
        loop {
            tokio::select! {
                reports = &mut batch => break reports,
                r = handle.next_request() => {
                    let (_req, send) = r.expect("mock closed");
                    send.send_error(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"));
                }
            }
        }
    };
    let reports = tokio::time::timeout(WAIT, work).await.expect("round");
    let err = reports[0].result.as_ref().unwrap_err();
    assert_eq!(err.verb(), Some("get"));
    assert!(err.to_string().starts_with("get pods team/web:"), "{err}");
    assert_eq!(f.sync.api_status_version("u1"), None);
    assert!(f.statuses.get("u1").is_some(), "the status is kept");

    // Then it answers 503 to the PATCH.
    f.statuses
        .set_pod_status(
            &pod_of(&pod),
            kubelet_status(phase::RUNNING, vec![running("app")], false),
        )
        .unwrap();
    f.api.fail_with.lock().unwrap().replace(503);
    let (reports, seen) = f.round(false).await;
    assert_eq!(only(&seen), [GET]);
    assert!(reports[0].result.is_err());

    // The kubelet moved on meanwhile; once the API server is back the
    // newest status is sent, on the next change or period.
    f.statuses
        .set_pod_status(
            &pod_of(&pod),
            kubelet_status(phase::RUNNING, vec![running("app")], true),
        )
        .unwrap();
    assert_eq!(f.statuses.version("u1"), Some(3));
    f.api.fail_with.lock().unwrap().take();
    let (reports, seen) = f.round(false).await;
    assert_eq!(only(&seen), [GET, PATCH]);
    assert_eq!(reports[0].version, 3);
    let stored = f.api.pod("team", "web").unwrap().status.unwrap();
    assert_eq!(stored.phase.as_deref(), Some("Running"));
    assert!(stored.container_statuses.unwrap()[0].ready);
    assert_eq!(f.sync.api_status_version("u1"), Some(3));
}

#[tokio::test]
async fn a_forbidden_patch_names_the_verb_and_resource() {
    let mut f = fixture(true);
    let pod = pod_json("web", "u1", "Pending");
    f.api.put(pod.clone());
    f.statuses
        .set_pod_status(
            &pod_of(&pod),
            kubelet_status(phase::RUNNING, vec![running("app")], true),
        )
        .unwrap();
    // GET answers, PATCH is refused.
    let sync = &mut f.sync;
    let handle = &mut f.handle;
    let api = &f.api;
    let work = async {
        let batch = sync.sync_batch(false);
        tokio::pin!(batch);
        loop {
            tokio::select! {
                reports = &mut batch => break reports,
                r = handle.next_request() => {
                    let (req, send) = r.expect("mock closed");
                    let s = seen_of(req).await;
                    let (code, body) = if s.method == "PATCH" {
                        (403, api_status(403, "Forbidden", "pods \"web\" is forbidden: node \"other\" can only update pod status for pods with spec.nodeName set to itself"))
                    } else {
                        api.answer(&s)
                    };
                    send.send_response(respond(code, &body));
                }
            }
        }
    };
    let reports = tokio::time::timeout(WAIT, work).await.expect("round");
    let err = reports[0].result.as_ref().unwrap_err();
    assert!(
        matches!(
            err,
            StatusError::Forbidden {
                verb: "patch",
                resource: "pods/status",
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("patch pods/status team/web"), "{text}");
    assert!(text.contains("forbidden"), "{text}");
    assert_eq!(f.sync.api_status_version("u1"), None);
}

#[tokio::test]
async fn a_static_pod_status_goes_to_its_mirror_pod() {
    let mut f = fixture(true);
    let mut static_pod = pod_of(&pod_json("web", "s1", "Pending"));
    static_pod.metadata.annotations =
        Some([("kubernetes.io/config.source".to_owned(), "file".to_owned())].into());
    static_pod.status = None;
    f.pods
        .static_pods
        .lock()
        .unwrap()
        .insert("s1".into(), static_pod.clone());
    f.statuses
        .set_pod_status(
            &static_pod,
            kubelet_status(phase::RUNNING, vec![running("app")], true),
        )
        .unwrap();

    // No mirror pod yet: skipped, nothing sent.
    let (reports, seen) = f.round(false).await;
    assert!(reports.is_empty() && seen.is_empty(), "{seen:?}");

    let mut mirror = pod_json("web", "m1", "Pending");
    mirror["metadata"]["annotations"] =
        json!({"kubernetes.io/config.mirror": "hash", "kubernetes.io/config.source": "file"});
    f.api.put(mirror);
    let (reports, seen) = f.round(false).await;
    assert_eq!(only(&seen), [GET, PATCH]);
    assert_eq!(seen[1].body["metadata"]["uid"], "m1");
    assert_eq!(reports[0].uid, "s1");
    assert_eq!(reports[0].status_uid, "m1");
    assert_eq!(f.sync.api_status_version("m1"), Some(1));
    assert_eq!(
        f.api
            .pod("team", "web")
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Running")
    );
    // The kubelet still reads it by the static pod's UID.
    assert!(f.statuses.get("s1").is_some());
}

#[tokio::test]
async fn run_syncs_on_a_change_and_ends_when_stopped() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(mock, "default");
    let api = FakeApi::new();
    let pod = pod_json("web", "u1", "Pending");
    api.put(pod.clone());
    let statuses = Arc::new(StatusManager::default());
    let sync = StatusSync::new(
        client,
        Arc::clone(&statuses),
        FakePods::new(&api),
        Safety::new(true),
    )
    .with_sync_period(Duration::from_secs(3600));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(sync.run(stop));

    statuses
        .set_pod_status(
            &pod_of(&pod),
            kubelet_status(phase::RUNNING, vec![running("app")], true),
        )
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (req, send) = tokio::time::timeout(WAIT, handle.next_request())
            .await
            .expect("the syncer made no request on a change")
            .expect("mock closed");
        let s = seen_of(req).await;
        let (code, body) = api.answer(&s);
        send.send_response(respond(code, &body));
        seen.push(s);
    }
    assert_eq!(only(&seen), [GET, PATCH]);

    stop_tx.send(true).unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("run did not end when stopped")
        .unwrap();
}

#[tokio::test]
async fn run_reconciles_every_period() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(mock, "default");
    let api = FakeApi::new();
    let pod = pod_json("web", "u1", "Pending");
    api.put(pod.clone());
    let statuses = Arc::new(StatusManager::default());
    let sync = StatusSync::new(
        client,
        Arc::clone(&statuses),
        FakePods::new(&api),
        Safety::new(true),
    )
    .with_sync_period(Duration::from_millis(50));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(sync.run(stop));
    statuses
        .set_pod_status(
            &pod_of(&pod),
            kubelet_status(phase::RUNNING, vec![running("app")], true),
        )
        .unwrap();
    let answer = async |handle: &mut Handle| {
        let (req, send) = tokio::time::timeout(WAIT, handle.next_request())
            .await
            .expect("no request")
            .expect("mock closed");
        let s = seen_of(req).await;
        let (code, body) = api.answer(&s);
        send.send_response(respond(code, &body));
        s.verb_path()
    };
    assert_eq!(answer(&mut handle).await, GET);
    assert_eq!(answer(&mut handle).await, PATCH);
    // Someone else overwrites the phase: the next period puts it back.
    {
        let mut pods = api.pods.lock().unwrap();
        let p: &mut Value = pods.get_mut("team/web").unwrap();
        p["status"]["phase"] = json!("Pending");
    }
    assert_eq!(answer(&mut handle).await, GET);
    assert_eq!(answer(&mut handle).await, PATCH);
    assert_eq!(
        api.pod("team", "web")
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Running")
    );
    drop(stop_tx);
    tokio::time::timeout(WAIT, task)
        .await
        .expect("run did not end when its stop sender was dropped")
        .unwrap();
}

#[test]
fn the_syncer_is_send_for_spawning() {
    fn is_send<T: Send + 'static>(_: &T) {}
    let (mock, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = kube::Client::new(mock, "default");
        let api = FakeApi::new();
        let sync = StatusSync::new(
            client,
            Arc::new(StatusManager::default()),
            FakePods::new(&api),
            Safety::new(true),
        );
        let (_tx, stop) = tokio::sync::watch::channel(false);
        is_send(&sync.run(stop));
    });
}

/// A burst of new statuses is synced concurrently (better than upstream's
/// one pod after another): the API server sees the GETs of many pods
/// before it answers any, and every pod ends up patched once.
#[tokio::test]
async fn a_burst_of_statuses_is_synced_concurrently() {
    let mut f = fixture(true);
    const PODS: usize = 20;
    for i in 0..PODS {
        let pod = pod_json(&format!("web-{i}"), &format!("u{i}"), "Pending");
        f.api.put(pod.clone());
        f.statuses
            .set_pod_status(
                &pod_of(&pod),
                kubelet_status(phase::RUNNING, vec![running("app")], true),
            )
            .unwrap();
    }
    let api = f.api.clone();
    let handle = &mut f.handle;
    let work = async {
        let batch = f.sync.sync_batch(false);
        tokio::pin!(batch);
        // Hold the first requests unanswered: a sequential syncer would
        // never send a second one.
        let mut held = Vec::new();
        while held.len() < 8 {
            tokio::select! {
                _ = &mut batch => panic!("the batch ended with requests unanswered"),
                r = handle.next_request() => held.push(r.expect("mock closed")),
            }
        }
        for (req, send) in held {
            let s = seen_of(req).await;
            assert_eq!(s.method, "GET", "{s:?}");
            let (code, body) = api.answer(&s);
            send.send_response(respond(code, &body));
        }
        loop {
            tokio::select! {
                reports = &mut batch => break reports,
                r = handle.next_request() => {
                    let (req, send) = r.expect("mock closed");
                    let s = seen_of(req).await;
                    let (code, body) = api.answer(&s);
                    send.send_response(respond(code, &body));
                }
            }
        }
    };
    let reports = tokio::time::timeout(WAIT, work)
        .await
        .expect("the syncs were not concurrent: the first GET was held and nothing else came");
    assert_eq!(reports.len(), PODS);
    let mut uids: Vec<&str> = reports.iter().map(|r| r.uid.as_str()).collect();
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(uids.len(), PODS, "one report per pod");
    for r in &reports {
        assert_eq!(
            r.result.as_ref().unwrap(),
            &PodSyncOutcome::Synced {
                patched: true,
                deleted: false
            }
        );
        assert_eq!(f.sync.api_status_version(&r.uid), Some(1));
    }
    let patches = f
        .api
        .take_seen()
        .iter()
        .filter(|s| s.method == "PATCH")
        .count();
    assert_eq!(patches, PODS);
}
