//! The signal observations the eviction manager derives from a stats
//! [`Summary`] (upstream `pkg/kubelet/eviction/helpers.go`
//! `makeSignalObservations`), and [`FakeSummaryProvider`] for tests.
//!
//! The summary model and the [`SummaryProvider`] trait are the core
//! crate's ([`kubelet_container::stats`]), shared with `/stats/summary`.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubelet_container::stats::{
    FsStats, MemoryStats, SYSTEM_CONTAINER_PODS, Summary, SummaryProvider,
};

use crate::threshold::Signal;

/// A [`SummaryProvider`] returning whatever summary was last set: for tests
/// and benchmarks (of this crate and of callers driving a [`Manager`](crate::Manager)).
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
    async fn get(&self, _update_stats: bool) -> Result<Summary, kubelet_container::Error> {
        *self.calls.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| kubelet_container::Error::stats("fake summary provider set to fail"))
    }
}

/// One signal's observed value (upstream `signalObservation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Available amount.
    pub available: i64,
    /// Capacity (percentage thresholds are fractions of it).
    pub capacity: i64,
    /// When it was read (the stats' own time; `None`: always fresh).
    pub time: Option<Time>,
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
                time: fs.time.clone(),
            },
        );
    }
    if let (Some(f), Some(t)) = (fs.inodes_free, fs.inodes) {
        out.insert(
            inodes,
            Observation {
                available: sat(f),
                capacity: sat(t),
                time: fs.time.clone(),
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
        time: m.time.clone(),
    })
}

/// Derives the signal observations from a summary (upstream
/// `makeSignalObservations`): memory capacity is available + working set;
/// `allocatableMemory.available` reads the `pods` system container; the
/// image and container filesystems are the runtime's; `pid.available` is
/// the PID limit minus running processes.
pub fn make_observations(summary: &Summary) -> Observations {
    let mut out = Observations::with_capacity(Signal::ALL.len());
    let node = &summary.node;
    if let Some(o) = memory_observation(node.memory.as_ref()) {
        out.insert(Signal::MemoryAvailable, o);
    }
    let pods_memory = node
        .system_container(SYSTEM_CONTAINER_PODS)
        .and_then(|c| c.memory.as_ref());
    if let Some(o) = memory_observation(pods_memory) {
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
        node.image_fs(),
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
    );
    fs_observations(
        &mut out,
        node.container_fs(),
        Signal::ContainerFsAvailable,
        Signal::ContainerFsInodesFree,
    );
    if let Some(r) = node.rlimit.as_ref()
        && let (Some(max), Some(running)) = (r.max_pid, r.num_of_running_processes)
    {
        out.insert(
            Signal::PidAvailable,
            Observation {
                available: max.saturating_sub(running),
                capacity: max,
                time: r.time.clone(),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelet_container::stats::{ContainerStats, NodeStats, RlimitStats, RuntimeStats};

    #[test]
    fn observations_as_upstream() {
        let s = Summary {
            node: NodeStats {
                memory: Some(MemoryStats {
                    available_bytes: Some(500),
                    working_set_bytes: Some(1500),
                    usage_bytes: Some(1700),
                    ..Default::default()
                }),
                system_containers: vec![ContainerStats {
                    name: SYSTEM_CONTAINER_PODS.into(),
                    memory: Some(MemoryStats {
                        available_bytes: Some(100),
                        working_set_bytes: Some(900),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                fs: Some(FsStats {
                    available_bytes: Some(10),
                    capacity_bytes: Some(100),
                    inodes_free: Some(5),
                    inodes: Some(50),
                    ..Default::default()
                }),
                runtime: Some(RuntimeStats {
                    image_fs: Some(FsStats {
                        available_bytes: Some(20),
                        capacity_bytes: Some(200),
                        ..Default::default()
                    }),
                    container_fs: None,
                }),
                rlimit: Some(RlimitStats {
                    max_pid: Some(1000),
                    num_of_running_processes: Some(300),
                    time: None,
                }),
                ..Default::default()
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

    #[test]
    fn observations_carry_the_stats_time() {
        let t = kubelet_container::stats::now();
        let s = Summary {
            node: NodeStats {
                memory: Some(MemoryStats {
                    time: Some(t.clone()),
                    available_bytes: Some(1),
                    working_set_bytes: Some(1),
                    ..Default::default()
                }),
                ..Default::default()
            },
            pods: vec![],
        };
        let o = make_observations(&s);
        assert_eq!(
            o.get(&Signal::MemoryAvailable).and_then(|o| o.time.clone()),
            Some(t)
        );
    }

    #[tokio::test]
    async fn fake_provider_sets_and_fails() {
        let p = FakeSummaryProvider::new(Summary::default());
        assert!(p.get(true).await.is_ok());
        p.fail();
        assert!(matches!(
            p.get(true).await,
            Err(kubelet_container::Error::Stats(_))
        ));
        p.set(Summary::default());
        assert!(p.get(false).await.is_ok());
        assert_eq!(p.calls(), 3);
    }
}
