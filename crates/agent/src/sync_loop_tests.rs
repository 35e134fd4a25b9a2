//! Unit tests of the sync loop ([`Kubelet`]) and its syncer
//! ([`KubeletSyncer`]) without containerd: the in-memory CRI runtime
//! (`kubelet_cri_client::FakeRuntime`) under a real `RuntimeManager`, the
//! real pod workers, the core crate's `PodCache` filled by a generic PLEG
//! that relists when a test says so, all on tokio's paused clock.
//!
//! Cases follow upstream `pkg/kubelet/kubelet.go` (`HandlePodAdditions`,
//! `canAdmitPod`, `HandlePodCleanups`), `pkg/kubelet/kubelet_pods.go`
//! (`filterOutInactivePods`) and `pkg/kubelet/kubelet_test.go`
//! (`TestFilterOutInactivePods`, `TestDeletePodDirsForDeletedPods`,
//! `TestDoesNotDeletePodDirsIfContainerIsRunning`, the `OutOfpods`
//! rejections of `TestHandlePortConflicts` & co).
//!
//! Waits are bounded at a few seconds of virtual time, below the pod
//! workers' 10 s back-off and 60 s resync, so a pass is owed to the loop's
//! own wake-ups rather than to a timer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubelet_cri_client::FakeRuntime;
use kubelet_eviction::manager::{EvictedStatus, Eviction, PodKiller};
use kubelet_kuberuntime::config::ConfigOptions;
use kubelet_kuberuntime::{
    ContainerState, PodStatus, PodSyncResult, PodVolumes, RunningPod, Runtime, RuntimeManager,
    RuntimeReader,
};
use kubelet_pleg::{
    GenericPleg, PlegConfig, PodCache, PodLifecycleEvent, PodLifecycleEventGenerator,
    PodLifecycleEventType,
};
use kubelet_podconfig::{PodConfig, PodOperation};
use kubelet_podworkers::PodWorkers;
use tokio::sync::mpsc;

use crate::{Kubelet, KubeletConfig, eviction_channel};

const IMAGE: &str = "localhost/busybox:latest";

/// How long [`Harness::until`] waits, in virtual time.
const PATIENCE: Duration = Duration::from_secs(5);
/// One PLEG round.
const TICK: Duration = Duration::from_millis(100);

fn uid(name: &str) -> String {
    format!("uid-{name}")
}

/// A pod of one `sleep` container, created `created` seconds into the
/// minute (admission goes oldest first).
fn pod(name: &str, restart_policy: &str, created: u32) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": uid(name),
            "creationTimestamp": format!("2024-01-01T00:00:{created:02}Z"),
        },
        "spec": {
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "app",
                "image": IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
            }],
        },
    }))
    .expect("test pod")
}

/// What the syncer asked of the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Sync(String),
    Kill {
        uid: String,
        /// Whether the kubelet still had the API pod (`None` for an
        /// orphaned runtime pod).
        api_pod: bool,
        grace: Option<i64>,
    },
    Remove(String),
}

/// The runtime manager over the fake CRI, recording each call the syncer
/// and housekeeping make.
struct Recording {
    inner: RuntimeManager,
    ops: Mutex<Vec<Op>>,
}

impl Recording {
    fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("ops").clone()
    }

    fn push(&self, op: Op) {
        self.ops.lock().expect("ops").push(op);
    }

    fn syncs(&self, uid: &str) -> usize {
        self.ops()
            .iter()
            .filter(|o| matches!(o, Op::Sync(u) if u == uid))
            .count()
    }

    fn kills(&self, uid: &str) -> Vec<Op> {
        self.ops()
            .into_iter()
            .filter(|o| matches!(o, Op::Kill { uid: u, .. } if u == uid))
            .collect()
    }
}

#[async_trait]
impl RuntimeReader for Recording {
    async fn get_pods(&self, all: bool) -> Result<Vec<RunningPod>, kubelet_container::Error> {
        self.inner.get_pods(all).await
    }

    async fn get_pod_status(
        &self,
        uid: &str,
        name: &str,
        namespace: &str,
    ) -> Result<PodStatus, kubelet_container::Error> {
        self.inner.get_pod_status(uid, name, namespace).await
    }

    fn container_status_from_cri(
        &self,
        status: &kubelet_container::cri::ContainerStatus,
    ) -> kubelet_container::ContainerStatus {
        self.inner.container_status_from_cri(status)
    }
}

#[async_trait]
impl Runtime for Recording {
    async fn sync_pod(&self, pod: &Pod, status: &PodStatus, volumes: &PodVolumes) -> PodSyncResult {
        self.push(Op::Sync(crate::uid_of(pod)));
        self.inner.sync_pod(pod, status, volumes).await
    }

    async fn kill_pod(
        &self,
        pod: Option<&Pod>,
        running: &RunningPod,
        grace_override: Option<i64>,
    ) -> Result<(), kubelet_kuberuntime::Error> {
        self.push(Op::Kill {
            uid: running.uid.clone(),
            api_pod: pod.is_some(),
            grace: grace_override,
        });
        self.inner.kill_pod(pod, running, grace_override).await
    }

    async fn remove_pod(&self, running: &RunningPod) -> Result<(), kubelet_kuberuntime::Error> {
        self.push(Op::Remove(running.uid.clone()));
        self.inner.remove_pod(running).await
    }
}

/// A kubelet over the fake runtime, with a PLEG the test drives.
struct Harness {
    fake: FakeRuntime,
    runtime: Arc<Recording>,
    pleg: GenericPleg,
    pleg_events: Mutex<mpsc::Receiver<PodLifecycleEvent>>,
    /// Where PLEG events go when the sync loop runs (`run`); without it,
    /// [`Harness::relist`] calls `handle_event` itself.
    loop_events: Mutex<Option<mpsc::Sender<String>>>,
    kubelet: Arc<Kubelet<Arc<PodCache>>>,
    root: tempfile::TempDir,
    _logs: tempfile::TempDir,
}

fn harness(max_pods: usize) -> Harness {
    harness_with(max_pods, crate::KubeletParts::default())
}

/// [`harness`] with the kubelet's optional `parts`.
fn harness_with(max_pods: usize, parts: crate::KubeletParts) -> Harness {
    harness_configured(max_pods, parts, |_| {})
}

/// [`harness_with`], the kubelet's config changed by `configure`.
fn harness_configured(
    max_pods: usize,
    parts: crate::KubeletParts,
    configure: impl FnOnce(&mut KubeletConfig),
) -> Harness {
    let fake = FakeRuntime::new();
    fake.add_image(IMAGE);
    let logs = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let opts = ConfigOptions {
        pod_logs_dir: logs.path().to_path_buf(),
        ..ConfigOptions::new(Arc::new(kubelet_cm::StaticResources::default()))
    };
    // Garbage collection over the same runtime, as the builder wires it
    // (calls only the CRI, so the recording sees none of it).
    let gc = Arc::new(RuntimeManager::new(Arc::new(fake.clone()), opts.clone()));
    let runtime = Arc::new(Recording {
        inner: RuntimeManager::new(Arc::new(fake.clone()), opts),
        ops: Mutex::new(Vec::new()),
    });
    let cache = Arc::new(PodCache::new());
    let pleg = GenericPleg::new(runtime.clone(), cache.clone(), PlegConfig::default());
    let pleg_events = pleg.watch().expect("the PLEG's event stream");
    let mut config = KubeletConfig::new("node-1");
    config.root_dir = root.path().to_path_buf();
    config.max_pods = max_pods;
    configure(&mut config);
    let kubelet = Arc::new(
        Kubelet::with_parts(config, runtime.clone(), cache, parts)
            .expect("kubelet")
            .with_container_gc(gc),
    );
    Harness {
        fake,
        runtime,
        pleg,
        pleg_events: Mutex::new(pleg_events),
        loop_events: Mutex::new(None),
        kubelet,
        root,
        _logs: logs,
    }
}

