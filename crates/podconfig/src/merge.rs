//! The merger: per-source pod state keyed by UID, and the incremental
//! updates a change to it produces.
//!
//! Mirrors upstream `podStorage` in `pkg/kubelet/config/config.go`, in the
//! incremental notification mode (the only one the kubelet uses): `merge`,
//! `filterInvalidPods`, `checkAndUpdatePod`, `podsDifferSemantically`,
//! `isAnnotationMapEqual`, `updateAnnotations`, `recordFirstSeenTime`,
//! `Sync` and `MergedState`.
//!
//! [`Merger`] is synchronous and does no I/O, so it can be driven directly
//! (tests, benchmarks, a custom agent); [`PodConfig`](crate::PodConfig) runs
//! one behind its sources.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::Error;
use crate::{
    ALL_SOURCE, CONFIG_MIRROR_ANNOTATION, CONFIG_SEEN_ANNOTATION, CONFIG_SOURCE_ANNOTATION,
    PodOperation, PodUpdate, Rejection, pod_full_name,
};

/// Annotations the kubelet itself sets: ignored when comparing pods and kept
/// across updates (upstream `localAnnotations`).
const LOCAL_ANNOTATIONS: [&str; 3] = [
    CONFIG_SOURCE_ANNOTATION,
    CONFIG_MIRROR_ANNOTATION,
    CONFIG_SEEN_ANNOTATION,
];

fn is_local_annotation(key: &str) -> bool {
    LOCAL_ANNOTATIONS.contains(&key)
}

/// What one [`Merger::merge`] call produced.
#[derive(Debug, Default, Clone)]
pub struct MergeOutput {
    /// The updates to deliver, in upstream's order: REMOVE, ADD, UPDATE,
    /// DELETE, (an empty ADD on a source's first SET when nothing was added,
    /// updated or deleted), RECONCILE. Empty ones are left out.
    pub updates: Vec<PodUpdate>,
    /// Pods dropped by the merger (duplicate names, UID conflicts, no UID).
    pub rejected: Vec<Rejection>,
}

/// The in-memory source of truth for every source's pods.
///
/// Feed it each source's changes with [`merge`](Self::merge); it returns the
/// minimal updates for the consumer.
#[derive(Debug, Default)]
pub struct Merger {
    /// source → UID → pod. Boxed so that the map's spare buckets cost a
    /// pointer, not a whole `Pod`.
    pods: HashMap<String, HashMap<String, Box<Pod>>>,
    /// UID → the source that owns it (our cross-source check).
    owners: HashMap<String, String>,
    /// Sources that have sent at least one SET.
    seen: BTreeSet<String>,
}

#[derive(Default)]
struct Changes {
    adds: Vec<Pod>,
    updates: Vec<Pod>,
    deletes: Vec<Pod>,
    removes: Vec<Pod>,
    reconciles: Vec<Pod>,
    rejected: Vec<Rejection>,
}

enum Change {
    Update,
    Reconcile,
    Delete,
}

impl Merger {
    /// An empty merger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges one change from `source` and returns the updates it causes.
    ///
    /// `op` is what the source sends: [`PodOperation::Set`] (its full
    /// snapshot), or ADD/UPDATE/DELETE (upserts, treated alike) and REMOVE
    /// (by UID). RECONCILE from a source is ignored with a log line, as
    /// upstream's "Received invalid update type".
    pub fn merge(&mut self, source: &str, op: PodOperation, pods: Vec<Pod>) -> MergeOutput {
        let seen_before = self.seen.contains(source);
        let Self {
            pods: all,
            owners,
            seen,
        } = self;
        let current = match all.get_mut(source) {
            Some(current) => current,
            None => all.entry(source.to_string()).or_default(),
        };
        let mut ch = Changes::default();
        match op {
            PodOperation::Add | PodOperation::Update | PodOperation::Delete => {
                tracing::debug!(source, ?op, count = pods.len(), "merging pods from source");
                update_pods(owners, source, pods, None, current, &mut ch);
            }
            PodOperation::Remove => {
                tracing::debug!(source, count = pods.len(), "removing pods from source");
                for pod in pods {
                    let uid = pod.metadata.uid.as_deref().unwrap_or("");
                    if let Some(existing) = current.remove(uid) {
                        owners.remove(uid);
                        ch.removes.push(*existing);
                    }
                }
            }
            PodOperation::Set => {
                tracing::debug!(source, count = pods.len(), "setting pods for source");
                seen.insert(source.to_string());
                let mut old = std::mem::replace(current, HashMap::with_capacity(pods.len()));
                update_pods(owners, source, pods, Some(&mut old), current, &mut ch);
                // Ordered by UID: the REMOVE's order is the order the
                // kubelet kills the pods in. Upstream ranges over a Go map
                // (`oldPods` in `updatePodsFunc`, any order); a fixed one
                // makes a run on a paused clock (`kubelet-sim`) replay
                // exactly.
                let mut old: Vec<_> = old.into_iter().collect();
                old.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                for (uid, existing) in old {
                    owners.remove(&uid);
                    ch.removes.push(*existing);
                }
            }
            PodOperation::Reconcile => {
                tracing::warn!(
                    source,
                    "received invalid update type RECONCILE from a source, ignoring"
                );
            }
        }
        let first_set = !seen_before && self.seen.contains(source);

        let mut updates = Vec::new();
        let mut push = |op, pods: Vec<Pod>| {
            updates.push(PodUpdate {
                op,
                source: source.to_string(),
                pods,
            })
        };
        let empty_ready =
            first_set && ch.adds.is_empty() && ch.updates.is_empty() && ch.deletes.is_empty();
        if !ch.removes.is_empty() {
            push(PodOperation::Remove, ch.removes);
        }
        if !ch.adds.is_empty() {
            push(PodOperation::Add, ch.adds);
        }
        if !ch.updates.is_empty() {
            push(PodOperation::Update, ch.updates);
        }
        if !ch.deletes.is_empty() {
            push(PodOperation::Delete, ch.deletes);
        }
        if empty_ready {
            // Tells the consumer the source is ready even though it has no pods.
            push(PodOperation::Add, Vec::new());
        }
        if !ch.reconciles.is_empty() {
            push(PodOperation::Reconcile, ch.reconciles);
        }
        MergeOutput {
            updates,
            rejected: ch.rejected,
        }
    }
}

