//! Property tests: the status patch takes the API's status exactly to the
//! merged one; the merge converges (after a PATCH nothing more is sent);
//! and the version / sync state machine, driven by random status changes,
//! sync rounds, API outages, a controller writing its own condition and
//! containers stopping, against a fake API server.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use hyper::Request;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, PodCondition,
    PodIP, PodStatus,
};
use kube::client::Body;
use kubelet_status::merge::{is_phase_terminal, merge_pod_status, pod_condition_by_kubelet};
use kubelet_status::patch::status_patch;
use kubelet_status::{StatusManager, StatusSync};
use proptest::prelude::*;
use serde_json::{Value, json};

const TYPES: [&str; 7] = [
    "PodScheduled",
    "Ready",
    "ContainersReady",
    "Initialized",
    "PodReadyToStartContainers",
    "DisruptionTarget",
    "example.com/gate",
];
const PHASES: [&str; 4] = ["Pending", "Running", "Succeeded", "Failed"];

fn time(i: u8) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    serde_json::from_value(json!(format!("2024-01-01T00:00:0{i}Z"))).unwrap()
}

fn conditions() -> impl Strategy<Value = Vec<PodCondition>> {
    proptest::sample::subsequence(TYPES.to_vec(), 0..=TYPES.len())
        .prop_flat_map(|types| {
            let n = types.len();
            (
                Just(types),
                proptest::collection::vec(
                    (
                        any::<bool>(),
                        proptest::option::of(0u8..3),
                        proptest::option::of(0u8..3),
                    ),
                    n,
                ),
            )
        })
        .prop_map(|(types, attrs)| {
            types
                .into_iter()
                .zip(attrs)
                .map(|(t, (ok, reason, at))| PodCondition {
                    type_: t.into(),
                    status: if ok { "True" } else { "False" }.into(),
                    reason: reason.map(|r| format!("Reason{r}")),
                    last_transition_time: at.map(time),
                    ..Default::default()
                })
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

fn container(name: &'static str) -> impl Strategy<Value = ContainerStatus> {
    (any::<bool>(), proptest::option::of(0i32..3)).prop_map(move |(ready, exit)| ContainerStatus {
        name: name.into(),
        image: "busybox".into(),
        ready,
        state: Some(match exit {
            Some(code) => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            },
            None => ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            },
        }),
        ..Default::default()
    })
}

fn status() -> impl Strategy<Value = PodStatus> {
    (
        proptest::option::of(proptest::sample::select(PHASES.to_vec())),
        proptest::option::of(conditions()),
        proptest::option::of(proptest::collection::vec(
            prop_oneof![container("a"), container("b")],
            0..3,
        )),
        proptest::option::of(prop_oneof![Just("x"), Just("y"), Just("")]),
        proptest::sample::subsequence(vec!["10.0.0.1", "10.0.0.2", "fd00::1"], 0..=3)
            .prop_shuffle(),
        proptest::option::of(prop_oneof![Just("192.168.1.1"), Just("192.168.1.2")]),
    )
        .prop_map(
            |(phase, conditions, containers, message, ips, host)| PodStatus {
                phase: phase.map(str::to_owned),
                conditions,
                container_statuses: containers,
                message: message.map(str::to_owned),
                pod_ips: Some(ips.into_iter().map(|ip| PodIP { ip: ip.into() }).collect()),
                host_ip: host.map(str::to_owned),
                ..Default::default()
            },
        )
}

fn json_of(s: &PodStatus) -> Value {
    pruned(&serde_json::to_value(s).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Applying the patch to the API's status gives exactly the new one
    /// (order of merged lists included); no patch means no difference.
    #[test]
    fn the_patch_takes_old_exactly_to_new(old in status(), new in status()) {
        match status_patch("uid", &old, &new) {
            None => prop_assert_eq!(json_of(&old), json_of(&new)),
            Some(patch) => {
                prop_assert_eq!(&patch["metadata"], &json!({"uid": "uid"}));
                prop_assert_ne!(json_of(&old), json_of(&new));
                let applied = apply_status_patch(&old, &patch);
                prop_assert_eq!(json_of(&applied), json_of(&new), "patch {}", patch);
            }
        }
        prop_assert!(status_patch("uid", &new, &new).is_none());
    }

    /// The merge keeps a terminal API phase, keeps what the kubelet does not
    /// own, takes what it owns from the kubelet, and converges: once the
    /// API server applied the patch, merging again sends nothing.
    #[test]
    fn the_merge_keeps_what_is_not_the_kubelets_and_converges(
        api in status(), kubelet in status(), could_run in any::<bool>()
    ) {
        let merged = merge_pod_status(&api, &kubelet, could_run);
        if is_phase_terminal(api.phase.as_deref()) {
            prop_assert_eq!(&merged.phase, &api.phase);
        }
        if could_run && !is_phase_terminal(api.phase.as_deref()) {
            prop_assert!(!is_phase_terminal(merged.phase.as_deref()) || merged.phase == api.phase);
        }
        let find = |s: &PodStatus, t: &str| s.conditions.iter().flatten().find(|c| c.type_ == t).cloned();
        for c in api.conditions.iter().flatten() {
            if !pod_condition_by_kubelet(&c.type_) && c.type_ != "DisruptionTarget" {
                prop_assert_eq!(find(&merged, &c.type_), Some(c.clone()));
            }
        }
        let terminal = is_phase_terminal(merged.phase.as_deref());
        for c in kubelet.conditions.iter().flatten() {
            let forced = terminal && (c.type_ == "Ready" || c.type_ == "ContainersReady");
            if pod_condition_by_kubelet(&c.type_) && !forced {
                let m = find(&merged, &c.type_).expect("owned condition sent");
                prop_assert_eq!((&m.status, &m.reason), (&c.status, &c.reason));
            }
        }
        if terminal {
            for t in ["Ready", "ContainersReady"] {
                prop_assert!(find(&merged, t).is_none_or(|c| c.status == "False"));
            }
        }
        // Converges.
        let stored = match status_patch("uid", &api, &merged) {
            Some(p) => apply_status_patch(&api, &p),
            None => api.clone(),
        };
        let again = merge_pod_status(&stored, &kubelet, could_run);
        let resend = status_patch("uid", &stored, &again);
        prop_assert!(resend.is_none(), "re-sent {:?}", resend);
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// The kubelet records a status.
    Set {
        phase: usize,
        ready: bool,
        exit: Option<i32>,
    },
    /// A sync round (`all`: the periodic one).
    Sync { all: bool },
    /// The API server goes away or comes back.
    Down(bool),
    /// A controller writes its readiness gate condition.
    Gate(bool),
    /// The pod's containers could run, or not.
    CouldRun(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..PHASES.len(), any::<bool>(), proptest::option::of(0i32..2))
            .prop_map(|(phase, ready, exit)| Op::Set { phase, ready, exit }),
        3 => any::<bool>().prop_map(|all| Op::Sync { all }),
        1 => any::<bool>().prop_map(Op::Down),
        1 => any::<bool>().prop_map(Op::Gate),
        1 => any::<bool>().prop_map(Op::CouldRun),
    ]
}

fn kubelet_status(phase: &str, ready: bool, exit: Option<i32>) -> PodStatus {
    let r = if ready { "True" } else { "False" };
    let cond = |t: &str, s: &str| PodCondition {
        type_: t.into(),
        status: s.into(),
        ..Default::default()
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![
            cond("Initialized", "True"),
            cond("ContainersReady", r),
            cond("Ready", r),
            cond("PodScheduled", "True"),
        ]),
        container_statuses: Some(vec![ContainerStatus {
            name: "app".into(),
            image: "busybox".into(),
            ready,
            state: Some(match exit {
                Some(code) => ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                None => ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn run_model(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let api = FakeApi::new();
        let mut pod = pod_json("web", "u1", "Pending");
        pod["spec"]["restartPolicy"] = json!("Always");
        api.put(pod.clone());
        let local = pod_of(&pod);
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let service = {
            let api = Arc::clone(&api);
            let down = Arc::clone(&down);
            tower::service_fn(move |req: Request<Body>| {
                let api = Arc::clone(&api);
                let down = down.load(std::sync::atomic::Ordering::SeqCst);
                async move {
                    if down {
                        return Err::<_, Box<dyn std::error::Error + Send + Sync>>(
                            "connection refused".into(),
                        );
                    }
                    let s = seen_of(req).await;
                    let (code, body) = api.answer(&s);
                    Ok(respond(code, &body))
                }
            })
        };
        let client = kube::Client::new(service, "default");
        let statuses = Arc::new(StatusManager::default());
        let safety = Safety::new(true);
        let mut sync = StatusSync::new(client, Arc::clone(&statuses), FakePods::new(&api), safety.clone());

        let mut last_set: Option<(usize, bool, Option<i32>)> = None;
        let mut gate: Option<bool> = None;
        let mut terminal_api_phase: Option<String> = None;
        let mut terminal_kubelet_phase: Option<String> = None;
        for op in ops {
            let before = statuses.version("u1").unwrap_or(0);
            match op.clone() {
                Op::Set { phase, ready, exit } => {
                    let recorded = statuses
                        .set_pod_status(&local, kubelet_status(PHASES[phase], ready, exit))
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let after = statuses.version("u1").unwrap_or(0);
                    prop_assert!(after == before || after == before + 1, "version {before} -> {after}");
                    if last_set == Some((phase, ready, exit)) {
                        prop_assert_eq!(after, before, "the same status bumped the version");
                    }
                    last_set = Some((phase, ready, exit));
                    if let Some(t) = &terminal_kubelet_phase {
                        prop_assert_eq!(recorded.phase.as_ref(), Some(t));
                    } else if is_phase_terminal(recorded.phase.as_deref()) {
                        terminal_kubelet_phase = recorded.phase.clone();
                    }
                }
                Op::Sync { all } => {
                    let reports = sync.sync_batch(all).await;
                    let up = !down.load(std::sync::atomic::Ordering::SeqCst);
                    let ok = reports.iter().all(|r| r.result.is_ok());
                    prop_assert_eq!(ok, up || reports.is_empty(), "{:?}", reports);
                    if up {
                        let v = statuses.version("u1");
                        prop_assert_eq!(sync.api_status_version("u1"), v, "all={}", all);
                        if let (true, Some(kubelet)) = (all, statuses.get("u1")) {
                            let stored = api.pod("team", "web").unwrap().status.unwrap_or_default();
                            let could_run = safety.could_run.load(std::sync::atomic::Ordering::SeqCst);
                            let merged = merge_pod_status(&stored, &kubelet, could_run);
                            let pending = status_patch("u1", &stored, &merged);
                            prop_assert!(pending.is_none(), "left to send after a periodic round: {:?}", pending);
                        }
                    }
                }
                Op::Down(d) => down.store(d, std::sync::atomic::Ordering::SeqCst),
                Op::Gate(ok) => {
                    let mut pods = api.pods.lock().unwrap();
                    let p = pods.get_mut("team/web").unwrap();
                    let conditions = p["status"]
                        .as_object_mut()
                        .unwrap()
                        .entry("conditions")
                        .or_insert_with(|| json!([]));
                    let list = conditions.as_array_mut().unwrap();
                    list.retain(|c| c["type"] != "example.com/gate");
                    list.push(json!({"type": "example.com/gate", "status": if ok { "True" } else { "False" }}));
                    gate = Some(ok);
                }
                Op::CouldRun(c) => safety.set(c),
            }
            // What holds after every step.
            let stored = api.pod("team", "web").unwrap().status.unwrap_or_default();
            if let Some(t) = &terminal_api_phase {
                prop_assert_eq!(stored.phase.as_ref(), Some(t), "a terminal phase regressed");
            } else if is_phase_terminal(stored.phase.as_deref()) {
                terminal_api_phase = stored.phase.clone();
            }
            if let Some(ok) = gate {
                let c = stored
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == "example.com/gate")
                    .map(|c| c.status.clone());
                prop_assert_eq!(c.as_deref(), Some(if ok { "True" } else { "False" }), "the controller's condition was lost");
            }
            prop_assert_eq!(*api.useless_patches.lock().unwrap(), 0, "a PATCH changed nothing");
            for s in api.seen.lock().unwrap().iter().filter(|s| s.method == "PATCH") {
                prop_assert_eq!(&s.body["metadata"]["uid"], "u1");
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    /// Versions only grow, and only on a real change; a round with the API
    /// server up leaves nothing unsent; outages lose nothing; a terminal
    /// phase never regresses; the controller's condition survives; every
    /// PATCH carries the UID precondition and changes something.
    #[test]
    fn the_sync_state_machine_holds(ops in proptest::collection::vec(op(), 1..40)) {
        run_model(ops)?;
    }
}