impl Harness {
    /// One PLEG round: the relist refreshes the cache the workers wait on
    /// and, when `wake`, its events wake the pods' workers as the sync loop
    /// does (ContainerRemoved needs no sync, as upstream).
    async fn relist(&self, wake: bool) {
        // The workers wait for data newer than their last sync.
        tokio::time::sleep(TICK).await;
        self.pleg.relist().await;
        let mut woken = Vec::new();
        {
            let mut rx = self.pleg_events.lock().expect("events");
            while let Ok(e) = rx.try_recv() {
                if e.kind != PodLifecycleEventType::ContainerRemoved {
                    woken.push(e.pod_uid);
                }
            }
        }
        if !wake {
            return;
        }
        let tx = self.loop_events.lock().expect("loop events").clone();
        for uid in woken {
            match &tx {
                Some(tx) => tx.send(uid).await.expect("the sync loop runs"),
                None => self.kubelet.handle_event(&uid),
            }
        }
        // Let the woken workers run.
        tokio::time::sleep(TICK).await;
    }

    /// Relists (waking pods) until `cond` holds; fails after [`PATIENCE`].
    async fn until(&self, what: &str, mut cond: impl AsyncFnMut(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            self.relist(true).await;
            if cond(self).await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {PATIENCE:?}; runtime calls: {:?}",
                self.runtime.ops()
            );
        }
    }

    /// The runtime's view of the pod (exited containers included).
    async fn runtime_pod(&self, uid: &str) -> Option<RunningPod> {
        self.runtime
            .get_pods(true)
            .await
            .expect("runtime pods")
            .into_iter()
            .find(|p| p.uid == uid)
    }

    /// A ready sandbox and a running instance of every container (dead
    /// instances stay listed until garbage collection).
    async fn is_running(&self, uid: &str) -> bool {
        self.runtime_pod(uid).await.is_some_and(|p| {
            p.sandboxes.iter().any(|s| s.ready)
                && !p.containers.is_empty()
                && p.containers.iter().all(|c| {
                    p.containers
                        .iter()
                        .any(|r| r.name == c.name && r.state == ContainerState::Running)
                })
        })
    }

    /// The running container `name` of the pod.
    async fn container_id(&self, uid: &str, name: &str) -> String {
        self.runtime_pod(uid)
            .await
            .and_then(|p| {
                p.containers
                    .into_iter()
                    .find(|c| c.name == name && c.state == ContainerState::Running)
            })
            .map(|c| c.id)
            .unwrap_or_else(|| panic!("no running container {name} in pod {uid}"))
    }

    fn phase(&self, uid: &str) -> Option<String> {
        self.kubelet.statuses().get(uid).and_then(|s| s.phase)
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.path().join("pods").join(uid)
    }

    fn known_uids(&self) -> Vec<String> {
        let mut uids: Vec<String> = self
            .kubelet
            .pods()
            .iter()
            .map(|p| crate::uid_of(p))
            .collect();
        uids.sort();
        uids
    }

    /// Adds `pod` and waits until it runs.
    async fn start(&self, pod: &Pod) {
        let uid = crate::uid_of(pod);
        self.kubelet.handle_pod_additions(vec![pod.clone()]);
        self.until(&format!("{uid} runs"), async |h| {
            h.is_running(&uid).await && h.phase(&uid).as_deref() == Some("Running")
        })
        .await;
    }

    /// Lets `container` of the pod exit with `code`, as its process would.
    async fn exit(&self, uid: &str, container: &str, code: i32) {
        let id = self.container_id(uid, container).await;
        self.fake
            .exit_container(&id, code, if code == 0 { "Completed" } else { "Error" })
            .expect("exit");
    }
}

// ---- admission (upstream HandlePodAdditions, canAdmitPod) ----

#[tokio::test(start_paused = true)]
async fn pods_beyond_max_pods_are_rejected_oldest_first_with_out_of_pods() {
    let h = harness(2);
    // Handed newest first: admission still goes by creation time.
    h.kubelet.handle_pod_additions(vec![
        pod("c", "Always", 3),
        pod("b", "Always", 2),
        pod("a", "Always", 1),
    ]);

    let st = h
        .kubelet
        .statuses()
        .get(&uid("c"))
        .expect("the rejected pod has a status");
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("OutOfpods"));
    assert_eq!(
        st.message.as_deref(),
        Some(
            "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2"
        )
    );
    assert_eq!(
        h.known_uids(),
        [uid("a"), uid("b")],
        "the rejected pod is forgotten"
    );

    h.until("a and b run", async |h| {
        h.is_running(&uid("a")).await && h.is_running(&uid("b")).await
    })
    .await;
    assert_eq!(
        h.runtime.syncs(&uid("c")),
        0,
        "a rejected pod never reaches the runtime"
    );
    assert!(h.runtime_pod(&uid("c")).await.is_none());
    assert!(!h.kubelet.workers.is_pod_known(&uid("c")));
}

#[tokio::test(start_paused = true)]
async fn a_completed_pod_frees_its_slot_under_max_pods() {
    let h = harness(1);
    let done = pod("done", "Never", 1);
    h.start(&done).await;
    h.exit(&uid("done"), "app", 0).await;
    h.until("the completed pod is terminated", async |h| {
        h.kubelet.workers.is_pod_known_terminated(&uid("done"))
    })
    .await;
    assert_eq!(h.phase(&uid("done")).as_deref(), Some("Succeeded"));
    assert_eq!(h.known_uids(), [uid("done")], "still in the pod manager");

    // Upstream counts only active pods (filterOutInactivePods): the
    // completed one does not hold the only slot.
    let next = pod("next", "Always", 2);
    h.start(&next).await;
    assert_eq!(h.known_uids(), [uid("done"), uid("next")]);
    let active: Vec<String> = h.kubelet.active_pods().iter().map(crate::uid_of).collect();
    assert_eq!(active, [uid("next")]);
}

#[tokio::test(start_paused = true)]
async fn a_pod_terminal_in_its_config_does_not_count_against_max_pods() {
    let h = harness(1);
    let mut old = pod("old", "Never", 1);
    old.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Succeeded".into()),
        ..Default::default()
    });
    h.kubelet.handle_pod_additions(vec![old]);
    h.relist(true).await;
    assert!(
        h.runtime_pod(&uid("old")).await.is_none(),
        "a terminal pod never starts"
    );

    h.start(&pod("new", "Always", 2)).await;
}

#[tokio::test(start_paused = true)]
async fn a_completed_pod_still_terminating_keeps_its_slot() {
    let h = harness(1);
    h.start(&pod("slow", "Never", 1)).await;
    // Its kill hangs (a container slow to stop), so the pod stays
    // terminating: upstream counts it, it may still hold resources.
    h.fake
        .set_delay("StopPodSandbox", Duration::from_secs(3600));
    h.exit(&uid("slow"), "app", 0).await;
    h.until("the pod is terminating", async |h| {
        h.phase(&uid("slow")).as_deref() == Some("Succeeded")
            && h.kubelet.workers.is_pod_termination_requested(&uid("slow"))
            && !h.kubelet.workers.is_pod_known_terminated(&uid("slow"))
    })
    .await;

    h.kubelet
        .handle_pod_additions(vec![pod("next", "Always", 2)]);
    let st = h.kubelet.statuses().get(&uid("next")).expect("rejected");
    assert_eq!(st.reason.as_deref(), Some("OutOfpods"));
    assert_eq!(
        h.kubelet
            .active_pods()
            .iter()
            .map(crate::uid_of)
            .collect::<Vec<_>>(),
        [uid("slow")]
    );
}

// ---- additions, updates, removals reaching the runtime ----

