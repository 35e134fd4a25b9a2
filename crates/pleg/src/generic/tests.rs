//! The transition table (upstream `generic_test.go`'s `TestRelisting`
//! cases, at the level of one container) and the event computation.

use kubelet_container::{RunningContainer, RunningSandbox};
use proptest::prelude::*;

use super::*;
use PlegState::*;
use PodLifecycleEventType::*;

fn kinds(old: PlegState, new: PlegState) -> Vec<PodLifecycleEventType> {
    let mut out = Vec::new();
    generate_events("uid", "cid", old, new, &mut out);
    assert!(out.iter().all(|e| e.pod_uid == "uid" && e.data == "cid"));
    out.into_iter().map(|e| e.kind).collect()
}

#[test]
fn the_transition_table() {
    let all = [Running, Exited, Unknown, NonExistent];
    for old in all {
        for new in all {
            let want: &[PodLifecycleEventType] = match (old, new) {
                _ if old == new => &[],
                (_, Running) => &[ContainerStarted],
                (_, Exited) => &[ContainerDied],
                (_, Unknown) => &[ContainerChanged],
                (Exited, NonExistent) => &[ContainerRemoved],
                (_, NonExistent) => &[ContainerDied, ContainerRemoved],
            };
            assert_eq!(kinds(old, new), want, "{old:?} -> {new:?}");
        }
    }
    // Spelled out, the cases that matter most.
    assert_eq!(kinds(NonExistent, Running), [ContainerStarted]);
    assert_eq!(kinds(Running, Exited), [ContainerDied]);
    assert_eq!(kinds(Exited, NonExistent), [ContainerRemoved]);
    assert_eq!(
        kinds(Running, NonExistent),
        [ContainerDied, ContainerRemoved]
    );
    assert_eq!(
        kinds(Unknown, NonExistent),
        [ContainerDied, ContainerRemoved]
    );
    assert_eq!(kinds(Exited, Running), [ContainerStarted]);
}

#[test]
fn created_counts_as_unknown() {
    assert_eq!(PlegState::from(ContainerState::Created), Unknown);
    assert_eq!(PlegState::from(ContainerState::Unknown), Unknown);
    assert_eq!(PlegState::from(ContainerState::Running), Running);
    assert_eq!(PlegState::from(ContainerState::Exited), Exited);
}

fn pod(containers: &[(&str, ContainerState)], sandboxes: &[(&str, bool)]) -> RunningPod {
    RunningPod {
        uid: "uid".into(),
        name: "p".into(),
        namespace: "default".into(),
        sandboxes: sandboxes
            .iter()
            .map(|(id, ready)| RunningSandbox {
                id: (*id).into(),
                ready: *ready,
                created_at: 0,
            })
            .collect(),
        containers: containers
            .iter()
            .map(|(id, state)| RunningContainer {
                id: (*id).into(),
                name: (*id).into(),
                state: *state,
                created_at: 0,
                hash: None,
                pod_termination_grace_period: None,
            })
            .collect(),
    }
}

fn pairs(events: Vec<PodLifecycleEvent>) -> Vec<(String, PodLifecycleEventType)> {
    events.into_iter().map(|e| (e.data, e.kind)).collect()
}

#[test]
fn pod_events_cover_containers_and_sandboxes() {
    use ContainerState as S;
    let old = pod(
        &[("c1", S::Running), ("c2", S::Running), ("c3", S::Exited)],
        &[("s1", true)],
    );
    let new = pod(
        &[("c1", S::Running), ("c2", S::Exited), ("c4", S::Created)],
        &[("s1", false), ("s2", true)],
    );
    let got = pairs(compute_pod_events("uid", Some(&old), Some(&new)));
    assert_eq!(
        got,
        [
            ("c2".into(), ContainerDied),
            ("c3".into(), ContainerRemoved),
            ("s1".into(), ContainerDied),
            ("c4".into(), ContainerChanged),
            ("s2".into(), ContainerStarted),
        ]
    );
    // A new pod: everything started; a vanished pod: everything removed.
    assert_eq!(
        pairs(compute_pod_events("uid", None, Some(&old))),
        [
            ("c1".into(), ContainerStarted),
            ("c2".into(), ContainerStarted),
            ("c3".into(), ContainerDied),
            ("s1".into(), ContainerStarted),
        ]
    );
    assert_eq!(
        pairs(compute_pod_events("uid", Some(&old), None)),
        [
            ("c1".into(), ContainerDied),
            ("c1".into(), ContainerRemoved),
            ("c2".into(), ContainerDied),
            ("c2".into(), ContainerRemoved),
            ("c3".into(), ContainerRemoved),
            ("s1".into(), ContainerDied),
            ("s1".into(), ContainerRemoved),
        ]
    );
    assert!(compute_pod_events("uid", Some(&old), Some(&old)).is_empty());
}

#[test]
fn durations_print_as_go_does() {
    assert_eq!(go_duration(Duration::ZERO), "0s");
    assert_eq!(go_duration(Duration::from_nanos(15)), "15ns");
    assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
    assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(go_duration(Duration::from_secs(1)), "1s");
    assert_eq!(go_duration(Duration::from_millis(21_500)), "21.5s");
    assert_eq!(go_duration(Duration::from_secs(180)), "3m0s");
    assert_eq!(go_duration(Duration::from_secs(181)), "3m1s");
    assert_eq!(go_duration(Duration::from_secs(600)), "10m0s");
    assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
}

fn arb_state() -> impl Strategy<Value = ContainerState> {
    prop_oneof![
        Just(ContainerState::Created),
        Just(ContainerState::Running),
        Just(ContainerState::Exited),
        Just(ContainerState::Unknown),
    ]
}

fn arb_pod() -> impl Strategy<Value = Option<RunningPod>> {
    proptest::option::of(
        (
            proptest::collection::btree_map(0u8..8, arb_state(), 0..6),
            proptest::collection::btree_map(100u8..103, any::<bool>(), 0..3),
        )
            .prop_map(|(cs, ss)| {
                let cs: Vec<(String, ContainerState)> =
                    cs.into_iter().map(|(k, v)| (format!("c{k}"), v)).collect();
                let ss: Vec<(String, bool)> =
                    ss.into_iter().map(|(k, v)| (format!("s{k}"), v)).collect();
                let cs: Vec<(&str, ContainerState)> =
                    cs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                let ss: Vec<(&str, bool)> = ss.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                pod(&cs, &ss)
            }),
    )
}

proptest! {
    /// Replaying the events on the old states gives the new states: every
    /// container whose state changed gets exactly the table's events, and
    /// no other container gets any.
    #[test]
    fn events_are_exactly_the_state_changes(old in arb_pod(), new in arb_pod()) {
        let events = compute_pod_events("uid", old.as_ref(), new.as_ref());
        let all: HashSet<&str> = ids_of(old.as_ref()).chain(ids_of(new.as_ref())).map(|(id, _)| id).collect();
        for id in all {
            let (o, n) = (state_in(old.as_ref(), id), state_in(new.as_ref(), id));
            let mine: Vec<_> = events.iter().filter(|e| e.data == id).map(|e| e.kind).collect();
            let mut want = Vec::new();
            generate_events("uid", id, o, n, &mut want);
            let want: Vec<_> = want.into_iter().map(|e| e.kind).collect();
            prop_assert_eq!(mine, want, "{} {:?} -> {:?}", id, o, n);
        }
        prop_assert_eq!(events.is_empty(), ids_of(old.as_ref()).collect::<HashMap<_, _>>() == ids_of(new.as_ref()).collect::<HashMap<_, _>>());
    }
}