/// What [`update_pod`] did with one pod.
enum Outcome {
    /// Kept as new; the pod is the copy to emit in the ADD.
    Add,
    /// A known pod changed; the pod is now the copy of the kept one to
    /// emit.
    Changed(Change),
    /// A known pod, unchanged.
    Unchanged,
    /// Dropped, with the reason in `rejected`.
    Rejected,
}

impl Changes {
    /// The list a pod with this outcome is emitted in.
    fn list(&mut self, outcome: Outcome) -> Option<&mut Vec<Pod>> {
        match outcome {
            Outcome::Add => Some(&mut self.adds),
            Outcome::Changed(Change::Update) => Some(&mut self.updates),
            Outcome::Changed(Change::Reconcile) => Some(&mut self.reconciles),
            Outcome::Changed(Change::Delete) => Some(&mut self.deletes),
            Outcome::Unchanged | Outcome::Rejected => None,
        }
    }
}

/// upstream `updatePodsFunc`: `old` is `Some` for a SET (pods found there
/// move to `current`), `None` for the upsert ops (`current` is both).
///
/// Each pod is turned in place into the copy to emit (upstream emits deep
/// copies of the kept pods), so a single-pod update, the common incremental
/// case, hands its own vector on to the consumer.
fn update_pods(
    owners: &mut HashMap<String, String>,
    source: &str,
    mut pods: Vec<Pod>,
    mut old: Option<&mut HashMap<String, Box<Pod>>>,
    current: &mut HashMap<String, Box<Pod>>,
    ch: &mut Changes,
) {
    if let [pod] = pods.as_mut_slice() {
        let outcome = update_pod(owners, source, pod, old, current, None, &mut ch.rejected);
        if let Some(list) = ch.list(outcome) {
            *list = pods;
        }
        return;
    }
    // Duplicates need two pods.
    let mut seen = Seen::default();
    for mut pod in pods {
        let outcome = update_pod(
            owners,
            source,
            &mut pod,
            old.as_deref_mut(),
            current,
            Some(&mut seen),
            &mut ch.rejected,
        );
        if let Some(list) = ch.list(outcome) {
            list.push(pod);
        }
    }
}

/// The full names and UIDs met so far in one update.
#[derive(Default)]
struct Seen {
    names: HashSet<String>,
    uids: HashSet<String>,
}