#[tokio::test(start_paused = true)]
async fn an_added_pod_is_created_and_a_removed_one_killed_then_cleaned_up() {
    let h = harness(110);
    let web = pod("web", "Always", 1);
    let id = uid("web");
    h.start(&web).await;
    let calls = h.fake.calls();
    for call in ["RunPodSandbox", "CreateContainer", "StartContainer"] {
        assert!(calls.contains(&call), "{call} missing from {calls:?}");
    }
    assert!(h.pod_dir(&id).is_dir(), "the syncer made the pod directory");
    assert!(h.runtime.kills(&id).is_empty());

    h.kubelet.handle_pod_removes(vec![web]);
    assert!(h.known_uids().is_empty());
    h.until("the removed pod is terminated", async |h| {
        h.kubelet.workers.is_pod_known_terminated(&id)
    })
    .await;
    assert_eq!(
        h.runtime.kills(&id),
        [Op::Kill {
            uid: id.clone(),
            api_pod: true,
            grace: Some(30)
        }],
        "killed once, with the pod's grace period"
    );
    let left = h.runtime_pod(&id).await.expect("killed, not yet removed");
    assert!(!left.is_running(), "{left:?}");

    // Housekeeping forgets the finished worker but leaves the runtime's
    // leftovers to garbage collection (upstream `HandlePodCleanups` removes
    // no sandbox). The directory and the status go at once: the pod no
    // longer runs (upstream TestDeletePodDirsForDeletedPods; running pods
    // only keep their directories).
    h.until("housekeeping forgets the worker", async |h| {
        h.kubelet.handle_pod_cleanups().await;
        !h.kubelet.workers.is_pod_known(&id)
    })
    .await;
    h.kubelet.handle_pod_cleanups().await;
    assert!(h.runtime_pod(&id).await.is_some());
    assert!(!h.fake.calls().contains(&"RemovePodSandbox"));
    assert!(!h.pod_dir(&id).exists());
    assert!(h.kubelet.statuses().get(&id).is_none());
    // Garbage collection removes the sandbox.
    h.kubelet.garbage_collect(true).await;
    assert!(h.runtime_pod(&id).await.is_none());
    assert!(h.fake.calls().contains(&"RemovePodSandbox"));
    assert!(
        !h.runtime.ops().contains(&Op::Remove(id.clone())),
        "not removed through the sync loop's housekeeping"
    );
}

/// A pod removed and added again with the same UID while its worker still
/// terminates it — a static pod whose manifest is moved out and back, the
/// usual way to restart one: same content, same UID — runs again once
/// housekeeping has forgotten the old worker (upstream `restartRequested`
/// in `pod_workers.go` and the restart of active pods unknown to the
/// workers in `HandlePodCleanups`).
#[tokio::test(start_paused = true)]
async fn a_static_pod_removed_and_added_again_runs_again() {
    let h = harness(110);
    // Static: upstream gives static pods no terminal phase when they are
    // killed (kubernetes#116484), so that they can run again.
    let (web, _) = static_and_mirror("web");
    let id = uid("web");
    h.start(&web).await;
    h.kubelet.handle_pod_removes(vec![web.clone()]);
    h.kubelet.handle_pod_additions(vec![web.clone()]);
    h.until("the first instance is killed", async |h| {
        !h.runtime.kills(&id).is_empty() && !h.is_running(&id).await
    })
    .await;
    h.until("the pod runs again", async |h| {
        h.kubelet.handle_pod_cleanups().await;
        h.is_running(&id).await
    })
    .await;
    assert_eq!(h.runtime.kills(&id).len(), 1, "killed once");
    assert_eq!(h.known_uids(), [id]);
}

