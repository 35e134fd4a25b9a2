//! The eviction manager: observes signals, reports node pressure, reclaims
//! node-level resources, evicts at most one pod per cycle, and admits or
//! rejects new pods.
//!
//! Upstream: `pkg/kubelet/eviction/eviction_manager.go` (`managerImpl`,
//! `synchronize`, `Admit`, `Start`, `waitForPodsCleanup`,
//! `reclaimNodeLevelResources`, `localStorageEviction`, `evictPod`),
//! `helpers.go` (`thresholdsMet`, `thresholdsFirstObservedAt`,
//! `thresholdsMetGracePeriod`, `nodeConditions*`, `thresholdsUpdatedStats`,
//! `evictionMessage`) and `types.go` (`Config`, `ImageGC`, `ContainerGC`).
//!
//! Where we do better: the manager wakes within milliseconds of a kernel
//! memory threshold notification ([`Manager::wake`], driven by
//! [`crate::notifier`]) on cgroup v1 *and* falls back to the 10 s loop;
//! pods are ranked on precomputed keys ([`crate::rank`]); and evictions
//! are returned as values ([`Eviction`]) the caller can inspect, not only
//! side effects.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};

use crate::Error;
use crate::backoff::{Clock, RealClock};
use crate::rank::{DiskLayout, FsStatsType, RankFunc, pod_disk_usage, rank, rank_func};
use crate::summary::{Observations, make_observations};
use crate::threshold::{
    NodeCondition, Resource, Signal, Threshold, update_container_fs_thresholds,
};
use kubelet_container::events::{EventRecorder, EventType, ObjectReference, pod_ref, reason};
use kubelet_container::stats::{PodStats, Summary, SummaryProvider};

/// Upstream `evictionMonitoringPeriod` (`kubelet.go`).
pub const EVICTION_MONITORING_PERIOD: Duration = Duration::from_secs(10);
/// Upstream default `evictionPressureTransitionPeriod`.
pub const PRESSURE_TRANSITION_PERIOD: Duration = Duration::from_secs(300);
/// Upstream `podCleanupTimeout`.
pub const POD_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Upstream `podCleanupPollFreq`.
pub const POD_CLEANUP_POLL_FREQ: Duration = Duration::from_secs(1);
/// Upstream `immediateEvictionGracePeriodSeconds` (newest; older kubelets
/// used 0). The grace period for hard thresholds and local storage limits.
pub const IMMEDIATE_EVICTION_GRACE_PERIOD_SECONDS: i64 = 1;
/// Upstream `notifierRefreshInterval`: how often kernel notifier thresholds
/// are recomputed from the summary.
pub const NOTIFIER_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// The status reason of an evicted pod and of a rejected admission (upstream
/// `eviction.Reason`).
pub const REASON: &str = "Evicted";
/// The taint a BestEffort pod must tolerate to be admitted under memory
/// pressure (`v1.TaintNodeMemoryPressure`).
pub const TAINT_NODE_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// Annotation key on eviction events: containers over their request.
pub const OFFENDING_CONTAINERS_KEY: &str = "offending_containers";
/// Annotation key on eviction events: those containers' usage.
pub const OFFENDING_CONTAINERS_USAGE_KEY: &str = "offending_containers_usage";
/// Annotation key on eviction events: the starved resource.
pub const STARVED_RESOURCE_KEY: &str = "starved_resource";

/// The manager's configuration (upstream `eviction.Config`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The thresholds (from [`crate::ThresholdConfig::parse`]).
    pub thresholds: Vec<Threshold>,
    /// How long a pressure condition stays reported after it was last
    /// observed (`evictionPressureTransitionPeriod`, 5 min).
    pub pressure_transition_period: Duration,
    /// The most grace a pod gets on a soft eviction
    /// (`evictionMaxPodGracePeriod`, 0).
    pub max_pod_grace_period_seconds: i64,
    /// The grace on hard evictions (1 as newest upstream; 0 as older).
    pub hard_eviction_grace_period_seconds: i64,
    /// Evict pods over their emptyDir `sizeLimit` or ephemeral-storage
    /// limits (`LocalStorageCapacityIsolation`, on upstream).
    pub local_storage_capacity_isolation: bool,
    /// The disk layout (decides containerfs thresholds, ranking and
    /// node-level reclaim).
    pub disk_layout: DiskLayout,
    /// The loop period (10 s).
    pub monitoring_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            thresholds: Vec::new(),
            pressure_transition_period: PRESSURE_TRANSITION_PERIOD,
            max_pod_grace_period_seconds: 0,
            hard_eviction_grace_period_seconds: IMMEDIATE_EVICTION_GRACE_PERIOD_SECONDS,
            local_storage_capacity_isolation: true,
            disk_layout: DiskLayout::default(),
            monitoring_interval: EVICTION_MONITORING_PERIOD,
        }
    }
}

