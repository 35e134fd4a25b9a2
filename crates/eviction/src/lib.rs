//! Node-pressure eviction, admission, and the backoff that tames crash loops
//! and image pulls.
//!
//! Mirrors upstream `pkg/kubelet/eviction` (`eviction_manager.go`,
//! `helpers.go`, `api/types.go`, `memory_threshold_notifier.go`,
//! `threshold_notifier_linux.go`) and
//! `staging/src/k8s.io/client-go/util/flowcontrol/backoff.go`.
//!
//! - [`backoff`]: [`Backoff`], the keyed exponential backoff (crash loop:
//!   10 s doubling to 300 s, reset after 10 minutes without a failure;
//!   image pull: 10 s to 300 s), on an injectable [`Clock`], with the
//!   upstream keys [`crash_loop_key`] and [`image_pull_key`].
//! - [`ratelimit`]: [`TokenBucket`] (registry pulls 5 QPS / burst 10,
//!   events 50 / 100) and [`KeyedTokenBucket`] (the per-object event spam
//!   filter), on `governor`.
//! - [`threshold`]: [`Signal`], [`Threshold`], and [`ThresholdConfig::parse`]
//!   for `evictionHard` / `evictionSoft` / grace periods / minimum reclaim,
//!   with upstream's Linux defaults.
//! - [`summary`]: the signal observations derived from a stats
//!   [`Summary`] and [`FakeSummaryProvider`]; the summary model and the
//!   central trait [`SummaryProvider`] are the core crate's
//!   ([`kubelet_container::stats`], re-exported here), shared with
//!   `/stats/summary`; [`cgroup_summary`] reads the real node (cgroup v1,
//!   `statvfs`, PID limits).
//! - [`manager`]: [`Manager`]: `synchronize` every 10 s, grace periods,
//!   `MemoryPressure` / `DiskPressure` / `PIDPressure` with the 5-minute
//!   transition period, node-level reclaim hooks, ranking ([`rank`]), at
//!   most one eviction per pass through a [`PodKiller`], the evicted
//!   status, the `Evicted` and `EvictionThresholdMet` events
//!   ([`Manager::with_event_recorder`]), and [`Manager::admit`].
//! - [`notifier`]: kernel memory threshold notification (cgroup v1
//!   `cgroup.event_control` + eventfd, safely through `rustix`) that wakes
//!   the manager within milliseconds; the 10 s loop stays as the fallback.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use kubelet_eviction::cgroup_summary::CgroupSummaryProvider;
//! use kubelet_eviction::manager::{Config, Eviction, Manager, PodKiller};
//! use kubelet_eviction::notifier::attach_memcg_notifiers;
//! use kubelet_eviction::ThresholdConfig;
//!
//! struct Kill;
//! #[async_trait::async_trait]
//! impl PodKiller for Kill {
//!     async fn kill_pod(&self, ev: &Eviction) -> Result<(), String> {
//!         println!("evict {:?} in {}s: {}", ev.pod.metadata.name, ev.grace_period_seconds, ev.status.message);
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo() -> Result<(), kubelet_eviction::Error> {
//! let thresholds = ThresholdConfig::kubelet_defaults().parse()?;
//! let stats = CgroupSummaryProvider::default();
//! let config = Config { thresholds, disk_layout: stats.disk_layout(), ..Default::default() };
//! let manager = Arc::new(Manager::new(config, Arc::new(stats), Arc::new(Kill)));
//! attach_memcg_notifiers(&manager, "/sys/fs/cgroup/memory".as_ref(), "kubepods");
//! let admitted = manager.admit(&Default::default()).admit;
//! assert!(admitted);
//! manager.clone().run(Vec::new, |_| true, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

pub mod cgroup_summary;
pub mod error;
pub mod manager;
pub mod notifier;
pub mod rank;
pub mod summary;

#[cfg(test)]
mod testutil;

pub use error::{Error, Result};
pub use kubelet_container::flowcontrol::{
    Backoff, Clock, FakeClock, KeyedTokenBucket, RealClock, TokenBucket, backoff, crash_loop_key,
    image_pull_key, ratelimit, system_time_from_unix_nanos,
};
pub use kubelet_container::stats::{Summary, SummaryProvider};
pub use kubelet_container::threshold::{
    self, NodeCondition, Signal, Threshold, ThresholdConfig, ThresholdValue,
};
pub use manager::{AdmitResult, Config, EvictedStatus, Eviction, Manager, PodKiller};
pub use summary::FakeSummaryProvider;

#[cfg(test)]
mod manager_tests;
