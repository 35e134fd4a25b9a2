//! [`PodCache`]: the newest runtime status of every pod, with upstream's
//! blocking `GetNewerThan` (`pkg/kubelet/container/cache.go`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::{ContainerState, PodStatus};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::{Error, lock};

type Entry = Result<Arc<PodStatus>, Error>;

#[derive(Debug)]
struct Data {
    status: Entry,
    modified: Instant,
}

#[derive(Debug)]
struct Subscriber {
    /// `None`: upstream's zero time, woken by any data.
    time: Option<Instant>,
    tx: oneshot::Sender<Entry>,
}

#[derive(Debug, Default)]
struct Inner {
    pods: HashMap<String, Data>,
    timestamp: Option<Instant>,
    /// Ordered by UID: [`PodCache::update_time`] wakes the waiters of every
    /// pod in this order, which decides the order their pod workers run
    /// in. Upstream ranges over a Go map (any order); a fixed one makes a
    /// run on a paused clock (`kubelet-sim`) replay exactly.
    subscribers: BTreeMap<String, Vec<Subscriber>>,
}

#[derive(Debug, Default)]
struct Shared {
    inner: Mutex<Inner>,
    reject_older: AtomicBool,
}

/// The runtime status of every pod the runtime knows (upstream
/// `kubecontainer.Cache`, `pkg/kubelet/container/cache.go`).
///
/// Each entry is a status (or the error of the inspection that tried to
/// produce it) stamped with the time the inspection started. A global
/// timestamp, set by [`update_time`](Self::update_time) after every relist,
/// says that every entry is at least that fresh; it is unset until the first
/// relist. A pod with no entry has an empty status with its UID.
///
/// Clones share the same cache, so one cache can be handed both to a PLEG
/// (as `Arc<PodCache>`) and, by value, to the pod workers, for which it
/// implements `kubelet_podworkers::PodStatusCache`.
///
/// Timestamps are [`tokio::time::Instant`], so tests can run it on tokio's
/// paused clock.
#[derive(Debug, Clone, Default)]
pub struct PodCache {
    shared: Arc<Shared>,
}

fn default_entry(uid: &str) -> Entry {
    Ok(Arc::new(PodStatus {
        uid: uid.to_owned(),
        ..PodStatus::default()
    }))
}

impl Inner {
    fn get(&self, uid: &str) -> Entry {
        match self.pods.get(uid) {
            Some(d) => d.status.clone(),
            // No entry: the runtime showed nothing of the pod at the last
            // look, which an empty status says.
            None => default_entry(uid),
        }
    }

    /// Upstream `getIfNewerThan`.
    ///
    /// `None` is upstream's zero time: any entry of the pod, or any relist,
    /// is newer than it; before either there is nothing to answer.
    fn get_if_newer_than(&self, uid: &str, min_time: Option<Instant>) -> Option<Entry> {
        let global_is_newer = self
            .timestamp
            .is_some_and(|t| min_time.is_none_or(|m| t > m));
        match self.pods.get(uid) {
            None if global_is_newer => Some(default_entry(uid)),
            Some(d) if min_time.is_none_or(|m| d.modified > m) || global_is_newer => {
                Some(d.status.clone())
            }
            _ => None,
        }
    }

    /// Upstream `notify`: wakes the waiters on `uid` whose minimum time is
    /// not after `timestamp`.
    fn notify(&mut self, uid: &str, timestamp: Instant) {
        let Some(list) = self.subscribers.remove(uid) else {
            return;
        };
        let mut keep = Vec::new();
        let mut value = None;
        for sub in list {
            if sub.time.is_some_and(|t| timestamp < t) {
                keep.push(sub);
                continue;
            }
            let v = value.get_or_insert_with(|| self.get(uid)).clone();
            // A waiter that gave up is no error.
            let _ = sub.tx.send(v);
        }
        if !keep.is_empty() {
            self.subscribers.insert(uid.to_owned(), keep);
        }
    }
}