/// The status an evicted pod gets: phase `Failed`, reason `Evicted`, the
/// message, and a `DisruptionTarget` condition (reason
/// `TerminationByKubelet`).
#[derive(Debug, Clone, PartialEq)]
pub struct EvictedStatus {
    /// `Evicted`.
    pub reason: String,
    /// "The node was low on resource: memory. Threshold quantity: ..., available: .... Container ..."
    pub message: String,
    /// The event annotations (`offending_containers`, ...).
    pub annotations: BTreeMap<String, String>,
}

impl EvictedStatus {
    /// The pod condition upstream adds (`PodDisruptionConditions`).
    pub fn condition(&self) -> PodCondition {
        PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("TerminationByKubelet".into()),
            message: Some(self.message.clone()),
            ..Default::default()
        }
    }

    /// Writes phase, reason, message and the condition into `status`.
    pub fn apply_to(&self, status: &mut PodStatus) {
        status.phase = Some("Failed".into());
        status.reason = Some(self.reason.clone());
        status.message = Some(self.message.clone());
        let cond = self.condition();
        let conds = status.conditions.get_or_insert_with(Vec::new);
        conds.retain(|c| c.type_ != cond.type_);
        conds.push(cond);
    }
}

/// Whether a pod status is an eviction's (upstream `PodIsEvicted`).
pub fn pod_is_evicted(status: &PodStatus) -> bool {
    status.phase.as_deref() == Some("Failed") && status.reason.as_deref() == Some(REASON)
}

/// One eviction: the pod, its grace period, why, and the status to set.
#[derive(Debug, Clone)]
pub struct Eviction {
    /// The pod evicted.
    pub pod: Pod,
    /// The grace period override for the kill.
    pub grace_period_seconds: i64,
    /// The signal that drove it; `None` for a local storage limit.
    pub signal: Option<Signal>,
    /// The status to report.
    pub status: EvictedStatus,
}

/// Kills an evicted pod (upstream `PodTerminator.TerminatePodAbnormallyAndWait`).
/// It should return once the pod's containers are stopped; errors are
/// logged and the eviction still counts, as upstream.
#[async_trait]
pub trait PodKiller: Send + Sync + 'static {
    /// Kills `eviction.pod` with `eviction.grace_period_seconds` and records
    /// `eviction.status` as its status.
    async fn kill_pod(&self, eviction: &Eviction) -> Result<(), String>;
}

/// Deletes dead containers to reclaim disk (upstream `ContainerGC`).
#[async_trait]
pub trait ContainerGc: Send + Sync + 'static {
    /// Deletes every container not running (upstream `DeleteAllUnusedContainers`).
    async fn delete_all_unused_containers(&self) -> Result<(), String>;
}

/// Deletes unused images to reclaim disk (upstream `ImageGC`).
#[async_trait]
pub trait ImageGc: Send + Sync + 'static {
    /// Deletes images no container uses (upstream `DeleteUnusedImages`).
    async fn delete_unused_images(&self) -> Result<(), String>;
}

/// The outcome of [`Manager::admit`] (upstream `lifecycle.PodAdmitResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmitResult {
    /// Whether the pod may run.
    pub admit: bool,
    /// `Evicted` when rejected.
    pub reason: String,
    /// `The node had condition: [MemoryPressure]. ` when rejected.
    pub message: String,
}