#[tokio::test(start_paused = true)]
async fn an_updated_spec_restarts_the_changed_container_and_a_reconcile_syncs_nothing() {
    let h = harness(110);
    let web = pod("web", "Always", 1);
    let id = uid("web");
    h.start(&web).await;
    let before = h.container_id(&id, "app").await;

    let mut changed = web.clone();
    if let Some(spec) = changed.spec.as_mut() {
        spec.containers[0].command = Some(vec!["sleep".into(), "7200".into()]);
    }
    h.kubelet.handle_pod_updates(vec![changed]);
    h.until("the changed container is replaced", async |h| {
        h.is_running(&id).await && h.container_id(&id, "app").await != before
    })
    .await;
    assert_eq!(
        h.kubelet.pods()[0].spec.as_ref().expect("spec").containers[0].command,
        Some(vec!["sleep".into(), "7200".into()])
    );
    let sandboxes = h.runtime_pod(&id).await.expect("pod").sandboxes;
    assert_eq!(sandboxes.len(), 1, "same sandbox: {sandboxes:?}");

    // A status-only change (upstream HandlePodReconcile) updates the pod
    // manager without a sync. (First the replacement's own events settle.)
    for _ in 0..3 {
        h.relist(true).await;
    }
    let syncs = h.runtime.syncs(&id);
    let mut labelled = Pod::clone(&h.kubelet.pods()[0]);
    labelled.metadata.labels = Some([("tier".to_owned(), "web".to_owned())].into());
    h.kubelet.handle_pod_reconcile(vec![labelled]);
    for _ in 0..5 {
        h.relist(false).await;
    }
    assert_eq!(h.runtime.syncs(&id), syncs);
    assert!(h.kubelet.pods()[0].metadata.labels.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_deleted_pod_is_killed_with_its_deletion_grace_period() {
    let h = harness(110);
    let web = pod("web", "Always", 1);
    let id = uid("web");
    h.start(&web).await;

    let mut deleted = web.clone();
    deleted.metadata.deletion_timestamp =
        Some(serde_json::from_value(serde_json::json!("2024-01-01T00:01:00Z")).expect("time"));
    deleted.metadata.deletion_grace_period_seconds = Some(5);
    h.kubelet.handle_update(kubelet_podconfig::PodUpdate {
        op: PodOperation::Delete,
        source: "api".into(),
        pods: vec![deleted],
    });
    h.until("the deleted pod is terminated", async |h| {
        h.kubelet.workers.is_pod_known_terminated(&id)
    })
    .await;
    assert_eq!(
        h.runtime.kills(&id),
        [Op::Kill {
            uid: id.clone(),
            api_pod: true,
            grace: Some(5)
        }]
    );
    assert!(!h.runtime_pod(&id).await.expect("pod").is_running());
    assert_eq!(h.known_uids(), [id], "deleted, not removed: still known");
}

// ---- PLEG wake-ups ----

#[tokio::test(start_paused = true)]
async fn a_lifecycle_event_makes_the_pods_worker_sync() {
    let h = harness(110);
    let id = uid("web");
    h.start(&pod("web", "Always", 1)).await;
    let first = h.container_id(&id, "app").await;
    let syncs = h.runtime.syncs(&id);

    // The container dies; the PLEG sees it but no one wakes the worker.
    h.exit(&id, "app", 1).await;
    for _ in 0..10 {
        h.relist(false).await;
    }
    assert_eq!(h.runtime.syncs(&id), syncs, "nothing else syncs the pod");
    let dead = h.runtime_pod(&id).await.expect("pod");
    assert!(
        dead.containers
            .iter()
            .all(|c| c.state == ContainerState::Exited),
        "{dead:?}"
    );

    // An event for an unknown pod starts no worker.
    h.kubelet.handle_event("uid-nobody");
    assert!(!h.kubelet.workers.is_pod_known("uid-nobody"));

    h.kubelet.handle_event(&id);
    h.until("the container is restarted", async |h| {
        h.is_running(&id).await
    })
    .await;
    assert!(h.runtime.syncs(&id) > syncs);
    assert_ne!(h.container_id(&id, "app").await, first);
    let st = h.kubelet.statuses().get(&id).expect("status");
    let restarts: Vec<i32> = st
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .collect();
    assert_eq!(restarts, [1]);
}

// ---- housekeeping (upstream HandlePodCleanups) ----

#[tokio::test(start_paused = true)]
async fn housekeeping_kills_unknown_runtime_pods_and_removes_orphaned_dirs() {
    let h = harness(110);
    let keep = uid("keep");
    h.start(&pod("keep", "Always", 1)).await;

    // A pod the runtime runs but the kubelet does not know (left by an
    // earlier kubelet), with its directory.
    let orphan = pod("orphan", "Always", 2);
    let orphan_uid = uid("orphan");
    let status = h
        .runtime
        .get_pod_status(&orphan_uid, "orphan", "default")
        .await
        .expect("status");
    let r = h
        .runtime
        .inner
        .sync_pod(&orphan, &status, &Default::default())
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    std::fs::create_dir_all(h.pod_dir(&orphan_uid).join("volumes")).expect("orphan dir");
    // A directory of a pod neither known nor in the runtime.
    std::fs::create_dir_all(h.pod_dir("uid-stray").join("volumes")).expect("stray dir");

    h.kubelet.handle_pod_cleanups().await;
    assert!(
        !h.pod_dir("uid-stray").exists(),
        "the stray directory is removed"
    );
    assert!(
        h.pod_dir(&orphan_uid).exists(),
        "kept while the pod runs (upstream TestDoesNotDeletePodDirsIfContainerIsRunning)"
    );
    h.until("the orphan is killed", async |h| {
        h.runtime_pod(&orphan_uid)
            .await
            .is_some_and(|p| !p.is_running())
    })
    .await;
    assert_eq!(
        h.runtime.kills(&orphan_uid),
        [Op::Kill {
            uid: orphan_uid.clone(),
            api_pod: false,
            grace: None
        }],
        "killed as a runtime pod, grace periods from its containers"
    );

    // Killed, its dead containers and stopped sandbox still in the runtime
    // until the container GC removes them: the directory goes now, as
    // upstream's (running pods only keep it; the fault soak counted the
    // directories the GC's minute kept as leaks).
    assert!(
        h.runtime_pod(&orphan_uid).await.is_some(),
        "the runtime still holds the killed pod"
    );
    h.kubelet.handle_pod_cleanups().await;
    assert!(
        !h.pod_dir(&orphan_uid).exists(),
        "removed once the pod no longer runs"
    );

    // The desired pod is untouched.
    assert!(h.is_running(&keep).await);
    assert!(h.pod_dir(&keep).is_dir());
    assert!(h.runtime.kills(&keep).is_empty());
}

/// Soak regression: a pod cgroup whose pod the kubelet no longer knows
/// (its termination interrupted by a kubelet restart, or the pod gone
/// while the kubelet was down) is removed by housekeeping, as upstream's
/// `cleanupOrphanedPodCgroups` does; the cgroups of known pods stay.
#[tokio::test(start_paused = true)]
async fn housekeeping_removes_orphaned_pod_cgroups() {
    use kubelet_cm::ContainerManager as _;
    let cgroups = tempfile::tempdir().expect("tempdir");
    for c in ["cpu", "cpuset", "memory", "pids"] {
        std::fs::create_dir_all(cgroups.path().join(c)).expect("controller");
    }
    let cm = kubelet_cm::NodeContainerManager::new(
        kubelet_cm::ContainerManagerConfig {
            cgroup_mount_root: cgroups.path().to_owned(),
            ..Default::default()
        },
        kubelet_cm::MachineInfo::synthetic(kubelet_cm::CpuTopology::synthetic(1, 1, 2, 1), 8 << 30),
    )
    .expect("container manager");
    cm.start().expect("kubepods");
    let cm = Arc::new(cm);
    let h = harness_with(
        110,
        crate::KubeletParts {
            cm: Some(cm.clone()),
            ..Default::default()
        },
    );
    let keep = pod("keep", "Always", 1);
    h.start(&keep).await;
    let r = cgroups.path();
    for c in ["cpu", "memory"] {
        std::fs::create_dir_all(r.join(c).join("kubepods/besteffort/poduid-gone"))
            .expect("orphan cgroup");
    }
    let before = cm.pod_cgroups().expect("pod cgroups");
    assert!(before.contains_key("uid-gone"), "{before:?}");
    assert!(before.contains_key(&uid("keep")), "{before:?}");

    h.kubelet.handle_pod_cleanups().await;
    let after = cm.pod_cgroups().expect("pod cgroups");
    assert!(!after.contains_key("uid-gone"), "{after:?}");
    assert!(!r.join("memory/kubepods/besteffort/poduid-gone").exists());
    assert!(after.contains_key(&uid("keep")), "the running pod's stays");
    assert!(h.is_running(&uid("keep")).await);
}

// ---- the whole loop: config updates, PLEG events, evictions ----

#[tokio::test(start_paused = true)]
async fn an_eviction_through_the_loop_records_the_evicted_status_and_kills_the_pod() {
    let h = harness(110);
    let (killer, requests) = eviction_channel();
    // What `KubeletParts::eviction` hands the loop, without an eviction
    // manager running beside it.
    *h.kubelet.evictions.lock().expect("evictions") = Some(requests);
    let (pod_config, updates) = PodConfig::builder("node-1").start();
    let source = pod_config.channel("test");
    let (events_tx, events_rx) = mpsc::channel(1000);
    *h.loop_events.lock().expect("loop events") = Some(events_tx);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();

    let id = uid("hog");
    let test = async {
        source
            .send(PodOperation::Add, vec![pod("hog", "Always", 1)])
            .await
            .expect("config runs");
        h.until("the pod runs", async |h| {
            h.is_running(&id).await && h.phase(&id).as_deref() == Some("Running")
        })
        .await;
        assert!(h.kubelet.sync_loop_last_entered().is_some());

        let victim = h.kubelet.active_pods().pop().expect("an active pod");
        let eviction = Eviction {
            pod: victim,
            grace_period_seconds: 2,
            signal: None,
            status: EvictedStatus {
                reason: "Evicted".into(),
                message: "The node was low on resource: memory.".into(),
                annotations: Default::default(),
            },
        };
        killer.kill_pod(&eviction).await.expect("the loop listens");
        h.until("the evicted pod is terminated", async |h| {
            h.kubelet.workers.is_pod_known_terminated(&id)
        })
        .await;
        stop_tx.send(()).expect("the loop runs");
    };
    tokio::join!(
        h.kubelet.run(updates, events_rx, Box::new(|| true), async {
            let _ = stop_rx.await;
        }),
        test
    );

    assert_eq!(
        h.runtime.kills(&id),
        [Op::Kill {
            uid: id.clone(),
            api_pod: true,
            grace: Some(2)
        }],
        "killed with the eviction's grace period"
    );
    assert!(!h.runtime_pod(&id).await.expect("pod").is_running());
    let st = h.kubelet.statuses().get(&id).expect("status");
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("Evicted"));
    assert_eq!(
        st.message.as_deref(),
        Some("The node was low on resource: memory.")
    );
    let disruption = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget")
        .expect("DisruptionTarget condition");
    assert_eq!(disruption.reason.as_deref(), Some("TerminationByKubelet"));
    assert!(
        h.kubelet.active_pods().is_empty(),
        "an evicted pod is inactive"
    );
    assert!(h.kubelet.workers.should_pod_content_be_removed(&id));
}

#[tokio::test(start_paused = true)]
async fn the_loop_cleans_up_only_once_its_sources_are_ready_and_applies_removes() {
    use std::sync::atomic::{AtomicBool, Ordering};

    // Garbage collection every second, within the test's patience.
    let h = harness_configured(110, crate::KubeletParts::default(), |c| {
        c.container_gc_period = Duration::from_secs(1);
    });
    let orphan_uid = uid("orphan");
    let status = h
        .runtime
        .get_pod_status(&orphan_uid, "orphan", "default")
        .await
        .expect("status");
    let r = h
        .runtime
        .inner
        .sync_pod(&pod("orphan", "Always", 1), &status, &Default::default())
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);

    let ready = Arc::new(AtomicBool::new(false));
    let sources_ready = {
        let ready = ready.clone();
        Box::new(move || ready.load(Ordering::SeqCst))
    };
    let (pod_config, updates) = PodConfig::builder("node-1").start();
    let source = pod_config.channel("test");
    let (events_tx, events_rx) = mpsc::channel(1000);
    *h.loop_events.lock().expect("loop events") = Some(events_tx);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();

    let web = pod("web", "Always", 2);
    let id = uid("web");
    let test = async {
        source
            .send(PodOperation::Add, vec![web.clone()])
            .await
            .expect("config runs");
        h.until("web runs", async |h| h.is_running(&id).await).await;

        // Housekeeping periods pass, but upstream cleans up only once every
        // source has been seen: a pod missing from a source not yet heard
        // from must not be killed.
        let periods = crate::HOUSEKEEPING_PERIOD * 3;
        let rounds = periods.as_millis() / (2 * TICK).as_millis();
        for _ in 0..rounds {
            h.relist(true).await;
        }
        assert!(h.is_running(&orphan_uid).await);
        assert!(h.runtime.kills(&orphan_uid).is_empty());

        ready.store(true, Ordering::SeqCst);
        h.until("housekeeping kills the orphan", async |h| {
            !h.runtime.kills(&orphan_uid).is_empty()
        })
        .await;

        // A REMOVE from the config kills the pod; garbage collection then
        // removes what the runtime holds of it, and housekeeping its
        // directory.
        source
            .send(PodOperation::Remove, vec![web.clone()])
            .await
            .expect("config runs");
        h.until("web is killed and cleaned up", async |h| {
            h.runtime_pod(&id).await.is_none() && !h.pod_dir(&id).exists()
        })
        .await;
        stop_tx.send(()).expect("the loop runs");
    };
    tokio::join!(
        h.kubelet.run(updates, events_rx, sources_ready, async {
            let _ = stop_rx.await;
        }),
        test
    );
    assert!(h.kubelet.pods().is_empty());
    assert_eq!(
        h.runtime.kills(&id),
        [Op::Kill {
            uid: id.clone(),
            api_pod: true,
            grace: Some(30)
        }]
    );
    assert!(h.fake.calls().contains(&"RemovePodSandbox"));
    assert!(h.runtime_pod(&orphan_uid).await.is_none());
}

