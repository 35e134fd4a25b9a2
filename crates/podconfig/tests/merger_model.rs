//! A proptest model test of the merger: random sequences of per-source
//! snapshots and incremental changes. After every step the merged state
//! equals a simple model (latest accepted pod per UID, with upstream's
//! duplicate-name filter and our UID ownership rule), every emitted pod's op
//! is the one the model predicts, the emit order is upstream's, and replaying
//! the emitted updates reproduces the merged state.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kubelet_podconfig::{Merger, PodOperation};
use proptest::prelude::*;

const SOURCES: [&str; 3] = ["file", "http", "api"];
const LOCAL_ANNOTATIONS: [&str; 3] = [
    "kubernetes.io/config.source",
    "kubernetes.io/config.mirror",
    "kubernetes.io/config.seen",
];

#[derive(Debug, Clone)]
struct PodSpecGen {
    uid: u8,
    name: u8,
    image: u8,
    status: u8,
    label: u8,
    deleting: bool,
    /// Metadata the merger does not compare: a resource version and the
    /// (local) mirror annotation.
    resource_version: u8,
    mirror: bool,
}

fn pod(g: &PodSpecGen) -> Pod {
    Pod {
        metadata: ObjectMeta {
            uid: Some(format!("uid-{}", g.uid)),
            name: Some(format!("pod-{}", g.name)),
            namespace: Some("ns".into()),
            resource_version: Some(g.resource_version.to_string()),
            annotations: g.mirror.then(|| {
                BTreeMap::from([
                    ("kubernetes.io/config.mirror".to_string(), "m".to_string()),
                    ("example.com/a".to_string(), "b".to_string()),
                ])
            }),
            labels: (g.label > 0).then(|| BTreeMap::from([("l".to_string(), g.label.to_string())])),
            deletion_timestamp: g
                .deleting
                .then(|| Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap())),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some(format!("image:{}", g.image)),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            message: Some(g.status.to_string()),
            ..Default::default()
        }),
    }
}

#[derive(Debug, Clone)]
enum Step {
    Send {
        source: usize,
        op: PodOperation,
        pods: Vec<PodSpecGen>,
    },
    Remove {
        source: usize,
        uids: Vec<u8>,
    },
}

fn pod_gen() -> impl Strategy<Value = PodSpecGen> {
    (
        0u8..6,
        0u8..4,
        0u8..2,
        0u8..2,
        0u8..2,
        prop::bool::weighted(0.15),
        0u8..3,
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(uid, name, image, status, label, deleting, resource_version, mirror)| PodSpecGen {
                uid,
                name,
                image,
                status,
                label,
                deleting,
                resource_version,
                mirror,
            },
        )
}

fn step_gen() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0usize..3, prop::collection::vec(pod_gen(), 0..5))
            .prop_map(|(source, pods)| Step::Send { source, op: PodOperation::Set, pods }),
        3 => (0usize..3, prop::sample::select(vec![PodOperation::Add, PodOperation::Update, PodOperation::Delete]), prop::collection::vec(pod_gen(), 0..4))
            .prop_map(|(source, op, pods)| Step::Send { source, op, pods }),
        1 => (0usize..3, prop::collection::vec(0u8..6, 0..3)).prop_map(|(source, uids)| Step::Remove { source, uids }),
    ]
}

/// What the model keeps of a pod: everything the merger may change.
#[derive(Debug, Clone, PartialEq)]
struct View {
    source: String,
    name: String,
    spec: Option<PodSpec>,
    labels: Option<BTreeMap<String, String>>,
    /// The annotations the kubelet does not set.
    annotations: BTreeMap<String, String>,
    deleting: bool,
    status: Option<PodStatus>,
}

fn view(source: &str, p: &Pod) -> View {
    View {
        source: source.to_string(),
        name: p.metadata.name.clone().unwrap_or_default(),
        spec: p.spec.clone(),
        labels: p.metadata.labels.clone(),
        annotations: p
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| !LOCAL_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        deleting: p.metadata.deletion_timestamp.is_some(),
        status: p.status.clone(),
    }
}

#[derive(Default)]
struct Model {
    /// uid → view (the owner source is inside).
    pods: HashMap<String, View>,
    seen: HashSet<String>,
}

/// The op the model expects for each UID touched by a step.
type Expected = HashMap<String, PodOperation>;