impl AdmitResult {
    fn yes() -> Self {
        Self {
            admit: true,
            reason: String::new(),
            message: String::new(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    node_conditions: Vec<NodeCondition>,
    node_conditions_last_observed_at: HashMap<NodeCondition, Instant>,
    thresholds_first_observed_at: Vec<(Threshold, Instant)>,
    thresholds_met: Vec<Threshold>,
    last_observations: Observations,
    notifiers_updated_at: Option<Instant>,
}

/// Something the manager re-arms from each summary, such as a kernel memory
/// threshold notifier (upstream `ThresholdNotifier`).
pub trait ThresholdNotifier: Send + Sync + 'static {
    /// Recomputes the kernel threshold from `summary`.
    fn update_threshold(&self, summary: &Summary) -> Result<(), Error>;
    /// A description for logs.
    fn description(&self) -> String;
}

/// The eviction manager. Share it in an [`Arc`]: [`Manager::run`] drives it,
/// [`Manager::admit`] and the `is_under_*` queries read it.
pub struct Manager {
    config: Config,
    clock: Arc<dyn Clock>,
    summary: Arc<dyn SummaryProvider>,
    killer: Arc<dyn PodKiller>,
    container_gc: Option<Arc<dyn ContainerGc>>,
    image_gc: Option<Arc<dyn ImageGc>>,
    /// Where `Evicted` (on the pod) and `EvictionThresholdMet` (on the
    /// node, the reference given) are recorded.
    events: Option<(Arc<dyn EventRecorder>, ObjectReference)>,
    notifiers: Mutex<Vec<Arc<dyn ThresholdNotifier>>>,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
    woken: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("config", &self.config)
            .field("node_conditions", &self.node_conditions())
            .finish_non_exhaustive()
    }
}

fn format_binary(v: i64) -> String {
    const SUFFIXES: [(&str, u32); 6] = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    if v != 0 {
        for (s, shift) in SUFFIXES {
            let unit = 1i64 << shift;
            if v % unit == 0 {
                return format!("{}{s}", v / unit);
            }
        }
    }
    v.to_string()
}

fn format_decimal(v: i64) -> String {
    const SUFFIXES: [(&str, i64); 6] = [
        ("E", 1_000_000_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("T", 1_000_000_000_000),
        ("G", 1_000_000_000),
        ("M", 1_000_000),
        ("k", 1_000),
    ];
    if v != 0 {
        for (s, unit) in SUFFIXES {
            if v % unit == 0 {
                return format!("{}{s}", v / unit);
            }
        }
    }
    v.to_string()
}

/// Formats a quantity as upstream's `resource.Quantity.String()` does for
/// whole numbers: binary suffixes (`Ki`..`Ei`) for bytes, decimal (`k`..`E`)
/// for counts, only when exact.
pub fn format_quantity(v: i64, resource: Resource) -> String {
    match resource {
        Resource::Memory | Resource::EphemeralStorage => format_binary(v),
        Resource::Inodes | Resource::Pids => format_decimal(v),
    }
}

/// Upstream `thresholdsMet`: thresholds whose quantity (plus the minimum
/// reclaim when `enforce_min_reclaim`) exceeds what is available.
pub fn thresholds_met(
    thresholds: &[Threshold],
    observations: &Observations,
    enforce_min_reclaim: bool,
) -> Vec<Threshold> {
    thresholds
        .iter()
        .filter(|t| {
            let Some(o) = observations.get(&t.signal) else {
                tracing::debug!(signal = %t.signal, "eviction manager: no observation found for eviction signal");
                return false;
            };
            t.quantity(o.capacity, enforce_min_reclaim) > o.available
        })
        .cloned()
        .collect()
}

fn merge_thresholds(mut a: Vec<Threshold>, b: Vec<Threshold>) -> Vec<Threshold> {
    for t in b {
        if !a.iter().any(|x| x.same_rule(&t)) {
            a.push(t);
        }
    }
    a
}

fn tolerates_memory_pressure(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .is_some_and(|ts| {
            ts.iter().any(|t| {
                let effect_ok = t
                    .effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "NoSchedule");
                let key_ok = t
                    .key
                    .as_deref()
                    .is_none_or(|k| k.is_empty() || k == TAINT_NODE_MEMORY_PRESSURE);
                let op_ok = match t.operator.as_deref() {
                    None | Some("") | Some("Equal") => t.value.as_deref().unwrap_or("").is_empty(),
                    Some("Exists") => true,
                    Some(_) => false,
                };
                effect_ok && key_ok && op_ok
            })
        })
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

impl Manager {
    /// A manager on the real clock. Its `containerfs.*` thresholds are
    /// derived from the configured disk layout.
    pub fn new(
        config: Config,
        summary: Arc<dyn SummaryProvider>,
        killer: Arc<dyn PodKiller>,
    ) -> Self {
        Self::with_clock(config, summary, killer, Arc::new(RealClock))
    }

    /// As [`Manager::new`] on `clock` (grace and transition periods are
    /// measured on it).
    pub fn with_clock(
        mut config: Config,
        summary: Arc<dyn SummaryProvider>,
        killer: Arc<dyn PodKiller>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        config.thresholds = update_container_fs_thresholds(
            &config.thresholds,
            config.disk_layout.dedicated_image_fs,
            config.disk_layout.split_container_image_fs,
        );
        Self {
            config,
            clock,
            summary,
            killer,
            container_gc: None,
            image_gc: None,
            events: None,
            notifiers: Mutex::new(Vec::new()),
            state: Mutex::new(State::default()),
            wake: tokio::sync::Notify::new(),
            woken: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Adds the node-level disk reclaim hooks (container and image garbage
    /// collection), tried before evicting pods for disk pressure.
    pub fn with_gc(mut self, containers: Arc<dyn ContainerGc>, images: Arc<dyn ImageGc>) -> Self {
        self.container_gc = Some(containers);
        self.image_gc = Some(images);
        self
    }

    /// Records events as upstream's manager does (`eviction_manager.go`):
    /// a Warning `Evicted` on each pod it evicts, with the eviction message
    /// and annotations (`evictPod`), and a Warning `EvictionThresholdMet`
    /// `"Attempting to reclaim <resource>"` on `node` (upstream's `nodeRef`,
    /// e.g. [`node_ref`](kubelet_container::events::node_ref)) each time a
    /// threshold is met and reclaim begins.
    pub fn with_event_recorder(
        mut self,
        events: Arc<dyn EventRecorder>,
        node: ObjectReference,
    ) -> Self {
        self.events = Some((events, node));
        self
    }

    /// Registers a threshold notifier, re-armed from the summary every
    /// [`NOTIFIER_REFRESH_INTERVAL`] and on the pass after each
    /// [`Manager::wake`].
    pub fn add_notifier(&self, n: Arc<dyn ThresholdNotifier>) {
        self.notifiers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(n);
    }

    /// The configuration in force (with derived containerfs thresholds).
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes [`Manager::run`] synchronize now instead of at the end of its
    /// period (what a kernel notification does).
    pub fn wake(&self) {
        self.woken.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The pressure conditions currently reported.
    pub fn node_conditions(&self) -> Vec<NodeCondition> {
        self.state().node_conditions.clone()
    }

    /// Upstream `IsUnderMemoryPressure`.
    pub fn is_under_memory_pressure(&self) -> bool {
        self.state()
            .node_conditions
            .contains(&NodeCondition::MemoryPressure)
    }

    /// Upstream `IsUnderDiskPressure`.
    pub fn is_under_disk_pressure(&self) -> bool {
        self.state()
            .node_conditions
            .contains(&NodeCondition::DiskPressure)
    }

    /// Upstream `IsUnderPIDPressure`.
    pub fn is_under_pid_pressure(&self) -> bool {
        self.state()
            .node_conditions
            .contains(&NodeCondition::PidPressure)
    }

    /// Upstream `Admit`: no pressure, or a critical pod: admitted. Only
    /// memory pressure: non-BestEffort pods admitted, BestEffort pods only if
    /// they tolerate `node.kubernetes.io/memory-pressure:NoSchedule`. Any
    /// other pressure: rejected, reason `Evicted`, message
    /// `The node had condition: [DiskPressure]. `.
    pub fn admit(&self, pod: &Pod) -> AdmitResult {
        let conditions = self.node_conditions();
        if conditions.is_empty() || kubelet_container::qos::is_critical_pod(pod) {
            return AdmitResult::yes();
        }
        if conditions == [NodeCondition::MemoryPressure] {
            if kubelet_container::qos::pod_qos_class(pod)
                != kubelet_container::qos::QosClass::BestEffort
            {
                return AdmitResult::yes();
            }
            if tolerates_memory_pressure(pod) {
                return AdmitResult::yes();
            }
        }
        let names: Vec<&str> = conditions.iter().map(|c| c.as_str()).collect();
        tracing::info!(pod = %pod_name(pod), conditions = ?names, "failed to admit pod to node");
        AdmitResult {
            admit: false,
            reason: REASON.into(),
            message: format!("The node had condition: [{}]. ", names.join(" ")),
        }
    }

    /// One pass of the control loop (upstream `synchronize`): observes,
    /// updates conditions, and evicts at most one of `active_pods`.
    pub async fn synchronize(&self, active_pods: &[Pod]) -> Result<Option<Eviction>, Error> {
        if self.config.thresholds.is_empty() && !self.config.local_storage_capacity_isolation {
            return Ok(None);
        }
        let summary = match self.summary.get(true).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "eviction manager: failed to get summary stats");
                return Ok(None);
            }
        };
        self.refresh_notifiers(&summary);
        let observations = make_observations(&summary);
        let now = self.clock.now();

        let (thresholds, observations) = {
            let mut st = self.state();
            let mut met = thresholds_met(&self.config.thresholds, &observations, false);
            if !st.thresholds_met.is_empty() {
                let unresolved = thresholds_met(&st.thresholds_met, &observations, true);
                met = merge_thresholds(met, unresolved);
            }
            // first observed at
            let first: Vec<(Threshold, Instant)> = met
                .iter()
                .map(|t| {
                    let at = st
                        .thresholds_first_observed_at
                        .iter()
                        .find(|(x, _)| x == t)
                        .map_or(now, |(_, at)| *at);
                    (t.clone(), at)
                })
                .collect();
            // conditions
            let mut last_at = st.node_conditions_last_observed_at.clone();
            for t in &met {
                last_at.insert(t.signal.node_condition(), now);
            }
            let mut conditions: Vec<NodeCondition> = last_at
                .iter()
                .filter(|(_, at)| {
                    now.saturating_duration_since(**at) < self.config.pressure_transition_period
                })
                .map(|(c, _)| *c)
                .collect();
            conditions.sort();
            // grace periods
            let active: Vec<Threshold> = first
                .iter()
                .filter(|(t, at)| {
                    let waited = now.saturating_duration_since(*at);
                    if waited < t.grace_period {
                        tracing::debug!(threshold = %t, ?waited, "eviction manager: eviction criteria not yet met");
                        false
                    } else {
                        true
                    }
                })
                .map(|(t, _)| t.clone())
                .collect();
            if conditions != st.node_conditions {
                tracing::info!(
                    ?conditions,
                    "eviction manager: node pressure conditions changed"
                );
            }
            st.node_conditions = conditions;
            st.thresholds_first_observed_at = first;
            st.node_conditions_last_observed_at = last_at;
            st.thresholds_met = active.clone();
            // only thresholds whose stats changed since the last sync
            let updated: Vec<Threshold> = active
                .into_iter()
                .filter(|t| {
                    let Some(o) = observations.get(&t.signal) else {
                        return false;
                    };
                    // upstream `observed.time.After(last.time)`: wall-clock
                    // stats times (see `kubelet_container::stats`)
                    match (&o.time, st.last_observations.get(&t.signal)) {
                        (None, _) | (_, None) => true,
                        (Some(now_t), Some(last)) => last.time.as_ref().is_none_or(|l| now_t > l),
                    }
                })
                .collect();
            st.last_observations = observations.clone();
            (updated, observations)
        };

        let stats: HashMap<&str, &PodStats> = summary
            .pods
            .iter()
            .map(|p| (p.pod_ref.uid.as_str(), p))
            .collect();
        if self.config.local_storage_capacity_isolation
            && let Some(ev) = self.local_storage_eviction(active_pods, &stats).await
        {
            return Ok(Some(ev));
        }
        if thresholds.is_empty() {
            return Ok(None);
        }
        let mut thresholds = thresholds;
        thresholds.sort_by_key(|t| !t.signal.is_memory());
        let to_reclaim = thresholds[0].clone();
        let resource = to_reclaim.signal.resource();
        tracing::warn!(
            reason = "EvictionThresholdMet",
            resource = %resource,
            "eviction manager: attempting to reclaim {resource}"
        );
        if let Some((events, node)) = &self.events {
            events.event(
                node,
                EventType::Warning,
                reason::EVICTION_THRESHOLD_MET,
                format!("Attempting to reclaim {resource}"),
            );
        }
        if self.reclaim_node_level_resources(to_reclaim.signal).await {
            tracing::info!(%resource, "eviction manager: able to reduce resource pressure without evicting pods");
            return Ok(None);
        }
        if active_pods.is_empty() {
            tracing::error!(
                "eviction manager: eviction thresholds have been met, but no pods are active to evict"
            );
            return Ok(None);
        }
        let mut ranked: Vec<&Pod> = active_pods.iter().collect();
        rank(
            &mut ranked,
            &stats,
            &rank_func(to_reclaim.signal, self.config.disk_layout),
        );
        for pod in ranked {
            let grace = if to_reclaim.is_hard() {
                self.config.hard_eviction_grace_period_seconds
            } else {
                let max = self.config.max_pod_grace_period_seconds;
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .map_or(max, |g| g.min(max))
            };
            let (message, annotations) = eviction_message(
                resource,
                pod,
                stats
                    .get(pod.metadata.uid.as_deref().unwrap_or_default())
                    .copied(),
                &thresholds,
                &observations,
            );
            let ev = Eviction {
                pod: pod.clone(),
                grace_period_seconds: grace,
                signal: Some(to_reclaim.signal),
                status: EvictedStatus {
                    reason: REASON.into(),
                    message,
                    annotations,
                },
            };
            if self.evict(&ev).await {
                return Ok(Some(ev));
            }
        }
        tracing::info!("eviction manager: unable to evict any pods from the node");
        Ok(None)
    }

    fn refresh_notifiers(&self, summary: &Summary) {
        let now = self.clock.now();
        // After a wake-up, re-arm at once: the kernel fires on *usage*, and
        // if page cache (inactive_file) grew rather than the working set,
        // this pass evicts nothing and the old threshold is already behind
        // us. Upstream waits up to 10 s here; the 10 s loop would then be
        // the next chance.
        let woken = self.woken.swap(false, std::sync::atomic::Ordering::SeqCst);
        {
            let mut st = self.state();
            if !woken
                && st
                    .notifiers_updated_at
                    .is_some_and(|t| now.saturating_duration_since(t) <= NOTIFIER_REFRESH_INTERVAL)
            {
                return;
            }
            st.notifiers_updated_at = Some(now);
        }
        let notifiers = self
            .notifiers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for n in notifiers {
            if let Err(e) = n.update_threshold(summary) {
                tracing::info!(notifier = n.description(), error = %e, "eviction manager: failed to update notifier");
            }
        }
    }

    async fn evict(&self, ev: &Eviction) -> bool {
        if kubelet_container::qos::is_critical_pod(&ev.pod) {
            tracing::error!(pod = %pod_name(&ev.pod), "eviction manager: cannot evict a critical pod");
            return false;
        }
        tracing::warn!(pod = %pod_name(&ev.pod), reason = REASON, message = %ev.status.message, grace = ev.grace_period_seconds, "evicting pod");
        // Upstream records the event before the (blocking) kill.
        if let Some((events, _)) = &self.events {
            events.annotated_event(
                &pod_ref(&ev.pod),
                &ev.status.annotations,
                EventType::Warning,
                reason::EVICTED,
                ev.status.message.clone(),
            );
        }
        match self.killer.kill_pod(ev).await {
            Ok(()) => {
                tracing::info!(pod = %pod_name(&ev.pod), "eviction manager: pod is evicted successfully")
            }
            Err(e) => {
                tracing::error!(pod = %pod_name(&ev.pod), error = %e, "eviction manager: pod failed to evict")
            }
        }
        true
    }

    async fn reclaim_node_level_resources(&self, signal: Signal) -> bool {
        if signal.resource() == Resource::Memory || signal == Signal::PidAvailable {
            return false;
        }
        let layout = self.config.disk_layout;
        let image_side = matches!(signal, Signal::ImageFsAvailable | Signal::ImageFsInodesFree);
        let container_side = matches!(
            signal,
            Signal::ContainerFsAvailable | Signal::ContainerFsInodesFree
        );
        let (containers, images) =
            match (layout.dedicated_image_fs, layout.split_container_image_fs) {
                (true, false) => (image_side || container_side, image_side || container_side),
                (true, true) => (!image_side, image_side),
                _ => (true, true),
            };
        let mut ran = false;
        if containers && let Some(gc) = &self.container_gc {
            ran = true;
            if let Err(e) = gc.delete_all_unused_containers().await {
                tracing::info!(error = %e, "eviction manager: unexpected error when attempting to reduce resource pressure");
            }
        }
        if images && let Some(gc) = &self.image_gc {
            ran = true;
            if let Err(e) = gc.delete_unused_images().await {
                tracing::info!(error = %e, "eviction manager: unexpected error when attempting to reduce resource pressure");
            }
        }
        if !ran {
            return false;
        }
        match self.summary.get(true).await {
            Ok(s) => {
                thresholds_met(&self.config.thresholds, &make_observations(&s), true).is_empty()
            }
            Err(e) => {
                tracing::error!(error = %e, "eviction manager: failed to get summary stats after resource reclaim");
                false
            }
        }
    }

    async fn local_storage_eviction(
        &self,
        pods: &[Pod],
        stats: &HashMap<&str, &PodStats>,
    ) -> Option<Eviction> {
        let grace = self.config.hard_eviction_grace_period_seconds;
        for pod in pods {
            let Some(st) = stats.get(pod.metadata.uid.as_deref().unwrap_or_default()) else {
                continue;
            };
            let Some(message) = local_storage_violation(pod, st, self.config.disk_layout) else {
                continue;
            };
            let ev = Eviction {
                pod: pod.clone(),
                grace_period_seconds: grace,
                signal: None,
                status: EvictedStatus {
                    reason: REASON.into(),
                    message,
                    annotations: BTreeMap::new(),
                },
            };
            if self.evict(&ev).await {
                return Some(ev);
            }
        }
        None
    }

    /// Runs the control loop until `shutdown` resolves (upstream `Start`):
    /// synchronize every `monitoring_interval` or as soon as
    /// [`Manager::wake`] is called; after an eviction, wait up to 30 s
    /// (polling every second) for `pod_cleaned_up` before the next pass.
    pub async fn run<P, C, S>(self: Arc<Self>, active_pods: P, pod_cleaned_up: C, shutdown: S)
    where
        P: Fn() -> Vec<Pod> + Send + Sync,
        C: Fn(&Pod) -> bool + Send + Sync,
        S: Future<Output = ()> + Send,
    {
        tokio::pin!(shutdown);
        loop {
            let pods = active_pods();
            match self.synchronize(&pods).await {
                Ok(Some(ev)) => {
                    tracing::info!(pod = %pod_name(&ev.pod), "eviction manager: pods evicted, waiting for pod to be cleaned up");
                    let wait = async {
                        let deadline = tokio::time::Instant::now() + POD_CLEANUP_TIMEOUT;
                        loop {
                            tokio::time::sleep(POD_CLEANUP_POLL_FREQ).await;
                            if pod_cleaned_up(&ev.pod) {
                                tracing::info!(pod = %pod_name(&ev.pod), "eviction manager: pods successfully cleaned up");
                                return;
                            }
                            if tokio::time::Instant::now() >= deadline {
                                tracing::info!(pod = %pod_name(&ev.pod), "eviction manager: timed out waiting for pods to be cleaned up");
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        () = wait => {}
                        () = &mut shutdown => return,
                    }
                }
                other => {
                    if let Err(e) = other {
                        tracing::error!(error = %e, "eviction manager: failed to synchronize");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(self.config.monitoring_interval) => {}
                        () = self.wake.notified() => {
                            tracing::debug!("eviction manager: woken by a threshold notification");
                        }
                        () = &mut shutdown => return,
                    }
                }
            }
        }
    }
}

fn quantity_of(
    list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    name: &str,
) -> Option<(i64, String)> {
    let q = list?.get(name)?;
    let v = kubelet_container::quantity::value(&q.0).ok()?;
    Some((v, q.0.clone()))
}

/// Upstream's local storage checks (`emptyDirLimitEviction`,
/// `podEphemeralStorageLimitEviction`, `containerEphemeralStorageLimitEviction`):
/// the eviction message when `pod` is over one of its limits.
fn local_storage_violation(pod: &Pod, st: &PodStats, layout: DiskLayout) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    for v in spec.volumes.iter().flatten() {
        let Some(size) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) else {
            continue;
        };
        let Ok(limit) = kubelet_container::quantity::value(&size.0) else {
            continue;
        };
        let used = st
            .volume_stats
            .iter()
            .find(|s| s.name == v.name)
            .and_then(|s| s.fs.used_bytes);
        if let Some(used) = used
            && limit > 0
            && i128::from(used) > i128::from(limit)
        {
            return Some(format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                v.name, size.0
            ));
        }
    }
    // pod limit: sum of container limits when every container... upstream PodLimits
    let mut pod_limit: Option<i64> = None;
    for c in &spec.containers {
        if let Some((l, _)) = quantity_of(
            c.resources.as_ref().and_then(|r| r.limits.as_ref()),
            "ephemeral-storage",
        ) {
            pod_limit = Some(pod_limit.unwrap_or(0).saturating_add(l));
        }
    }
    if let Some(limit) = pod_limit {
        let used = st
            .ephemeral_storage
            .as_ref()
            .and_then(|e| e.used_bytes)
            .unwrap_or(0);
        if i128::from(used) > i128::from(limit) {
            return Some(format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                format_binary(limit)
            ));
        }
    }
    for cs in &st.containers {
        let Some(c) = spec.containers.iter().find(|c| c.name == cs.name) else {
            continue;
        };
        let Some((limit, text)) = quantity_of(
            c.resources.as_ref().and_then(|r| r.limits.as_ref()),
            "ephemeral-storage",
        ) else {
            continue;
        };
        if limit == 0 {
            continue;
        }
        let mut used = i128::from(cs.logs.as_ref().and_then(|l| l.used_bytes).unwrap_or(0));
        if !layout.dedicated_image_fs {
            used += i128::from(cs.rootfs.as_ref().and_then(|r| r.used_bytes).unwrap_or(0));
        }
        if used > i128::from(limit) {
            return Some(format!(
                "Container {} exceeded its local ephemeral storage limit {:?}. ",
                cs.name, text
            ));
        }
    }
    None
}

/// Upstream `evictionMessage`: the message and event annotations of an
/// eviction for `resource`.
pub fn eviction_message(
    resource: Resource,
    pod: &Pod,
    stats: Option<&PodStats>,
    thresholds: &[Threshold],
    observations: &Observations,
) -> (String, BTreeMap<String, String>) {
    let mut annotations = BTreeMap::new();
    let mut message = format!("The node was low on resource: {resource}. ");
    if let Some((t, o)) = thresholds
        .iter()
        .filter(|t| t.signal.resource() == resource)
        .find_map(|t| observations.get(&t.signal).map(|o| (t, o)))
    {
        message += &format!(
            "Threshold quantity: {}, available: {}. ",
            format_binary(t.value.quantity(o.capacity)),
            format_quantity(o.available, resource)
        );
    }
    let Some(stats) = stats else {
        return (message, annotations);
    };
    let mut offending = Vec::new();
    let mut usages = Vec::new();
    let spec_containers = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for cs in &stats.containers {
        let Some(c) = spec_containers.iter().find(|c| c.name == cs.name) else {
            continue;
        };
        let usage = match resource {
            Resource::Memory => cs
                .memory_working_set_bytes()
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            Resource::EphemeralStorage => match (
                cs.rootfs.as_ref().and_then(|r| r.used_bytes),
                cs.logs.as_ref().and_then(|l| l.used_bytes),
            ) {
                (Some(r), Some(l)) => Some(i64::try_from(r.saturating_add(l)).unwrap_or(i64::MAX)),
                _ => None,
            },
            _ => None,
        };
        let (req, req_text) = quantity_of(
            c.resources.as_ref().and_then(|r| r.requests.as_ref()),
            resource.as_str(),
        )
        .unwrap_or((0, "0".into()));
        if let Some(u) = usage
            && u > req
        {
            let u = format_binary(u);
            message += &format!(
                "Container {} was using {u}, request is {req_text}, has larger consumption of {resource}. ",
                c.name
            );
            offending.push(c.name.clone());
            usages.push(u);
        }
    }
    annotations.insert(OFFENDING_CONTAINERS_KEY.into(), offending.join(","));
    annotations.insert(OFFENDING_CONTAINERS_USAGE_KEY.into(), usages.join(","));
    annotations.insert(STARVED_RESOURCE_KEY.into(), resource.as_str().into());
    (message, annotations)
}

/// The fs stats kinds a disk signal measures (re-exported for callers that
/// build their own rankings).
pub fn measured_fs_stats(signal: Signal, layout: DiskLayout) -> Vec<FsStatsType> {
    match rank_func(signal, layout) {
        RankFunc::Disk(m, _) => m,
        _ => Vec::new(),
    }
}

/// A pod's disk usage for `signal` under `layout` (bytes or inodes).
pub fn pod_usage_for_signal(
    stats: &PodStats,
    pod: &Pod,
    signal: Signal,
    layout: DiskLayout,
) -> i64 {
    pod_disk_usage(
        stats,
        pod,
        &measured_fs_stats(signal, layout),
        signal.resource(),
    )
}

/// A [`PodKiller`] that records every eviction and succeeds: for tests.
#[derive(Debug, Default)]
pub struct RecordingKiller {
    evictions: Mutex<Vec<Eviction>>,
}

impl RecordingKiller {
    /// The evictions so far.
    pub fn evictions(&self) -> Vec<Eviction> {
        self.evictions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl PodKiller for RecordingKiller {
    async fn kill_pod(&self, eviction: &Eviction) -> Result<(), String> {
        self.evictions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(eviction.clone());
        Ok(())
    }
}