/// Upstream `syncLoopIteration` marks a source seen only after the update
/// handler ran ("to ensure the internal pod cache is up-to-date"). Found by
/// the simulation (`kubelet-sim`, seed 36): a restarted kubelet whose
/// sources had already handed the merger their pods, ADDs still queued in
/// the update channel, took the merger's word that the sources were ready
/// (`PodConfig::sources_ready`), and its housekeeping killed every running
/// pod as unknown whenever it ran before the queued update.
#[tokio::test(start_paused = true)]
async fn a_restarted_kubelet_kills_no_pod_its_sources_gave_it_before_handling_them() {
    let web = pod("web", "Always", 1);
    let id = uid("web");
    // A harness whose runtime runs `web`, started by the kubelet before the
    // restart, and whose source gave the merger `web` already.
    async fn restarted(web: &Pod, id: &str) -> (Harness, PodConfig, kubelet_podconfig::PodUpdates) {
        let h = harness(110);
        let status = h
            .runtime
            .get_pod_status(id, "web", "default")
            .await
            .expect("status");
        let r = h
            .runtime
            .inner
            .sync_pod(web, &status, &Default::default())
            .await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let (pod_config, updates) = PodConfig::builder("node-1").start();
        let source = pod_config.channel("test");
        source.set(vec![web.clone()]).await.expect("config runs");
        while !pod_config.sources_ready() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (h, pod_config, updates)
    }

    // What the merger alone says is not enough: cleaning up on its word,
    // before the queued ADD is handled, kills the desired pod.
    let (h, _config, _updates) = restarted(&web, &id).await;
    h.kubelet.handle_pod_cleanups().await;
    h.relist(false).await;
    assert!(!h.runtime.kills(&id).is_empty(), "{:?}", h.runtime.ops());

    // The kubelet's own seen sources say "not yet" until it handled them.
    let (h, pod_config, mut updates) = restarted(&web, &id).await;
    assert!(h.kubelet.sources_seen().is_empty());
    assert!(!pod_config.seen_all_sources(&h.kubelet.sources_seen()));
    let update = updates.recv().await.expect("the queued ADD");
    h.kubelet.handle_update(update);
    assert!(pod_config.seen_all_sources(&h.kubelet.sources_seen()));
    h.kubelet.handle_pod_cleanups().await;
    h.relist(true).await;
    assert!(h.runtime.kills(&id).is_empty(), "{:?}", h.runtime.ops());
    assert!(h.is_running(&id).await);
}

/// Upstream's housekeeping ticker (`time.NewTicker`) first ticks one period
/// after the sync loop starts; tokio's `interval` would tick at once, before
/// the sources' first updates are handled. The container GC's first pass,
/// though, comes at once.
#[tokio::test(start_paused = true)]
async fn housekeeping_first_runs_one_period_after_the_loop_starts() {
    let h = harness(110);
    let (_pod_config, updates) = PodConfig::builder("node-1").start();
    let (_events_tx, events_rx) = mpsc::channel(1000);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    h.fake.clear_calls();
    let test = async {
        // The container GC, unlike housekeeping, runs at once (upstream's
        // `wait.Until` calls first, then waits).
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            h.fake.calls().contains(&"ListContainers"),
            "the first GC pass: {:?}",
            h.fake.calls()
        );
        h.fake.clear_calls();
        tokio::time::sleep(crate::HOUSEKEEPING_PERIOD - Duration::from_millis(11)).await;
        assert_eq!(h.fake.calls(), Vec::<&str>::new(), "housekeeping ran early");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            h.fake.calls().contains(&"ListPodSandbox"),
            "housekeeping lists the runtime's pods: {:?}",
            h.fake.calls()
        );
        stop_tx.send(()).expect("the loop runs");
    };
    tokio::join!(
        h.kubelet.run(updates, events_rx, Box::new(|| true), async {
            let _ = stop_rx.await;
        }),
        test
    );
}

/// Found by the simulation (`kubelet-sim`): housekeeping removed terminated
/// pods' sandboxes inline, so a `RemovePodSandbox` that hung stalled the
/// whole sync loop (no config update, no lifecycle event handled) until the
/// call timed out. Upstream's `HandlePodCleanups` removes no sandbox; the
/// container garbage collector does, in its own goroutine
/// (`StartGarbageCollection`, `evictSandboxes`). Here a removed pod's
/// sandbox removal hangs for an hour, and a pod added meanwhile must still
/// start within seconds; stopping the loop must not wait for the hung call.
#[tokio::test(start_paused = true)]
async fn a_hung_sandbox_removal_does_not_stall_the_sync_loop() {
    let h = harness_configured(110, crate::KubeletParts::default(), |c| {
        c.container_gc_period = Duration::from_secs(3);
    });
    let (pod_config, updates) = PodConfig::builder("node-1").start();
    let source = pod_config.channel("test");
    let (events_tx, events_rx) = mpsc::channel(1000);
    *h.loop_events.lock().expect("loop events") = Some(events_tx);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let old = pod("old", "Always", 1);
    let (old_id, new_id) = (uid("old"), uid("new"));
    let started = tokio::time::Instant::now();
    let test = async {
        source
            .send(PodOperation::Add, vec![old.clone()])
            .await
            .expect("config runs");
        h.until("old runs", async |h| h.is_running(&old_id).await)
            .await;
        h.fake
            .inject_hang("RemovePodSandbox", Duration::from_secs(3600));
        source
            .send(PodOperation::Remove, vec![old.clone()])
            .await
            .expect("config runs");
        h.until("old is killed", async |h| {
            h.runtime_pod(&old_id)
                .await
                .is_some_and(|p| !p.is_running())
        })
        .await;
        // Housekeeping forgets the finished worker; then the sandbox's
        // removal starts, and hangs.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while h.fake.pending_injections() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing removed the killed pod's sandbox: {:?}",
                h.fake.calls()
            );
            h.relist(true).await;
        }
        assert!(h.runtime_pod(&old_id).await.is_some(), "the removal hangs");

        source
            .send(PodOperation::Add, vec![pod("new", "Always", 2)])
            .await
            .expect("config runs");
        h.until("a pod added while the removal hangs runs", async |h| {
            h.is_running(&new_id).await
        })
        .await;
        assert!(h.runtime_pod(&old_id).await.is_some(), "still hanging");
        stop_tx.send(()).expect("the loop runs");
    };
    // `run` returns though the removal still hangs: the collection in
    // flight is dropped with the loop.
    tokio::join!(
        h.kubelet.run(updates, events_rx, Box::new(|| true), async {
            let _ = stop_rx.await;
        }),
        test
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(60),
        "run waited for the hung call: {elapsed:?}"
    );
}

/// Found by the simulation (`kubelet-sim`, seed 1760): the terminating
/// sync killed what the cached status listed, and a cache left stale (the
/// PLEG could not inspect the pod: a hung `PodSandboxStatus`) listed none
/// of the containers, so the kill "succeeded", the pod counted as
/// terminated and a static pod's next UID started beside it. Upstream's
/// `SyncTerminatingPod` asks the runtime again after the kill and fails
/// the sync ("CRI violation") while a container still runs.
#[tokio::test(start_paused = true)]
async fn a_kill_by_a_stale_status_fails_while_containers_still_run() {
    use kubelet_podworkers::PodSyncer;

    let h = harness(110);
    let web = pod("web", "Always", 1);
    let id = uid("web");
    // The status as the cache held it before the pod started: nothing.
    let stale = Arc::new(
        h.runtime
            .get_pod_status(&id, "web", "default")
            .await
            .expect("status"),
    );
    h.start(&web).await;
    let syncer = crate::KubeletSyncer::new(
        h.runtime.clone(),
        h.kubelet.statuses().clone(),
        h.root.path().to_path_buf(),
        None,
    );
    let ctx = kubelet_podworkers::SyncContext::new();
    let r = syncer
        .sync_terminating_pod(&ctx, &web, &stale, 30, None)
        .await;
    assert!(h.is_running(&id).await, "the stale kill stopped nothing");
    let e = r.expect_err("a container still runs: the pod is not terminated");
    assert!(
        e.to_string()
            .contains("running containers after a successful KillPod"),
        "{e}"
    );
    // With the runtime's own status, the kill stops it and succeeds.
    let fresh = Arc::new(
        h.runtime
            .get_pod_status(&id, "web", "default")
            .await
            .expect("status"),
    );
    syncer
        .sync_terminating_pod(&ctx, &web, &fresh, 30, None)
        .await
        .expect("killed");
    assert!(!h.runtime_pod(&id).await.expect("pod").is_running());
}