impl PodCache {
    /// An empty cache with no global timestamp.
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.shared.inner)
    }

    /// The pod's status, or the error of its last inspection; an empty
    /// status (UID only) when the cache has nothing of the pod (upstream
    /// `Get`).
    pub fn get(&self, uid: &str) -> Result<Arc<PodStatus>, Error> {
        self.inner().get(uid)
    }

    /// Every cached status (errors left out), in no order (upstream
    /// `GetAll`).
    pub fn get_all(&self) -> Vec<Arc<PodStatus>> {
        self.inner()
            .pods
            .values()
            .filter_map(|d| d.status.as_ref().ok().cloned())
            .collect()
    }

    /// Stores the pod's status (or inspection error) as of `timestamp` and
    /// wakes the waiters it satisfies (upstream `Set`). Returns whether it
    /// was stored: once [`set_reject_older`](Self::set_reject_older) is on
    /// (the evented PLEG turns it on, as upstream does when the
    /// `EventedPLEG` gate is enabled), data older than the cached entry is
    /// ignored.
    pub fn set(
        &self,
        uid: &str,
        status: Result<Arc<PodStatus>, Error>,
        timestamp: Instant,
    ) -> bool {
        let mut inner = self.inner();
        if self.rejects_older()
            && inner
                .pods
                .get(uid)
                .is_some_and(|cached| cached.modified > timestamp)
        {
            return false;
        }
        inner.pods.insert(
            uid.to_owned(),
            Data {
                status,
                modified: timestamp,
            },
        );
        inner.notify(uid, timestamp);
        true
    }

    /// Removes the pod's entry (upstream `Delete`; wakes no one).
    pub fn delete(&self, uid: &str) {
        self.inner().pods.remove(uid);
    }

    /// Sets the global timestamp: every entry is at least as fresh as
    /// `timestamp` (upstream `UpdateTime`, called after each relist). Wakes
    /// every waiter whose minimum time is not after it.
    pub fn update_time(&self, timestamp: Instant) {
        let mut inner = self.inner();
        inner.timestamp = Some(timestamp);
        let uids: Vec<String> = inner.subscribers.keys().cloned().collect();
        for uid in uids {
            inner.notify(&uid, timestamp);
        }
    }

    /// Moves the global timestamp to `timestamp` if a relist has set it
    /// before, as [`update_time`](Self::update_time) does; before the first
    /// relist it does nothing.
    ///
    /// For a source of events (upstream's evented PLEG `updateGlobalCache`):
    /// events keep the entries fresh, but only once a relist has written
    /// every pod. Upstream sets the time regardless, so a kubelet restarted
    /// with its first relist still running can sync a running pod against an
    /// empty status and create a second sandbox (found by the fault soak).
    pub fn refresh_time(&self, timestamp: Instant) -> bool {
        if self.inner().timestamp.is_none() {
            return false;
        }
        self.update_time(timestamp);
        true
    }

    /// Waits until the cache holds data for the pod newer than `min_time`,
    /// or the global timestamp passes `min_time`, then returns what
    /// [`get`](Self::get) would (upstream `GetNewerThan`).
    /// `None` is upstream's zero time: it waits for the first data of the
    /// pod or the first relist, so that a kubelet that restarts never syncs
    /// a running pod against an empty status (which would make a second
    /// sandbox for it).
    pub async fn get_newer_than(
        &self,
        uid: &str,
        min_time: Option<Instant>,
    ) -> Result<Arc<PodStatus>, Error> {
        let rx = {
            let mut inner = self.inner();
            if let Some(ready) = inner.get_if_newer_than(uid, min_time) {
                return ready;
            }
            let (tx, rx) = oneshot::channel();
            let list = inner.subscribers.entry(uid.to_owned()).or_default();
            // Forget waiters that gave up, so cancelled waits do not pile up.
            list.retain(|s| !s.tx.is_closed());
            list.push(Subscriber { time: min_time, tx });
            rx
        };
        match rx.await {
            Ok(entry) => entry,
            // Unreachable while `self` is borrowed; answer what is there.
            Err(_) => self.get(uid),
        }
    }

    /// The global timestamp, unset before the first relist.
    pub fn timestamp(&self) -> Option<Instant> {
        self.inner().timestamp
    }

    /// When the pod's entry was last set, if it has one.
    pub fn modified(&self, uid: &str) -> Option<Instant> {
        self.inner().pods.get(uid).map(|d| d.modified)
    }

    /// How many pods have an entry.
    pub fn len(&self) -> usize {
        self.inner().pods.len()
    }

    /// True when no pod has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many [`get_newer_than`](Self::get_newer_than) calls are waiting.
    pub fn waiters(&self) -> usize {
        self.inner()
            .subscribers
            .values()
            .flatten()
            .filter(|s| !s.tx.is_closed())
            .count()
    }

    /// Makes [`set`](Self::set) ignore data older than the cached entry.
    pub fn set_reject_older(&self, on: bool) {
        self.shared.reject_older.store(on, Ordering::Release);
    }

    /// Whether [`set`](Self::set) ignores data older than the cached entry.
    pub fn rejects_older(&self) -> bool {
        self.shared.reject_older.load(Ordering::Acquire)
    }

    /// The pod whose cached status holds the container or sandbox `id`.
    pub fn find_pod_of(&self, id: &str) -> Option<String> {
        self.inner().pods.iter().find_map(|(uid, d)| {
            let status = d.status.as_ref().ok()?;
            let found = status.container_statuses.iter().any(|c| c.id == id)
                || status.sandbox_statuses.iter().any(|s| s.id == id);
            found.then(|| uid.clone())
        })
    }

    /// True when the cached status shows nothing of the pod running (no
    /// running container, no ready sandbox); an unknown pod is terminal, a
    /// cached inspection error is not (upstream `isPodStatusCacheTerminal`).
    pub fn is_runtime_terminal(&self, uid: &str) -> bool {
        let inner = self.inner();
        match inner.pods.get(uid).map(|d| &d.status) {
            None => true,
            Some(Err(_)) => false,
            Some(Ok(status)) => {
                !status.has_ready_sandbox()
                    && !status
                        .container_statuses
                        .iter()
                        .any(|c| c.state == ContainerState::Running)
            }
        }
    }
}

#[cfg(test)]
mod tests;