/// One pod of [`update_pods`]; `seen` is `None` for a single-pod update
/// (no duplicates to look for).
fn update_pod(
    owners: &mut HashMap<String, String>,
    source: &str,
    pod: &mut Pod,
    old: Option<&mut HashMap<String, Box<Pod>>>,
    current: &mut HashMap<String, Box<Pod>>,
    mut seen: Option<&mut Seen>,
    rejected: &mut Vec<Rejection>,
) -> Outcome {
    // filterInvalidPods: the first pod of a full name wins.
    if let Some(seen) = seen.as_deref_mut()
        && !seen.names.insert(pod_full_name(pod))
    {
        let full_name = pod_full_name(pod);
        tracing::warn!(source, pod = %full_name, "pod failed validation due to duplicate pod name, ignoring");
        rejected.push(reject(
            source,
            &full_name,
            Error::DuplicateName {
                source_name: source.to_string(),
                full_name: full_name.clone(),
            },
        ));
        return Outcome::Rejected;
    }
    // Taken out so that the lookups below need no copy of it; put back
    // before the pod is used.
    let uid = match pod.metadata.uid.take() {
        Some(uid) if !uid.is_empty() => uid,
        _ => {
            let full_name = pod_full_name(pod);
            tracing::warn!(source, pod = %full_name, "pod has no UID, ignoring");
            rejected.push(reject(
                source,
                &full_name,
                Error::MissingUid {
                    source_name: source.to_string(),
                    full_name: full_name.clone(),
                },
            ));
            return Outcome::Rejected;
        }
    };
    // Upstream adds a UID twice when one update carries it twice; we keep
    // the first.
    if let Some(seen) = seen
        && !seen.uids.insert(uid.clone())
    {
        let full_name = pod_full_name(pod);
        tracing::warn!(source, pod = %full_name, %uid, "pod UID repeated in one update, ignoring");
        rejected.push(reject(
            source,
            &full_name,
            Error::UidConflict {
                source_name: source.to_string(),
                full_name: full_name.clone(),
                uid,
                owner: source.to_string(),
            },
        ));
        return Outcome::Rejected;
    }

    // A pod this source already has. `owners[uid] == source` exactly when
    // the source's map holds `uid`, so such a pod needs no ownership check.
    let existing = match old {
        Some(old) => old
            .remove_entry(uid.as_str())
            .map(|(key, p)| current.entry(key).insert_entry(p).into_mut()),
        None => current.get_mut(uid.as_str()),
    };
    if let Some(existing) = existing {
        pod.metadata.uid = Some(uid);
        return match check_and_update_pod(existing, source, pod) {
            Some(change) => Outcome::Changed(change),
            None => Outcome::Unchanged,
        };
    }

    if let Some(owner) = owners.get(&uid)
        && owner != source
    {
        let full_name = pod_full_name(pod);
        tracing::warn!(source, pod = %full_name, %uid, %owner, "pod UID is claimed by another source, ignoring");
        rejected.push(reject(
            source,
            &full_name,
            Error::UidConflict {
                source_name: source.to_string(),
                full_name: full_name.clone(),
                uid,
                owner: owner.clone(),
            },
        ));
        return Outcome::Rejected;
    }
    // recordFirstSeenTime
    tracing::debug!(
        source,
        pod = pod.metadata.name.as_deref().unwrap_or(""),
        "receiving a new pod"
    );
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_SOURCE_ANNOTATION.into(), source.to_string());
    annotations.insert(CONFIG_SEEN_ANNOTATION.into(), seen_timestamp());
    pod.metadata.uid = Some(uid.clone());
    owners.insert(uid.clone(), source.to_string());
    current.insert(uid, Box::new(pod.clone()));
    Outcome::Add
}

impl Merger {
    /// True when every one of `sources` has sent at least one SET (upstream
    /// `podStorage.seenSources`).
    pub fn seen_sources<'a>(&self, sources: impl IntoIterator<Item = &'a str>) -> bool {
        sources.into_iter().all(|s| self.seen.contains(s))
    }

    /// Every pod of every source (upstream `MergedState`), sorted by source
    /// then UID so that the output is deterministic.
    pub fn merged_state(&self) -> Vec<Pod> {
        let mut sources: Vec<_> = self.pods.iter().collect();
        sources.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(self.len());
        for (_, pods) in sources {
            let mut uids: Vec<_> = pods.keys().collect();
            uids.sort();
            out.extend(
                uids.into_iter()
                    .filter_map(|uid| pods.get(uid).map(|p| Pod::clone(p))),
            );
        }
        out
    }

    /// The SET of the whole merged state with source `*`, upstream `Sync()`.
    pub fn sync(&self) -> PodUpdate {
        PodUpdate {
            op: PodOperation::Set,
            source: ALL_SOURCE.to_string(),
            pods: self.merged_state(),
        }
    }

    /// The pods of one source.
    pub fn source_pods(&self, source: &str) -> Vec<Pod> {
        self.pods
            .get(source)
            .map(|m| m.values().map(|p| Pod::clone(p)).collect())
            .unwrap_or_default()
    }

    /// The number of pods across sources.
    pub fn len(&self) -> usize {
        self.pods.values().map(HashMap::len).sum()
    }

    /// Approximate bytes the merger holds beyond the pod objects themselves:
    /// hash table buckets (spare ones included), UID keys, pod boxes and
    /// the UID ownership index. For memory accounting and metrics.
    pub fn overhead_bytes(&self) -> usize {
        // hashbrown: buckets are a power of two holding `capacity * 8 / 7`,
        // each with one control byte.
        fn table<K, V>(map: &HashMap<K, V>) -> usize {
            let cap = map.capacity();
            if cap == 0 {
                return 0;
            }
            let buckets = if cap < 8 {
                cap + 1
            } else {
                (cap * 8 / 7).next_power_of_two()
            };
            buckets * (std::mem::size_of::<(K, V)>() + 1)
        }
        // malloc rounds small blocks up and adds a header of about 16 bytes.
        fn heap(len: usize) -> usize {
            if len == 0 {
                0
            } else {
                len.div_ceil(16) * 16 + 16
            }
        }
        let mut total = table(&self.pods) + table(&self.owners);
        for (source, pods) in &self.pods {
            total += heap(source.capacity()) + table(pods);
            total += pods.keys().map(|k| heap(k.capacity()) + 16).sum::<usize>(); // key + box header
        }
        total += self
            .owners
            .iter()
            .map(|(k, v)| heap(k.capacity()) + heap(v.capacity()))
            .sum::<usize>();
        total
            + self
                .seen
                .iter()
                .map(|s| heap(s.capacity()) + 32)
                .sum::<usize>()
    }

    /// True when no source has any pod.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn reject(source: &str, full_name: &str, error: Error) -> Rejection {
    Rejection {
        source: source.to_string(),
        origin: format!("pod {full_name}"),
        error: Arc::new(error),
    }
}