/// A container manager that admits nothing but `admit` says so, with
/// `refusal`, and does nothing else.
struct RefusingCm {
    refusal: fn() -> kubelet_cm::Error,
    allocatable: kubelet_cm::ResourceList,
}

impl kubelet_cm::ContainerResources for RefusingCm {
    fn pod_cgroup_parent(&self, _pod: &Pod) -> String {
        String::new()
    }
    fn container_resources(
        &self,
        _pod: &Pod,
        _container: &k8s_openapi::api::core::v1::Container,
    ) -> kubelet_cri_client::api::LinuxContainerResources {
        Default::default()
    }
}

impl kubelet_cm::ContainerManager for RefusingCm {
    fn start(&self) -> kubelet_cm::Result<()> {
        Ok(())
    }
    fn capacity(&self) -> kubelet_cm::ResourceList {
        Default::default()
    }
    fn node_allocatable(&self) -> kubelet_cm::ResourceList {
        self.allocatable.clone()
    }
    fn node_allocatable_enforced(&self) -> kubelet_cm::ResourceList {
        Default::default()
    }
    fn pod_cgroup(&self, _pod: &Pod) -> kubelet_cm::CgroupName {
        Default::default()
    }
    fn ensure_pod_cgroup(&self, _pod: &Pod) -> kubelet_cm::Result<()> {
        Ok(())
    }
    fn pod_cgroup_exists(&self, _pod: &Pod) -> bool {
        false
    }
    fn destroy_pod_cgroup(&self, _pod: &Pod) -> kubelet_cm::Result<()> {
        Ok(())
    }
    fn update_qos_cgroups(&self, _active_pods: &[Pod]) -> kubelet_cm::Result<()> {
        Ok(())
    }
    fn admit(&self, pod: &Pod) -> kubelet_cm::Result<()> {
        if pod
            .metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("fits"))
        {
            Ok(())
        } else {
            Err((self.refusal)())
        }
    }
    fn remove_container(
        &self,
        _pod_uid: &str,
        _container_name: &str,
        _container_id: Option<&str>,
    ) -> kubelet_cm::Result<()> {
        Ok(())
    }
    fn explain(&self, _pod: &Pod) -> kubelet_cm::PodExplanation {
        unreachable!("the sync loop does not explain pods")
    }
}

/// A kubelet like [`harness`]'s whose container manager refuses every pod
/// but `fits` with `refusal`.
fn refusing_kubelet(h: &Harness, refusal: fn() -> kubelet_cm::Error) -> Kubelet<Arc<PodCache>> {
    let mut config = KubeletConfig::new("node-1");
    config.root_dir = h.root.path().to_path_buf();
    let parts = crate::KubeletParts {
        cm: Some(Arc::new(RefusingCm {
            refusal,
            allocatable: Default::default(),
        })),
        ..Default::default()
    };
    Kubelet::with_parts(config, h.runtime.clone(), Arc::new(PodCache::new()), parts)
        .expect("kubelet")
}

#[tokio::test(start_paused = true)]
async fn a_container_manager_refusal_keeps_its_upstream_reason() {
    let h = harness(110);
    let kubelet = refusing_kubelet(&h, || kubelet_cm::Error::Admission {
        reason: "TopologyAffinityError",
        message: "Resources cannot be allocated with Topology locality".into(),
    });
    kubelet.handle_pod_additions(vec![pod("numa", "Always", 1), pod("fits", "Always", 2)]);
    let st = kubelet.statuses().get(&uid("numa")).expect("rejected");
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("TopologyAffinityError"));
    assert_eq!(
        st.message.as_deref(),
        Some("Pod was rejected: Resources cannot be allocated with Topology locality")
    );
    assert!(
        kubelet
            .statuses()
            .get(&uid("fits"))
            .is_none_or(|s| s.reason.is_none())
    );
    let known: Vec<String> = kubelet.pods().iter().map(|p| crate::uid_of(p)).collect();
    assert_eq!(known, [uid("fits")]);

    // Any other failure is upstream's unexpectedAdmissionError.
    let kubelet = refusing_kubelet(&h, || kubelet_cm::Error::InvalidConfig("no NUMA".into()));
    kubelet.handle_pod_additions(vec![pod("odd", "Always", 1)]);
    let st = kubelet.statuses().get(&uid("odd")).expect("rejected");
    assert_eq!(st.reason.as_deref(), Some("UnexpectedAdmissionError"));
    assert_eq!(
        st.message.as_deref(),
        Some(
            "Pod was rejected: Allocate failed due to invalid configuration: no NUMA, which is unexpected"
        )
    );
}

/// What the kubelet asked of the API server's mirror pods.
#[derive(Default)]
struct FakeMirrors {
    created: Mutex<Vec<String>>,
    deleted: Mutex<Vec<(String, Option<String>)>>,
}

#[async_trait]
impl crate::mirror::MirrorClient for FakeMirrors {
    async fn create_mirror_pod(&self, pod: &Pod) -> Result<(), crate::mirror::MirrorError> {
        self.created
            .lock()
            .expect("created")
            .push(kubelet_container::pod::pod_full_name(pod));
        Ok(())
    }

    async fn delete_mirror_pod(
        &self,
        full_name: &str,
        uid: Option<&str>,
    ) -> Result<bool, crate::mirror::MirrorError> {
        self.deleted
            .lock()
            .expect("deleted")
            .push((full_name.into(), uid.map(str::to_owned)));
        Ok(true)
    }
}

/// A static pod (file source, with its hash) and the mirror pod the API
/// server would hold for it.
fn static_and_mirror(name: &str) -> (Pod, Pod) {
    let mut pod = pod(name, "Always", 1);
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(
        kubelet_container::pod::CONFIG_SOURCE_ANNOTATION.into(),
        "file".into(),
    );
    annotations.insert(
        kubelet_container::pod::CONFIG_HASH_ANNOTATION.into(),
        uid(name),
    );
    let mut mirror = crate::mirror::mirror_pod_for(&pod, "node-1", "node-uid");
    mirror.metadata.uid = Some(format!("mirror-{name}"));
    mirror
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            kubelet_container::pod::CONFIG_SOURCE_ANNOTATION.into(),
            "api".into(),
        );
    (pod, mirror)
}