impl Model {
    fn apply(&mut self, step: &Step) -> (Expected, bool) {
        let mut expected = Expected::new();
        match step {
            Step::Remove { source, uids } => {
                let source = SOURCES[*source];
                for uid in uids {
                    let uid = format!("uid-{uid}");
                    if self.pods.get(&uid).is_some_and(|v| v.source == source) {
                        self.pods.remove(&uid);
                        expected.insert(uid, PodOperation::Remove);
                    }
                }
                (expected, false)
            }
            Step::Send { source, op, pods } => {
                let source = SOURCES[*source];
                let first_set = *op == PodOperation::Set && self.seen.insert(source.to_string());
                let mut names = HashSet::new();
                let mut uids = HashSet::new();
                let mut kept = HashSet::new();
                for g in pods {
                    let p = pod(g);
                    let uid = p.metadata.uid.clone().unwrap();
                    if !names.insert(g.name) || !uids.insert(uid.clone()) {
                        continue;
                    }
                    if self.pods.get(&uid).is_some_and(|v| v.source != source) {
                        continue;
                    }
                    kept.insert(uid.clone());
                    let mut new = view(source, &p);
                    match self.pods.get(&uid) {
                        None => {
                            expected.insert(uid.clone(), PodOperation::Add);
                        }
                        Some(old) => {
                            // As upstream, the name of a known UID is never updated.
                            new.name = old.name.clone();
                            let semantic = old.spec != new.spec
                                || old.labels != new.labels
                                || old.annotations != new.annotations
                                || old.deleting != new.deleting;
                            if semantic {
                                let op = if new.deleting {
                                    PodOperation::Delete
                                } else {
                                    PodOperation::Update
                                };
                                expected.insert(uid.clone(), op);
                            } else if old.status != new.status {
                                expected.insert(uid.clone(), PodOperation::Reconcile);
                            }
                        }
                    }
                    self.pods.insert(uid, new);
                }
                if *op == PodOperation::Set {
                    let gone: Vec<String> = self
                        .pods
                        .iter()
                        .filter(|(uid, v)| v.source == source && !kept.contains(*uid))
                        .map(|(uid, _)| uid.clone())
                        .collect();
                    for uid in gone {
                        self.pods.remove(&uid);
                        expected.insert(uid, PodOperation::Remove);
                    }
                }
                let ready_signal = first_set
                    && !expected.values().any(|op| {
                        matches!(
                            op,
                            PodOperation::Add | PodOperation::Update | PodOperation::Delete
                        )
                    });
                (expected, ready_signal)
            }
        }
    }
}

fn rank(op: PodOperation) -> u8 {
    match op {
        PodOperation::Remove => 0,
        PodOperation::Add => 1,
        PodOperation::Update => 2,
        PodOperation::Delete => 3,
        PodOperation::Reconcile => 5,
        PodOperation::Set => 9,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn merger_matches_model_and_replay(steps in prop::collection::vec(step_gen(), 1..40)) {
        let mut merger = Merger::new();
        let mut model = Model::default();
        // Replay of the emitted updates: uid → pod, whole (every emitted
        // pod must be an exact copy of the one the merger keeps).
        let mut replay: HashMap<String, Pod> = HashMap::new();

        for step in &steps {
            let (source, op, pods) = match step {
                Step::Send { source, op, pods } => (SOURCES[*source], *op, pods.iter().map(pod).collect()),
                Step::Remove { source, uids } => (
                    SOURCES[*source],
                    PodOperation::Remove,
                    uids.iter().map(|u| pod(&PodSpecGen { uid: *u, name: 0, image: 0, status: 0, label: 0, deleting: false, resource_version: 0, mirror: false })).collect(),
                ),
            };
            let out = merger.merge(source, op, pods);
            let (expected, ready_signal) = model.apply(step);

            // Emit order and shape.
            let ranks: Vec<u8> = out.updates.iter().map(|u| if u.op == PodOperation::Add && u.pods.is_empty() { 4 } else { rank(u.op) }).collect();
            prop_assert!(ranks.windows(2).all(|w| w[0] < w[1]), "order {:?}", out.updates.iter().map(|u| u.op).collect::<Vec<_>>());
            let empty_adds = out.updates.iter().filter(|u| u.pods.is_empty()).count();
            prop_assert_eq!(empty_adds, usize::from(ready_signal));

            // Each emitted pod has the predicted op, and nothing else was emitted.
            let mut emitted = Expected::new();
            for u in &out.updates {
                prop_assert_eq!(&u.source, source);
                for p in &u.pods {
                    let uid = p.metadata.uid.clone().unwrap();
                    prop_assert!(emitted.insert(uid.clone(), u.op).is_none(), "uid {} emitted twice", uid);
                    match u.op {
                        PodOperation::Remove => { replay.remove(&uid); }
                        _ => { replay.insert(uid, p.clone()); }
                    }
                }
            }
            prop_assert_eq!(&emitted, &expected);

            // Merged state == model, and == replay exactly.
            let state = merger.merged_state();
            let merged: HashMap<String, View> = state
                .iter()
                .map(|p| {
                    let source = p.metadata.annotations.as_ref().unwrap()["kubernetes.io/config.source"].clone();
                    (p.metadata.uid.clone().unwrap(), view(&source, p))
                })
                .collect();
            prop_assert_eq!(&merged, &model.pods);
            let state: HashMap<String, Pod> = state
                .into_iter()
                .map(|p| (p.metadata.uid.clone().unwrap(), p))
                .collect();
            prop_assert_eq!(&replay, &state);
            prop_assert!(SOURCES.iter().all(|s| merger.seen_sources([*s]) == model.seen.contains(*s)));
        }
    }
}