/// The `kubernetes.io/config.seen` value: RFC 3339 with nine fractional
/// digits (upstream `RFC3339NanoFixed`), in UTC.
fn seen_timestamp() -> String {
    format!("{:.9}", k8s_openapi::jiff::Timestamp::now())
}

/// Makes `dst` equal to `src`, keeping `dst`'s allocations where a field
/// already has `src`'s value.
fn sync<T: Clone + PartialEq>(dst: &mut T, src: &T) {
    if dst != src {
        dst.clone_from(src);
    }
}

/// [`sync`] for a string map: only the entries that differ are copied.
fn sync_map(dst: &mut Option<BTreeMap<String, String>>, src: &Option<BTreeMap<String, String>>) {
    match (dst.as_mut(), src) {
        (Some(dst), Some(src)) => {
            if dst.len() != src.len() || dst.keys().any(|k| !src.contains_key(k)) {
                dst.retain(|k, _| src.contains_key(k));
            }
            for (k, v) in src {
                match dst.get_mut(k) {
                    Some(d) => sync(d, v),
                    None => {
                        dst.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => sync(dst, src),
    }
}

/// Makes `dst` equal to `src` field by field ([`sync`]). The destructuring
/// names every field, so a field added to `ObjectMeta` fails to compile here
/// rather than being left out of the copy.
fn sync_metadata(dst: &mut ObjectMeta, src: &ObjectMeta) {
    let ObjectMeta {
        annotations,
        creation_timestamp,
        deletion_grace_period_seconds,
        deletion_timestamp,
        finalizers,
        generate_name,
        generation,
        labels,
        managed_fields,
        name,
        namespace,
        owner_references,
        resource_version,
        self_link,
        uid,
    } = src;
    sync_map(&mut dst.annotations, annotations);
    sync(&mut dst.creation_timestamp, creation_timestamp);
    sync(
        &mut dst.deletion_grace_period_seconds,
        deletion_grace_period_seconds,
    );
    sync(&mut dst.deletion_timestamp, deletion_timestamp);
    sync(&mut dst.finalizers, finalizers);
    sync(&mut dst.generate_name, generate_name);
    sync(&mut dst.generation, generation);
    sync_map(&mut dst.labels, labels);
    sync(&mut dst.managed_fields, managed_fields);
    sync(&mut dst.name, name);
    sync(&mut dst.namespace, namespace);
    sync(&mut dst.owner_references, owner_references);
    sync(&mut dst.resource_version, resource_version);
    sync(&mut dst.self_link, self_link);
    sync(&mut dst.uid, uid);
}

/// upstream `isAnnotationMapEqual`: equal except for local annotations.
fn annotations_equal(
    existing: Option<&BTreeMap<String, String>>,
    candidate: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let existing = existing.unwrap_or(&empty);
    let candidate = candidate.unwrap_or(&empty);
    let non_local =
        |m: &BTreeMap<String, String>| m.keys().filter(|k| !is_local_annotation(k)).count();
    non_local(existing) == non_local(candidate)
        && candidate
            .iter()
            .filter(|(k, _)| !is_local_annotation(k))
            .all(|(k, v)| existing.get(k) == Some(v))
}

/// upstream `podsDifferSemantically`.
pub(crate) fn pods_differ_semantically(existing: &Pod, candidate: &Pod) -> bool {
    !(existing.spec == candidate.spec
        && existing.metadata.labels == candidate.metadata.labels
        && existing.metadata.deletion_timestamp == candidate.metadata.deletion_timestamp
        && existing.metadata.deletion_grace_period_seconds
            == candidate.metadata.deletion_grace_period_seconds
        && annotations_equal(
            existing.metadata.annotations.as_ref(),
            candidate.metadata.annotations.as_ref(),
        ))
}

/// upstream `checkAndUpdatePod`: updates `existing` from `candidate` and says
/// what kind of change it was, if any. At most one of update, reconcile or
/// graceful delete. On a change, `candidate` is left equal to the updated
/// `existing`: the copy to emit (upstream's `copyPods`).
///
/// Upstream sets the source annotation on the candidate before comparing;
/// it is a local annotation, so it changes neither the comparison nor the
/// merged annotations (the existing pod's local ones win), and it is set
/// here only on the update path, where the candidate's annotations are kept.
fn check_and_update_pod(existing: &mut Pod, source: &str, candidate: &mut Pod) -> Option<Change> {
    if !pods_differ_semantically(existing, candidate) {
        // Only a status change: the kubelet is the source of truth for
        // status, so this is a reconcile, not an update.
        if existing.status == candidate.status {
            return None;
        }
        // Upstream sets `existing.Status` and emits a deep copy of
        // `existing`. The candidate already equals that copy in its spec and
        // labels (just compared) and mostly in the rest of its metadata, so
        // it becomes the copy: only what differs is copied from `existing`.
        existing.status.clone_from(&candidate.status);
        sync_metadata(&mut candidate.metadata, &existing.metadata);
        return Some(Change::Reconcile);
    }
    // Keep the first-seen time: it is ours.
    let seen = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SEEN_ANNOTATION))
        .cloned();
    let mut annotations = candidate.metadata.annotations.take().unwrap_or_default();
    annotations.insert(CONFIG_SOURCE_ANNOTATION.into(), source.to_string());
    match seen {
        Some(seen) => annotations.insert(CONFIG_SEEN_ANNOTATION.into(), seen),
        None => annotations.remove(CONFIG_SEEN_ANNOTATION),
    };
    let deleting = candidate.metadata.deletion_timestamp.is_some();
    existing.spec = candidate.spec.take();
    existing.metadata.labels = candidate.metadata.labels.take();
    existing.metadata.deletion_timestamp = candidate.metadata.deletion_timestamp.take();
    existing.metadata.deletion_grace_period_seconds =
        candidate.metadata.deletion_grace_period_seconds;
    existing.status = candidate.status.take();
    // updateAnnotations: the candidate's plus our local ones.
    if let Some(old) = existing.metadata.annotations.as_ref() {
        for key in LOCAL_ANNOTATIONS {
            if let Some(v) = old.get(key) {
                annotations.insert(key.to_string(), v.clone());
            }
        }
    }
    existing.metadata.annotations = Some(annotations);
    // The copy to emit.
    candidate.spec.clone_from(&existing.spec);
    candidate.status.clone_from(&existing.status);
    sync_metadata(&mut candidate.metadata, &existing.metadata);
    Some(if deleting {
        Change::Delete
    } else {
        Change::Update
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    const SRC: &str = "test";

    // upstream CreateValidPod
    fn pod(name: &str, namespace: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(format!("{name}{namespace}")),
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some("Always".into()),
                dns_policy: Some("ClusterFirst".into()),
                containers: vec![Container {
                    name: "ctr".into(),
                    image: Some("image".into()),
                    image_pull_policy: Some("IfNotPresent".into()),
                    termination_message_policy: Some("File".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    fn with_container(mut p: Pod, name: &str) -> Pod {
        p.spec.as_mut().unwrap().containers = vec![Container {
            name: name.into(),
            image: Some("test".into()),
            ..Default::default()
        }];
        p
    }

    fn names(u: &PodUpdate) -> Vec<String> {
        let mut v: Vec<_> = u
            .pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        v.sort();
        v
    }

    fn ops(out: &MergeOutput) -> Vec<(PodOperation, Vec<String>)> {
        out.updates.iter().map(|u| (u.op, names(u))).collect()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    // upstream TestNewPodAdded + Sync
    #[test]
    fn new_pod_added_then_sync() {
        let mut m = Merger::new();
        let out = m.merge(SRC, PodOperation::Add, vec![pod("foo", "new")]);
        assert_eq!(ops(&out), [(PodOperation::Add, s(&["foo"]))]);
        let added = &out.updates[0].pods[0];
        let ann = added.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[CONFIG_SOURCE_ANNOTATION], SRC);
        assert!(
            ann[CONFIG_SEEN_ANNOTATION].ends_with('Z'),
            "{}",
            ann[CONFIG_SEEN_ANNOTATION]
        );
        assert_eq!(
            ann[CONFIG_SEEN_ANNOTATION].split('.').nth(1).unwrap().len(),
            10,
            "nine digits and Z"
        );
        let sync = m.sync();
        assert_eq!(
            (sync.op, sync.source.as_str(), names(&sync)),
            (PodOperation::Set, "*", s(&["foo"]))
        );
    }

    // upstream TestInvalidPodFiltered: an identical ADD is a no-op.
    #[test]
    fn identical_add_is_no_op() {
        let mut m = Merger::new();
        m.merge(SRC, PodOperation::Add, vec![pod("foo", "new")]);
        assert!(
            m.merge(SRC, PodOperation::Add, vec![pod("foo", "new")])
                .updates
                .is_empty()
        );
    }

    // upstream TestNewPodAddedUpdatedRemoved
    #[test]
    fn added_updated_removed() {
        let mut m = Merger::new();
        m.merge(SRC, PodOperation::Add, vec![pod("foo", "new")]);
        let out = m.merge(
            SRC,
            PodOperation::Add,
            vec![with_container(pod("foo", "new"), "bar")],
        );
        assert_eq!(ops(&out), [(PodOperation::Update, s(&["foo"]))]);
        assert_eq!(
            out.updates[0].pods[0].spec.as_ref().unwrap().containers[0].name,
            "bar"
        );
        let out = m.merge(SRC, PodOperation::Remove, vec![pod("foo", "new")]);
        assert_eq!(ops(&out), [(PodOperation::Remove, s(&["foo"]))]);
        assert_eq!(
            out.updates[0].pods[0].spec.as_ref().unwrap().containers[0].name,
            "bar"
        );
        assert!(
            m.merge(SRC, PodOperation::Remove, vec![pod("foo", "new")])
                .updates
                .is_empty()
        );
        assert!(m.is_empty());
    }

    // An ephemeral container added through the API's
    // `pods/ephemeralcontainers` subresource changes the spec: an UPDATE
    // carrying it, so that the pod worker syncs and starts it (upstream
    // `checkAndUpdatePod` compares the spec).
    #[test]
    fn an_added_ephemeral_container_is_an_update() {
        let mut m = Merger::new();
        m.merge(SRC, PodOperation::Set, vec![pod("foo", "new")]);
        let mut debugged = pod("foo", "new");
        debugged.spec.as_mut().unwrap().ephemeral_containers =
            Some(vec![k8s_openapi::api::core::v1::EphemeralContainer {
                name: "debug".into(),
                image: Some("busybox".into()),
                target_container_name: Some("ctr".into()),
                ..Default::default()
            }]);
        let out = m.merge(SRC, PodOperation::Set, vec![debugged]);
        assert_eq!(ops(&out), [(PodOperation::Update, s(&["foo"]))]);
        let spec = out.updates[0].pods[0].spec.as_ref().unwrap();
        assert_eq!(spec.ephemeral_containers.as_ref().unwrap()[0].name, "debug");
    }

    // upstream TestNewPodAddedDelete
    #[test]
    fn graceful_delete() {
        let mut m = Merger::new();
        m.merge(SRC, PodOperation::Add, vec![pod("foo", "new")]);
        let mut deleted = pod("foo", "new");
        deleted.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let out = m.merge(SRC, PodOperation::Delete, vec![deleted]);
        assert_eq!(ops(&out), [(PodOperation::Delete, s(&["foo"]))]);
        assert!(out.updates[0].pods[0].metadata.deletion_timestamp.is_some());
    }

    // upstream TestNewPodAddedUpdatedSet: REMOVE, ADD, UPDATE in that order.
    #[test]
    fn set_emits_remove_add_update_in_order() {
        let mut m = Merger::new();
        m.merge(
            SRC,
            PodOperation::Add,
            vec![pod("foo", "new"), pod("foo2", "new"), pod("foo3", "new")],
        );
        let out = m.merge(
            SRC,
            PodOperation::Set,
            vec![
                with_container(pod("foo2", "new"), "bar"),
                pod("foo3", "new"),
                pod("foo4", "new"),
            ],
        );
        assert_eq!(
            ops(&out),
            [
                (PodOperation::Remove, s(&["foo"])),
                (PodOperation::Add, s(&["foo4"])),
                (PodOperation::Update, s(&["foo2"])),
            ]
        );
    }

    // upstream TestNewPodAddedSetReconciled
    #[test]
    fn status_only_change_is_reconcile_and_spec_change_wins() {
        for op in [PodOperation::Add, PodOperation::Set] {
            let mut m = Merger::new();
            let pods = || {
                vec![
                    pod("changeable-pod-0", "new"),
                    pod("constant-pod-1", "new"),
                    pod("constant-pod-2", "new"),
                ]
            };
            let out = m.merge(SRC, PodOperation::Set, pods());
            assert_eq!(
                ops(&out),
                [(
                    PodOperation::Add,
                    s(&["changeable-pod-0", "constant-pod-1", "constant-pod-2"])
                )]
            );
            assert!(m.merge(SRC, op, pods()).updates.is_empty());
            let mut touched = pods();
            touched[0].status = Some(PodStatus {
                message: Some("1".into()),
                ..Default::default()
            });
            let out = m.merge(SRC, op, touched.clone());
            assert_eq!(
                ops(&out),
                [(PodOperation::Reconcile, s(&["changeable-pod-0"]))]
            );
            assert_eq!(
                out.updates[0].pods[0]
                    .status
                    .as_ref()
                    .unwrap()
                    .message
                    .as_deref(),
                Some("1")
            );
            touched[0].status.as_mut().unwrap().message = Some("2".into());
            touched[0].spec.as_mut().unwrap().containers[0].name = "renamed".into();
            let out = m.merge(SRC, op, touched);
            assert_eq!(
                ops(&out),
                [(PodOperation::Update, s(&["changeable-pod-0"]))]
            );
            assert_eq!(
                out.updates[0].pods[0]
                    .status
                    .as_ref()
                    .unwrap()
                    .message
                    .as_deref(),
                Some("2")
            );
        }
    }

    // Upstream emits a copy of the kept pod with the new status: the
    // candidate's uncompared metadata and local annotations do not leak in.
    #[test]
    fn reconcile_emits_the_kept_pod_with_the_new_status() {
        let mut m = Merger::new();
        let mut first = pod("foo", "new");
        first.metadata.resource_version = Some("1".into());
        m.merge(SRC, PodOperation::Add, vec![first]);
        let mut next = pod("foo", "new");
        next.metadata.resource_version = Some("2".into());
        next.metadata.annotations =
            Some([(CONFIG_MIRROR_ANNOTATION.to_string(), "x".to_string())].into());
        next.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        let out = m.merge(SRC, PodOperation::Update, vec![next]);
        assert_eq!(ops(&out), [(PodOperation::Reconcile, s(&["foo"]))]);
        let emitted = &out.updates[0].pods[0];
        assert_eq!(emitted, &m.merged_state()[0]);
        assert_eq!(emitted.metadata.resource_version.as_deref(), Some("1"));
        let ann = emitted.metadata.annotations.as_ref().unwrap();
        assert!(!ann.contains_key(CONFIG_MIRROR_ANNOTATION));
        assert_eq!(ann[CONFIG_SOURCE_ANNOTATION], SRC);
        assert_eq!(
            emitted.status.as_ref().unwrap().phase.as_deref(),
            Some("Running")
        );
    }

    // upstream TestInitialEmptySet
    #[test]
    fn first_empty_set_emits_empty_add_once() {
        let mut m = Merger::new();
        assert!(!m.seen_sources([SRC]));
        let out = m.merge(SRC, PodOperation::Set, vec![]);
        assert_eq!(ops(&out), [(PodOperation::Add, vec![])]);
        assert!(m.seen_sources([SRC]));
        assert!(m.merge(SRC, PodOperation::Set, vec![]).updates.is_empty());
        let out = m.merge(SRC, PodOperation::Add, vec![pod("foo", "new")]);
        assert_eq!(ops(&out), [(PodOperation::Add, s(&["foo"]))]);
    }

    #[test]
    fn first_set_with_only_removes_and_reconciles_still_signals_ready() {
        let mut m = Merger::new();
        m.merge(SRC, PodOperation::Add, vec![pod("a", "ns"), pod("b", "ns")]);
        let mut b = pod("b", "ns");
        b.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        let out = m.merge(SRC, PodOperation::Set, vec![b]);
        assert_eq!(
            ops(&out),
            [
                (PodOperation::Remove, s(&["a"])),
                (PodOperation::Add, vec![]),
                (PodOperation::Reconcile, s(&["b"])),
            ]
        );
    }

    // upstream TestPodUpdateAnnotations / TestPodUpdateLabels
    #[test]
    fn annotation_and_label_changes_are_updates_local_ones_are_not() {
        let mut m = Merger::new();
        let mut p = pod("foo2", "new");
        p.metadata.annotations =
            Some([("kubernetes.io/blah".to_string(), "blah".to_string())].into());
        let first = m.merge(
            SRC,
            PodOperation::Set,
            vec![pod("foo1", "new"), p.clone(), pod("foo3", "new")],
        );
        let seen = first.updates[0]
            .pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("foo2"))
            .unwrap()
            .metadata
            .annotations
            .as_ref()
            .unwrap()[CONFIG_SEEN_ANNOTATION]
            .clone();
        p.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("kubernetes.io/blah".into(), "superblah".into());
        let out = m.merge(
            SRC,
            PodOperation::Set,
            vec![pod("foo1", "new"), p.clone(), pod("foo3", "new")],
        );
        assert_eq!(ops(&out), [(PodOperation::Update, s(&["foo2"]))]);
        let ann = out.updates[0].pods[0]
            .metadata
            .annotations
            .as_ref()
            .unwrap();
        assert_eq!(ann["kubernetes.io/blah"], "superblah");
        assert_eq!(ann[CONFIG_SEEN_ANNOTATION], seen, "first-seen time is kept");
        // A changed local annotation alone is not a change.
        p.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(CONFIG_MIRROR_ANNOTATION.into(), "x".into());
        assert!(
            m.merge(
                SRC,
                PodOperation::Set,
                vec![pod("foo1", "new"), p.clone(), pod("foo3", "new")]
            )
            .updates
            .is_empty()
        );
        // Removing an annotation is a change.
        p.metadata.annotations = None;
        let out = m.merge(
            SRC,
            PodOperation::Set,
            vec![pod("foo1", "new"), p.clone(), pod("foo3", "new")],
        );
        assert_eq!(ops(&out), [(PodOperation::Update, s(&["foo2"]))]);
        // Labels.
        p.metadata.labels = Some([("key".to_string(), "value".to_string())].into());
        let out = m.merge(
            SRC,
            PodOperation::Set,
            vec![pod("foo1", "new"), p, pod("foo3", "new")],
        );
        assert_eq!(ops(&out), [(PodOperation::Update, s(&["foo2"]))]);
        assert_eq!(
            out.updates[0].pods[0].metadata.labels.as_ref().unwrap()["key"],
            "value"
        );
    }

    #[test]
    fn duplicate_full_names_in_one_update_are_dropped_and_reported() {
        let mut m = Merger::new();
        let mut dup = pod("foo", "new");
        dup.metadata.uid = Some("other-uid".into());
        let out = m.merge(
            SRC,
            PodOperation::Set,
            vec![pod("foo", "new"), dup, pod("foo", "other")],
        );
        assert_eq!(ops(&out), [(PodOperation::Add, s(&["foo", "foo"]))]);
        assert_eq!(out.rejected.len(), 1);
        assert!(
            matches!(&*out.rejected[0].error, Error::DuplicateName { full_name, .. } if full_name == "foo_new")
        );
        assert_eq!(out.rejected[0].origin, "pod foo_new");
    }

    #[test]
    fn uid_claimed_by_two_sources_is_rejected() {
        let mut m = Merger::new();
        m.merge("file", PodOperation::Set, vec![pod("foo", "new")]);
        let out = m.merge("api", PodOperation::Set, vec![pod("foo", "new")]);
        assert_eq!(
            ops(&out),
            [(PodOperation::Add, vec![])],
            "api is ready but got nothing"
        );
        assert!(
            matches!(&*out.rejected[0].error, Error::UidConflict { owner, .. } if owner == "file")
        );
        assert_eq!(m.len(), 1);
        // Once file lets go, api may claim it.
        m.merge("file", PodOperation::Set, vec![]);
        let out = m.merge("api", PodOperation::Set, vec![pod("foo", "new")]);
        assert_eq!(ops(&out), [(PodOperation::Add, s(&["foo"]))]);
    }

    #[test]
    fn pod_without_uid_is_rejected() {
        let mut m = Merger::new();
        let mut p = pod("foo", "new");
        p.metadata.uid = None;
        let out = m.merge(SRC, PodOperation::Add, vec![p]);
        assert!(out.updates.is_empty());
        assert!(matches!(&*out.rejected[0].error, Error::MissingUid { .. }));
    }

    #[test]
    fn reconcile_from_a_source_is_ignored() {
        let mut m = Merger::new();
        assert!(
            m.merge(SRC, PodOperation::Reconcile, vec![pod("foo", "new")])
                .updates
                .is_empty()
        );
        assert!(m.is_empty());
    }

    #[test]
    fn seen_sources_needs_a_set_from_each() {
        let mut m = Merger::new();
        m.merge("file", PodOperation::Add, vec![pod("a", "x")]);
        assert!(!m.seen_sources(["file"]), "an ADD is not a SET");
        m.merge("file", PodOperation::Set, vec![]);
        assert!(m.seen_sources(["file"]));
        assert!(!m.seen_sources(["file", "api"]));
    }
}