#[tokio::test(start_paused = true)]
async fn static_pods_get_mirror_pods_that_never_run_and_come_back_when_deleted() {
    let mirrors = Arc::new(FakeMirrors::default());
    let h = harness_with(
        110,
        crate::KubeletParts {
            mirror_client: Some(mirrors.clone()),
            ..Default::default()
        },
    );
    let (web, mirror) = static_and_mirror("web");
    let created = |m: &FakeMirrors| m.created.lock().expect("created").clone();

    // The static pod runs and its mirror pod is created (each sync before
    // the API server's copy arrives asks again, as upstream; the API
    // server answers AlreadyExists, which is success).
    h.start(&web).await;
    assert!(!created(&mirrors).is_empty());
    assert!(created(&mirrors).iter().all(|n| n == "web_default"));

    // The API server's mirror pod arrives: it is not run, and its static
    // pod is synced with it, without asking for it again.
    h.kubelet.handle_pod_additions(vec![mirror.clone()]);
    h.relist(true).await;
    assert!(h.runtime_pod("mirror-web").await.is_none());
    assert_eq!(h.runtime.syncs("mirror-web"), 0);
    assert_eq!(h.known_uids(), [uid("web")]);
    let creates = created(&mirrors).len();
    h.kubelet.handle_event(&uid("web"));
    h.relist(true).await;
    h.relist(true).await;
    assert_eq!(created(&mirrors).len(), creates);

    // A user deletes the mirror pod: it is created again.
    h.kubelet.handle_pod_removes(vec![mirror.clone()]);
    h.until("the mirror pod is recreated", async |_| {
        created(&mirrors).len() > creates
    })
    .await;
    assert!(
        h.is_running(&uid("web")).await,
        "the static pod kept running"
    );

    // A mirror pod of another version of the static pod is replaced: deleted
    // with its UID as precondition, then created.
    let mut stale = mirror.clone();
    stale
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            kubelet_container::pod::CONFIG_MIRROR_ANNOTATION.into(),
            "old-hash".into(),
        );
    h.kubelet.handle_pod_updates(vec![stale]);
    h.until("the stale mirror pod is deleted", async |_| {
        !mirrors.deleted.lock().expect("deleted").is_empty()
    })
    .await;
    assert_eq!(
        mirrors.deleted.lock().expect("deleted")[0],
        ("web_default".to_owned(), Some("mirror-web".to_owned()))
    );
    let creates = created(&mirrors).len();
    h.kubelet.handle_pod_removes(vec![mirror.clone()]);
    h.until("a new mirror pod is created", async |_| {
        created(&mirrors).len() > creates
    })
    .await;

    // The static pod goes: housekeeping deletes its orphaned mirror pod.
    h.kubelet.handle_pod_additions(vec![mirror.clone()]);
    h.kubelet.handle_pod_removes(vec![web.clone()]);
    h.until("the static pod is gone", async |h| {
        h.kubelet.handle_pod_cleanups().await;
        !h.is_running(&uid("web")).await
    })
    .await;
    h.until("the orphaned mirror pod is deleted", async |h| {
        h.kubelet.handle_pod_cleanups().await;
        mirrors.deleted.lock().expect("deleted").len() >= 2
    })
    .await;
    assert_eq!(
        mirrors.deleted.lock().expect("deleted")[1],
        ("web_default".to_owned(), Some("mirror-web".to_owned()))
    );
}

/// A pod bound past the scheduler that asks for more CPU or memory than
/// the node has left is rejected with upstream's `OutOfcpu` /
/// `OutOfmemory`, its message, and a Warning event; the pods that fit run.
#[tokio::test(start_paused = true)]
async fn a_pod_asking_more_than_allocatable_is_out_of_cpu_with_an_event() {
    let h = harness(110);
    let mut config = KubeletConfig::new("node-1");
    config.root_dir = h.root.path().to_path_buf();
    let parts = crate::KubeletParts {
        cm: Some(Arc::new(RefusingCm {
            refusal: || kubelet_cm::Error::InvalidConfig("unused".into()),
            allocatable: kubelet_cm::ResourceList::from([
                ("cpu".to_owned(), 1000),
                ("memory".to_owned(), 1 << 30),
            ]),
        })),
        ..Default::default()
    };
    let events = Arc::new(kubelet_container::events::FakeRecorder::new());
    let kubelet = Kubelet::with_parts(config, h.runtime.clone(), Arc::new(PodCache::new()), parts)
        .expect("kubelet")
        .with_event_recorder(events.clone());
    let with_requests = |name: &str, created: u32, cpu: &str, memory: &str| {
        let mut p = pod(name, "Always", created);
        p.spec.as_mut().expect("spec").containers[0].resources =
            Some(k8s_openapi::api::core::v1::ResourceRequirements {
                requests: Some(
                    [("cpu", cpu), ("memory", memory)]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
                        .collect(),
                ),
                ..Default::default()
            });
        p
    };
    kubelet.handle_pod_additions(vec![
        with_requests("fits-a", 1, "600m", "100Mi"),
        with_requests("fits-cpu-hog", 2, "600m", "100Mi"),
        with_requests("fits-mem-hog", 3, "100m", "2Gi"),
        with_requests("fits-b", 4, "400m", "100Mi"),
    ]);
    let st = kubelet
        .statuses()
        .get(&uid("fits-cpu-hog"))
        .expect("rejected");
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("OutOfcpu"));
    assert_eq!(
        st.message.as_deref(),
        Some(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 600, used: 600, capacity: 1000"
        )
    );
    let st = kubelet
        .statuses()
        .get(&uid("fits-mem-hog"))
        .expect("rejected");
    assert_eq!(st.reason.as_deref(), Some("OutOfmemory"));
    let mut known: Vec<String> = kubelet.pods().iter().map(|p| crate::uid_of(p)).collect();
    known.sort();
    assert_eq!(known, [uid("fits-a"), uid("fits-b")]);
    assert_eq!(
        events.strings(),
        [
            "Warning OutOfcpu Node didn't have enough resource: cpu, requested: 600, used: 600, capacity: 1000",
            "Warning OutOfmemory Node didn't have enough resource: memory, requested: 2147483648, used: 104857600, capacity: 1073741824",
        ]
    );
}

// ---- volumes (upstream volume manager, operation executor) ----

/// An API server with one secret, `present` (key `k`), and no config maps.
struct OneSecret;

