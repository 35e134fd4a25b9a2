//! Probe result caches, one per probe type (upstream
//! `pkg/kubelet/prober/results/results_manager.go`).
//!
//! A [`Manager`] maps a container ID to the last result its worker recorded
//! and publishes an [`Update`] whenever a result *changes*. The kubelet keeps
//! three: liveness and startup results are read by the runtime manager
//! (`computePodActions` kills a container whose liveness or startup result is
//! [`ProbeResult::Failure`]), readiness results by the status generation.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;

/// The outcome of a probe as the kubelet caches it (upstream `results.Result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    /// Not known yet: the initial value of a startup probe.
    Unknown,
    /// The probe passed (its success threshold was reached).
    Success,
    /// The probe failed (its failure threshold was reached).
    Failure,
}

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Upstream's String(): "Success", "Failure", "UNKNOWN".
        f.write_str(match self {
            ProbeResult::Success => "Success",
            ProbeResult::Failure => "Failure",
            ProbeResult::Unknown => "UNKNOWN",
        })
    }
}

pub use kubelet_container::ContainerId;

/// A changed result, sent on the channel of [`Manager::updates`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// The container whose result changed.
    pub container_id: ContainerId,
    /// Its new result.
    pub result: ProbeResult,
    /// The UID of the container's pod (so the kubelet can sync that pod).
    pub pod_uid: String,
}

/// A cache of probe results with a channel of changes (upstream
/// `results.Manager`).
///
/// Upstream hands out one buffered channel (20) and blocks the worker when
/// nobody reads it. Here the channel is unbounded, created by the first
/// [`Manager::updates`] call: before anyone subscribes nothing is queued, so
/// an unread manager cannot grow without bound, and a slow reader never
/// stalls the probe workers.
#[derive(Debug, Default)]
pub struct Manager {
    cache: Mutex<HashMap<ContainerId, ProbeResult>>,
    updates: Mutex<Option<mpsc::UnboundedSender<Update>>>,
}

impl Manager {
    /// An empty results cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<ContainerId, ProbeResult>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached result of a container, if its worker recorded one.
    pub fn get(&self, id: &ContainerId) -> Option<ProbeResult> {
        self.cache().get(id).copied()
    }

    /// Records `result` for the container; sends an [`Update`] only when it
    /// differs from the cached one (or none was cached).
    pub fn set(&self, id: &ContainerId, result: ProbeResult, pod_uid: &str) {
        let changed = {
            let mut cache = self.cache();
            match cache.insert(id.clone(), result) {
                Some(prev) => prev != result,
                None => true,
            }
        };
        if !changed {
            return;
        }
        tracing::debug!(container_id = %id, %result, pod_uid, "probe result changed");
        let sender = self
            .updates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(tx) = sender {
            // A dropped receiver only means nobody listens any more.
            let _ = tx.send(Update {
                container_id: id.clone(),
                result,
                pod_uid: pod_uid.to_owned(),
            });
        }
    }

    /// Forgets the container's result (no update is sent).
    pub fn remove(&self, id: &ContainerId) {
        self.cache().remove(id);
    }

    /// The channel of changed results. As upstream, there is one channel:
    /// calling this again replaces it (the previous receiver sees the end of
    /// its stream).
    pub fn updates(&self) -> mpsc::UnboundedReceiver<Update> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.updates.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        rx
    }

    /// How many containers have a cached result.
    pub fn len(&self) -> usize {
        self.cache().len()
    }

    /// True when no container has a cached result.
    pub fn is_empty(&self) -> bool {
        self.cache().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_parses_the_api_form() {
        let id = ContainerId::parse("containerd://abc123").unwrap();
        assert_eq!(id.runtime_type, "containerd");
        assert_eq!(id.id, "abc123");
        assert_eq!(id.to_string(), "containerd://abc123");
        assert_eq!("cri-o://x".parse::<ContainerId>().unwrap().id, "x");
        for bad in ["", "abc123", "containerd://", "://abc", "containerd:/abc"] {
            assert!(ContainerId::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn set_sends_an_update_only_on_a_change() {
        let m = Manager::new();
        let mut rx = m.updates();
        let id = ContainerId::new("containerd", "c1");
        assert_eq!(m.get(&id), None);

        m.set(&id, ProbeResult::Success, "pod-1");
        m.set(&id, ProbeResult::Success, "pod-1");
        m.set(&id, ProbeResult::Failure, "pod-1");
        assert_eq!(m.get(&id), Some(ProbeResult::Failure));

        let first = rx.try_recv().unwrap();
        assert_eq!(first.result, ProbeResult::Success);
        assert_eq!(first.pod_uid, "pod-1");
        assert_eq!(first.container_id, id);
        assert_eq!(rx.try_recv().unwrap().result, ProbeResult::Failure);
        assert!(rx.try_recv().is_err(), "an unchanged result was re-sent");

        // Remove is silent, and the next set is a change again.
        m.remove(&id);
        assert_eq!(m.get(&id), None);
        assert!(rx.try_recv().is_err());
        m.set(&id, ProbeResult::Failure, "pod-1");
        assert_eq!(rx.try_recv().unwrap().result, ProbeResult::Failure);
    }

    #[test]
    fn nothing_queues_before_a_subscriber_and_a_new_subscriber_replaces_the_old() {
        let m = Manager::new();
        let id = ContainerId::new("containerd", "c1");
        m.set(&id, ProbeResult::Success, "p");
        let mut first = m.updates();
        assert!(
            first.try_recv().is_err(),
            "an update before subscribing was kept"
        );
        let mut second = m.updates();
        m.set(&id, ProbeResult::Failure, "p");
        assert_eq!(second.try_recv().unwrap().result, ProbeResult::Failure);
        assert!(matches!(
            first.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
