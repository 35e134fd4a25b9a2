//! The node and pod statistics the eviction manager observes, the
//! [`SummaryProvider`] trait that supplies them, and the signal observations
//! derived from them.
//!
//! Upstream: the kubelet's summary API (`k8s.io/kubelet/pkg/apis/stats/v1alpha1`,
//! `Summary`, `NodeStats`, `PodStats`), `pkg/kubelet/server/stats`
//! (`SummaryProvider`), and `helpers.go` `makeSignalObservations`. Only the
//! fields eviction reads are kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;

use crate::Error;
use crate::threshold::Signal;

/// Memory statistics of the node or of a cgroup (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// When the stats were read; `None` counts as always fresh.
    pub time: Option<Instant>,
    /// Capacity minus working set.
    pub available_bytes: Option<u64>,
    /// Total usage (`memory.usage_in_bytes`).
    pub usage_bytes: Option<u64>,
    /// Usage minus `total_inactive_file` (upstream cadvisor's working set).
    pub working_set_bytes: Option<u64>,
}

/// Filesystem statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStats {
    /// When read.
    pub time: Option<Instant>,
    /// Bytes available to unprivileged users.
    pub available_bytes: Option<u64>,
    /// Total bytes.
    pub capacity_bytes: Option<u64>,
    /// Bytes used (for pod and container stats: by that pod or container).
    pub used_bytes: Option<u64>,
    /// Inodes free.
    pub inodes_free: Option<u64>,
    /// Total inodes.
    pub inodes: Option<u64>,
    /// Inodes used (pod and container stats).
    pub inodes_used: Option<u64>,
}

/// Process limits of the node (upstream `RlimitStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RlimitStats {
    /// When read.
    pub time: Option<Instant>,
    /// The PID limit (`min(pid_max, threads-max)`).
    pub max_pid: Option<u64>,
    /// Running processes (threads) on the node.
    pub num_of_running_processes: Option<u64>,
}

/// Node-level statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// The whole node's memory.
    pub memory: Option<MemoryStats>,
    /// The `pods` system container (the cgroup holding every pod): the
    /// source of `allocatableMemory.available`.
    pub pods_memory: Option<MemoryStats>,
    /// The kubelet's filesystem (nodefs).
    pub fs: Option<FsStats>,
    /// The runtime's image filesystem.
    pub image_fs: Option<FsStats>,
    /// The runtime's writable-layer filesystem, when reported separately.
    pub container_fs: Option<FsStats>,
    /// Process limits.
    pub rlimit: Option<RlimitStats>,
}

/// A container's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStats {
    /// The container's name in the pod spec.
    pub name: String,
    /// Its memory working set.
    pub memory_working_set_bytes: Option<u64>,
    /// Its writable layer.
    pub rootfs: Option<FsStats>,
    /// Its logs.
    pub logs: Option<FsStats>,
}

/// A volume's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeStats {
    /// The volume's name in the pod spec.
    pub name: String,
    /// Its usage.
    pub fs: FsStats,
}

/// A pod's statistics, keyed by UID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodStats {
    /// The pod's UID.
    pub uid: String,
    /// The pod's memory working set (its cgroup).
    pub memory_working_set_bytes: Option<u64>,
    /// Its containers.
    pub containers: Vec<ContainerStats>,
    /// Its volumes.
    pub volumes: Vec<VolumeStats>,
    /// Its total ephemeral storage use (containers, emptyDirs, logs).
    pub ephemeral_storage: Option<FsStats>,
    /// Processes in its cgroup.
    pub process_count: Option<u64>,
}

/// A summary of the node (upstream `statsapi.Summary`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Node-level stats.
    pub node: NodeStats,
    /// Per-pod stats.
    pub pods: Vec<PodStats>,
}

/// The source of [`Summary`]s (upstream `stats.SummaryProvider.Get`).
#[async_trait]
pub trait SummaryProvider: Send + Sync + 'static {
    /// Reads the node's current stats. `update_stats` asks the provider to
    /// refresh cached values first (upstream's `updateStats`).
    async fn get(&self, update_stats: bool) -> Result<Summary, Error>;
}

/// A [`SummaryProvider`] returning whatever summary was last set: for tests
/// and benchmarks.
#[derive(Debug, Default)]
pub struct FakeSummaryProvider {
    summary: Mutex<Option<Summary>>,
    calls: Mutex<usize>,
}

impl FakeSummaryProvider {
    /// A provider returning `summary`.
    pub fn new(summary: Summary) -> Self {
        Self {
            summary: Mutex::new(Some(summary)),
            calls: Mutex::new(0),
        }
    }

    /// Replaces the summary.
    pub fn set(&self, summary: Summary) {
        *self.summary.lock().unwrap_or_else(|e| e.into_inner()) = Some(summary);
    }

    /// Makes the next calls fail until [`FakeSummaryProvider::set`].
    pub fn fail(&self) {
        *self.summary.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Changes the summary in place.
    pub fn update(&self, f: impl FnOnce(&mut Summary)) {
        if let Some(s) = self
            .summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            f(s);
        }
    }