#[async_trait]
impl kubelet_volumemanager::ApiObjects for OneSecret {
    async fn get_secret(
        &self,
        _namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::Secret>, kubelet_volumemanager::Error> {
        Ok(
            (name == "present").then(|| k8s_openapi::api::core::v1::Secret {
                data: Some([("k".to_owned(), k8s_openapi::ByteString(b"v".to_vec()))].into()),
                ..Default::default()
            }),
        )
    }

    async fn get_config_map(
        &self,
        _namespace: &str,
        _name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::ConfigMap>, kubelet_volumemanager::Error> {
        Ok(None)
    }

    async fn request_token(
        &self,
        _request: &kubelet_volumemanager::ServiceAccountTokenRequest,
    ) -> Result<kubelet_volumemanager::IssuedToken, kubelet_volumemanager::Error> {
        Err(kubelet_volumemanager::Error::InvalidVolume {
            reason: "no tokens here".into(),
        })
    }
}

/// A pod whose volume `creds` is the secret `secret` (not optional).
fn pod_with_secret(name: &str, secret: &str) -> Pod {
    let mut p = pod(name, "Always", 1);
    let spec = p.spec.as_mut().expect("spec");
    spec.volumes = Some(vec![k8s_openapi::api::core::v1::Volume {
        name: "creds".into(),
        secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
            secret_name: Some(secret.into()),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    spec.containers[0].volume_mounts = Some(vec![k8s_openapi::api::core::v1::VolumeMount {
        name: "creds".into(),
        mount_path: "/creds".into(),
        ..Default::default()
    }]);
    p
}

/// A pod whose secret does not exist gets upstream's `FailedMount` Warning
/// (the operation executor's `MountVolume.SetUp failed for volume "creds"
/// : secret "gone" not found`), once per failed sync, and never runs: its
/// container waits in ContainerCreating. A pod whose secret exists runs
/// without one.
#[tokio::test(start_paused = true)]
async fn a_pod_with_a_missing_secret_gets_failed_mount_events_and_does_not_run() {
    let parts = crate::KubeletParts {
        api_volumes: Some(Arc::new(
            kubelet_volumemanager::ApiVolumes::new(Arc::new(OneSecret)).memory_backed(false),
        )),
        ..Default::default()
    };
    let mut h = harness_with(110, parts);
    let events = Arc::new(kubelet_container::events::FakeRecorder::new());
    let kubelet = Arc::into_inner(h.kubelet).expect("the harness's only reference");
    h.kubelet = Arc::new(kubelet.with_event_recorder(events.clone()));

    let missing = pod_with_secret("missing", "gone");
    let present = pod_with_secret("present", "present");
    h.start(&present).await;
    h.kubelet.handle_pod_additions(vec![missing.clone()]);
    h.until("a FailedMount event", async |_| !events.events().is_empty())
        .await;
    let recorded = events.events();
    let e = &recorded[0];
    assert_eq!(
        e.to_string(),
        "Warning FailedMount MountVolume.SetUp failed for volume \"creds\" : secret \"gone\" not found"
    );
    assert_eq!(e.object, kubelet_container::events::pod_ref(&missing));
    // One event per failed sync: the pod's volume, not a second one for
    // the volume that could not be prepared after it.
    assert!(
        recorded.iter().all(|r| r.message == e.message),
        "{recorded:?}"
    );
    assert_eq!(h.runtime.syncs(&uid("missing")), 0);
    assert!(h.runtime_pod(&uid("missing")).await.is_none());
    let waiting = h
        .kubelet
        .statuses()
        .get(&uid("missing"))
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.state?.waiting?.reason);
    assert_eq!(waiting.as_deref(), Some("ContainerCreating"));
    assert!(h.is_running(&uid("present")).await);
    assert!(
        recorded
            .iter()
            .all(|r| r.object.name.as_deref() == Some("missing")),
        "{recorded:?}"
    );
}

/// [`OneSecret`] that records which pods are registered with it (the
/// secret and configMap managers' `RegisterPod`/`UnregisterPod`).
#[derive(Default)]
struct Registrations(std::sync::Mutex<Vec<String>>);

#[async_trait]
impl kubelet_volumemanager::ApiObjects for Registrations {
    async fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::Secret>, kubelet_volumemanager::Error> {
        OneSecret.get_secret(namespace, name).await
    }

    async fn get_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::ConfigMap>, kubelet_volumemanager::Error> {
        OneSecret.get_config_map(namespace, name).await
    }

    async fn request_token(
        &self,
        request: &kubelet_volumemanager::ServiceAccountTokenRequest,
    ) -> Result<kubelet_volumemanager::IssuedToken, kubelet_volumemanager::Error> {
        OneSecret.request_token(request).await
    }

    fn register_pod(&self, pod: &Pod) {
        let mut r = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let uid = crate::uid_of(pod);
        if !r.contains(&uid) {
            r.push(uid);
        }
    }

    fn unregister_pod(&self, pod: &Pod) {
        let uid = crate::uid_of(pod);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|u| *u != uid);
    }
}

/// Upstream `SyncPod` registers the pod with the secret and configMap
/// managers (their watches start) and `SyncTerminatedPod` unregisters it.
#[tokio::test(start_paused = true)]
async fn pods_are_registered_with_the_object_managers_while_they_run() {
    let registrations = Arc::new(Registrations::default());
    let parts = crate::KubeletParts {
        api_volumes: Some(Arc::new(
            kubelet_volumemanager::ApiVolumes::new(registrations.clone()).memory_backed(false),
        )),
        ..Default::default()
    };
    let h = harness_with(110, parts);
    let registered = || registrations.0.lock().expect("lock").clone();
    let web = pod_with_secret("web", "present");
    h.start(&web).await;
    assert_eq!(registered(), [uid("web")]);
    h.kubelet.handle_pod_removes(vec![web]);
    h.until("the removed pod is terminated", async |h| {
        h.kubelet.workers.is_pod_known_terminated(&uid("web"))
    })
    .await;
    h.until("the pod is unregistered", async |_| registered().is_empty())
        .await;
}

/// Upstream `makeEnvironmentVariables` through the syncer: a standalone
/// kubelet fails only the container whose env refers to a Secret, waiting
/// with `CreateContainerConfigError` and upstream's message, while the
/// other container runs with the node's IP as `status.hostIP`.
#[tokio::test(start_paused = true)]
async fn a_container_whose_env_cannot_be_made_waits_with_create_container_config_error() {
    let h = harness_configured(110, crate::KubeletParts::default(), |c| {
        c.node_ips = vec!["192.0.2.7".parse().expect("ip")];
    });
    let mut p = pod("envs", "Always", 1);
    let spec = p.spec.as_mut().expect("spec");
    let mut side = spec.containers[0].clone();
    side.name = "side".into();
    side.env = Some(vec![
        serde_json::from_value(serde_json::json!(
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}
        ))
        .expect("env"),
    ]);
    spec.containers[0].env = Some(vec![
        serde_json::from_value(serde_json::json!(
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
        ))
        .expect("env"),
    ]);
    spec.containers.push(side);
    let id = uid("envs");
    h.kubelet.handle_pod_additions(vec![p]);
    let waiting = |kubelet: &Kubelet<Arc<PodCache>>| {
        kubelet.statuses().get(&id).and_then(|s| {
            let statuses = s.container_statuses?;
            let app = statuses.iter().find(|c| c.name == "app")?;
            let side = statuses.iter().find(|c| c.name == "side")?;
            let w = app.state.clone()?.waiting?;
            side.state.clone()?.running?;
            Some((w.reason?, w.message?))
        })
    };
    h.until("app waits beside a running side", async |h| {
        waiting(&h.kubelet).is_some()
    })
    .await;
    let found = waiting(&h.kubelet).expect("waiting");
    assert_eq!(
        found,
        (
            "CreateContainerConfigError".to_owned(),
            "couldn't get secret default/db, no kubeClient defined".to_owned()
        )
    );
    let running = h.runtime_pod(&id).await.expect("the pod runs");
    assert!(
        running.containers.iter().all(|c| c.name == "side"),
        "{running:?}"
    );
    let side = h.container_id(&id, "side").await;
    let config = h.fake.container_config(&side).expect("side's config");
    assert!(
        config
            .envs
            .iter()
            .any(|kv| kv.key == "HOST_IP" && kv.value == "192.0.2.7"),
        "{:?}",
        config.envs
    );
}

// ---- the node API host (upstream findContainer, RunInContainer) ----

/// `/run` finds the container in the PLEG's cache without asking the
/// runtime; when the cache names a container the runtime no longer has
/// (it is stale), the runtime is asked and the command runs in the live
/// container. A command that fails is not run twice.
#[tokio::test(start_paused = true)]
async fn node_api_sessions_use_the_cache_then_the_runtime_when_it_is_stale() {
    use kubelet_server::{NodeApi, RunOutcome};
    let h = harness(110);
    let web = pod("web", "Always", 1);
    let id = uid("web");
    h.start(&web).await;
    let live = h.container_id(&id, "app").await;
    let runs = Arc::new(Mutex::new(Vec::new()));
    let seen = runs.clone();
    h.fake.set_exec_handler(move |container, cmd| {
        seen.lock().expect("runs").push(container.to_owned());
        kubelet_cri_client::api::ExecSyncResponse {
            stdout: container.as_bytes().to_vec(),
            exit_code: if cmd.first().map(String::as_str) == Some("false") {
                1
            } else {
                0
            },
            ..Default::default()
        }
    });
    let cache = Arc::new(PodCache::new());
    let api = crate::node_api::KubeletNodeApi::new(
        h.kubelet.clone(),
        h.runtime.clone(),
        Arc::new(h.fake.clone()),
        serde_json::json!({}),
        "node-1",
        kubelet_eviction::cgroup_summary::CgroupSummaryProvider::default(),
    )
    .with_pod_cache(cache.clone());
    let status = h
        .runtime
        .get_pod_status(&id, "web", "default")
        .await
        .expect("status");
    cache.set(
        &id,
        Ok(Arc::new(status.clone())),
        tokio::time::Instant::now(),
    );
    let lists = |h: &Harness| {
        h.fake
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("List"))
            .count()
    };

    // Fresh cache: no runtime listing.
    h.fake.clear_calls();
    let run = |cmd: &str| {
        let api = &api;
        let cmd = vec![cmd.to_owned()];
        async move {
            api.run_in_container("default", "web", None, "app", &cmd)
                .await
        }
    };
    assert_eq!(
        run("echo").await,
        RunOutcome::Output(live.clone().into_bytes())
    );
    assert_eq!(lists(&h), 0, "{:?}", h.fake.calls());

    // A stale cache: its container is gone from the runtime.
    let mut stale = status.clone();
    for c in &mut stale.container_statuses {
        c.id = "gone".into();
    }
    cache.set(&id, Ok(Arc::new(stale)), tokio::time::Instant::now());
    h.fake.clear_calls();
    assert_eq!(
        run("echo").await,
        RunOutcome::Output(live.clone().into_bytes())
    );
    assert!(lists(&h) > 0, "the runtime was asked: {:?}", h.fake.calls());

    // A command that fails ran once, and its failure is the answer.
    cache.set(&id, Ok(Arc::new(status)), tokio::time::Instant::now());
    runs.lock().expect("runs").clear();
    match run("false").await {
        RunOutcome::Failed(m) => assert!(m.contains("exited with 1"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(runs.lock().expect("runs").len(), 1);

    // No such pod, and a UID that is not the pod's.
    assert_eq!(
        api.run_in_container("default", "nope", None, "app", &[])
            .await,
        RunOutcome::PodNotFound
    );
    assert_eq!(
        api.run_in_container("default", "web", Some("other-uid"), "app", &[])
            .await,
        RunOutcome::PodNotFound
    );
}