    /// How many times [`SummaryProvider::get`] was called.
    pub fn calls(&self) -> usize {
        *self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SummaryProvider for FakeSummaryProvider {
    async fn get(&self, _update_stats: bool) -> Result<Summary, Error> {
        *self.calls.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::Summary("fake summary provider set to fail".into()))
    }
}

/// One signal's observed value (upstream `signalObservation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Available amount.
    pub available: i64,
    /// Capacity (percentage thresholds are fractions of it).
    pub capacity: i64,
    /// When it was read.
    pub time: Option<Instant>,
}

/// Observations per signal (upstream `signalObservations`).
pub type Observations = HashMap<Signal, Observation>;

fn sat(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn fs_observations(out: &mut Observations, fs: Option<&FsStats>, bytes: Signal, inodes: Signal) {
    let Some(fs) = fs else { return };
    if let (Some(a), Some(c)) = (fs.available_bytes, fs.capacity_bytes) {
        out.insert(
            bytes,
            Observation {
                available: sat(a),
                capacity: sat(c),
                time: fs.time,
            },
        );
    }
    if let (Some(f), Some(t)) = (fs.inodes_free, fs.inodes) {
        out.insert(
            inodes,
            Observation {
                available: sat(f),
                capacity: sat(t),
                time: fs.time,
            },
        );
    }
}

fn memory_observation(m: Option<&MemoryStats>) -> Option<Observation> {
    let m = m?;
    let (a, ws) = (m.available_bytes?, m.working_set_bytes?);
    Some(Observation {
        available: sat(a),
        capacity: sat(a.saturating_add(ws)),
        time: m.time,
    })
}

/// Derives the signal observations from a summary (upstream
/// `makeSignalObservations`): memory capacity is available + working set;
/// `pid.available` is the PID limit minus running processes.
pub fn make_observations(summary: &Summary) -> Observations {
    let mut out = Observations::with_capacity(Signal::ALL.len());
    let node = &summary.node;
    if let Some(o) = memory_observation(node.memory.as_ref()) {
        out.insert(Signal::MemoryAvailable, o);
    }
    if let Some(o) = memory_observation(node.pods_memory.as_ref()) {
        out.insert(Signal::AllocatableMemoryAvailable, o);
    }
    fs_observations(
        &mut out,
        node.fs.as_ref(),
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
    );
    fs_observations(
        &mut out,
        node.image_fs.as_ref(),
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
    );
    fs_observations(
        &mut out,
        node.container_fs.as_ref(),
        Signal::ContainerFsAvailable,
        Signal::ContainerFsInodesFree,
    );
    if let Some(r) = node.rlimit.as_ref()
        && let (Some(max), Some(running)) = (r.max_pid, r.num_of_running_processes)
    {
        out.insert(
            Signal::PidAvailable,
            Observation {
                available: sat(max) - sat(running),
                capacity: sat(max),
                time: r.time,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_as_upstream() {
        let s = Summary {
            node: NodeStats {
                memory: Some(MemoryStats {
                    available_bytes: Some(500),
                    working_set_bytes: Some(1500),
                    usage_bytes: Some(1700),
                    time: None,
                }),
                pods_memory: Some(MemoryStats {
                    available_bytes: Some(100),
                    working_set_bytes: Some(900),
                    ..Default::default()
                }),
                fs: Some(FsStats {
                    available_bytes: Some(10),
                    capacity_bytes: Some(100),
                    inodes_free: Some(5),
                    inodes: Some(50),
                    ..Default::default()
                }),
                image_fs: Some(FsStats {
                    available_bytes: Some(20),
                    capacity_bytes: Some(200),
                    ..Default::default()
                }),
                container_fs: None,
                rlimit: Some(RlimitStats {
                    max_pid: Some(1000),
                    num_of_running_processes: Some(300),
                    time: None,
                }),
            },
            pods: vec![],
        };
        let o = make_observations(&s);
        let get = |sig| o.get(&sig).map(|o| (o.available, o.capacity));
        assert_eq!(get(Signal::MemoryAvailable), Some((500, 2000)));
        assert_eq!(get(Signal::AllocatableMemoryAvailable), Some((100, 1000)));
        assert_eq!(get(Signal::NodeFsAvailable), Some((10, 100)));
        assert_eq!(get(Signal::NodeFsInodesFree), Some((5, 50)));
        assert_eq!(get(Signal::ImageFsAvailable), Some((20, 200)));
        assert_eq!(get(Signal::ImageFsInodesFree), None, "no inode stats");
        assert_eq!(get(Signal::ContainerFsAvailable), None);
        assert_eq!(get(Signal::PidAvailable), Some((700, 1000)));
    }

    #[tokio::test]
    async fn fake_provider_sets_and_fails() {
        let p = FakeSummaryProvider::new(Summary::default());
        assert!(p.get(true).await.is_ok());
        p.fail();
        assert!(matches!(p.get(true).await, Err(Error::Summary(_))));
        p.set(Summary::default());
        assert!(p.get(false).await.is_ok());
        assert_eq!(p.calls(), 3);
    }
}
