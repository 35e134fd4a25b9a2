//! [`GenericPleg`]: pod lifecycle events by relisting (upstream
//! `pkg/kubelet/pleg/generic.go`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use kubelet_container::{ContainerState, PodStatus, RunningPod, RuntimeReader};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::{
    DEFAULT_MAX_CONCURRENT_INSPECTIONS, EVENT_CHANNEL_CAPACITY, Error, EventSink, PlegMetrics,
    PodCache, PodLifecycleEvent, PodLifecycleEventGenerator, PodLifecycleEventType, RelistTiming,
    lock,
};

/// Settings of a [`GenericPleg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlegConfig {
    /// Relist period and health threshold (1 s and 3 min).
    pub relist: RelistTiming,
    /// How many changed pods one relist inspects at once (16). Upstream
    /// inspects them one after the other.
    pub max_concurrent_inspections: usize,
    /// Capacity of the event channel (upstream: 1000).
    pub channel_capacity: usize,
}

impl Default for PlegConfig {
    fn default() -> Self {
        Self {
            relist: RelistTiming::default(),
            max_concurrent_inspections: DEFAULT_MAX_CONCURRENT_INSPECTIONS,
            channel_capacity: EVENT_CHANNEL_CAPACITY,
        }
    }
}

/// A container's state as the PLEG compares it (upstream
/// `plegContainerState`): `created` counts as unknown, and a container
/// missing from a relist is non-existent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PlegState {
    Running,
    Exited,
    Unknown,
    NonExistent,
}

impl From<ContainerState> for PlegState {
    fn from(s: ContainerState) -> Self {
        match s {
            // The kubelet does not use "created" (upstream convertState).
            ContainerState::Created | ContainerState::Unknown => PlegState::Unknown,
            ContainerState::Running => PlegState::Running,
            ContainerState::Exited => PlegState::Exited,
        }
    }
}

/// Upstream `generateEvents`: the transition table.
pub(crate) fn generate_events(
    uid: &str,
    cid: &str,
    old: PlegState,
    new: PlegState,
    out: &mut Vec<PodLifecycleEvent>,
) {
    use PodLifecycleEventType::*;
    if old == new {
        return;
    }
    tracing::trace!(pod = uid, container = cid, ?old, ?new, "GenericPLEG");
    let mut push = |kind| out.push(PodLifecycleEvent::new(uid, kind, cid));
    match new {
        PlegState::Running => push(ContainerStarted),
        PlegState::Exited => push(ContainerDied),
        PlegState::Unknown => push(ContainerChanged),
        PlegState::NonExistent => {
            // An exited container was already reported dead.
            if old != PlegState::Exited {
                push(ContainerDied);
            }
            push(ContainerRemoved);
        }
    }
}

/// The state of container or sandbox `id` in `pod` (upstream
/// `getContainerState`; sandboxes count as containers: ready is running,
/// not ready is exited).
fn state_in(pod: Option<&RunningPod>, id: &str) -> PlegState {
    let Some(pod) = pod else {
        return PlegState::NonExistent;
    };
    if let Some(c) = pod.containers.iter().find(|c| c.id == id) {
        return c.state.into();
    }
    if let Some(s) = pod.sandboxes.iter().find(|s| s.id == id) {
        return sandbox_state(s.ready);
    }
    PlegState::NonExistent
}

fn sandbox_state(ready: bool) -> PlegState {
    if ready {
        PlegState::Running
    } else {
        PlegState::Exited
    }
}

/// The containers and sandboxes of a pod with their PLEG states.
fn ids_of(pod: Option<&RunningPod>) -> impl Iterator<Item = (&str, PlegState)> {
    pod.into_iter().flat_map(|p| {
        p.containers
            .iter()
            .map(|c| (c.id.as_str(), PlegState::from(c.state)))
            .chain(
                p.sandboxes
                    .iter()
                    .map(|s| (s.id.as_str(), sandbox_state(s.ready))),
            )
    })
}

/// Every event between two relists of one pod (upstream
/// `getContainersFromPods` + `computeEvents`), without allocating when
/// nothing changed.
pub(crate) fn compute_pod_events(
    uid: &str,
    old: Option<&RunningPod>,
    new: Option<&RunningPod>,
) -> Vec<PodLifecycleEvent> {
    let mut out = Vec::new();
    for (id, old_state) in ids_of(old) {
        generate_events(uid, id, old_state, state_in(new, id), &mut out);
    }
    for (id, new_state) in ids_of(new) {
        if state_in(old, id) == PlegState::NonExistent {
            generate_events(uid, id, PlegState::NonExistent, new_state, &mut out);
        }
    }
    out
}

#[derive(Debug, Default)]
struct PodRecord {
    old: Option<RunningPod>,
    current: Option<RunningPod>,
}

#[derive(Debug, Default)]
struct RelistState {
    records: HashMap<String, PodRecord>,
    /// Pods whose inspection failed: inspected again on the next relist
    /// (upstream `podsToReinspect`).
    to_reinspect: HashSet<String>,
}

impl RelistState {
    /// Upstream `podRecords.setCurrent`.
    fn set_current(&mut self, pods: Vec<RunningPod>) {
        for r in self.records.values_mut() {
            r.current = None;
        }
        for pod in pods {
            match self.records.get_mut(&pod.uid) {
                Some(r) => r.current = Some(pod),
                None => {
                    self.records.insert(
                        pod.uid.clone(),
                        PodRecord {
                            old: None,
                            current: Some(pod),
                        },
                    );
                }
            }
        }
    }

    /// Upstream `podRecords.update`.
    fn update(&mut self, uid: &str) {
        let Some(r) = self.records.get_mut(uid) else {
            return;
        };
        match r.current.take() {
            Some(current) => r.old = Some(current),
            None => {
                self.records.remove(uid);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    relist_time: Option<Instant>,
    last_start: Option<Instant>,
    last_duration: Option<Duration>,
    last_interval: Option<Duration>,
    relists: u64,
}

struct Inner {
    runtime: Arc<dyn RuntimeReader>,
    cache: Arc<PodCache>,
    sink: Arc<EventSink>,
    timing: Mutex<RelistTiming>,
    max_inspections: usize,
    state: tokio::sync::Mutex<RelistState>,
    stats: Mutex<Stats>,
    running: Mutex<Option<watch::Sender<bool>>>,
}

/// A PLEG that relists the runtime periodically (upstream `GenericPLEG`,
/// `pkg/kubelet/pleg/generic.go`).
///
/// Each relist makes one [`RuntimeReader::get_pods`] call (one `ListPodSandbox`
/// and one `ListContainers`, exited containers and sandboxes included),
/// compares every pod's containers and sandboxes with the previous relist by
/// upstream's transition table, inspects the pods that changed with
/// [`RuntimeReader::get_pod_status`] — up to
/// [`PlegConfig::max_concurrent_inspections`] at once, where upstream goes
/// one by one — stores the statuses in the [`PodCache`], sends the events
/// (never `ContainerChanged`, as upstream), and finally sets the cache's
/// global timestamp to the relist's start. A pod whose inspection fails
/// keeps its old record, sends no events, and is inspected again on the
/// next relist.
///
/// As upstream notes, a container created, exited and removed within one
/// period is never seen; [`EventedPleg`](crate::EventedPleg) does not have
/// that blind spot.
///
/// Clones share the same PLEG.
#[derive(Clone)]
pub struct GenericPleg {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GenericPleg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenericPleg")
            .field("timing", &self.timing())
            .field("max_inspections", &self.inner.max_inspections)
            .finish_non_exhaustive()
    }
}

impl GenericPleg {
    /// A PLEG relisting `runtime` into `cache`. Nothing runs until
    /// [`start`](PodLifecycleEventGenerator::start).
    pub fn new(runtime: Arc<dyn RuntimeReader>, cache: Arc<PodCache>, config: PlegConfig) -> Self {
        let sink = EventSink::new(config.channel_capacity);
        Self::with_sink(runtime, cache, config, sink)
    }

    pub(crate) fn with_sink(
        runtime: Arc<dyn RuntimeReader>,
        cache: Arc<PodCache>,
        config: PlegConfig,
        sink: Arc<EventSink>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                runtime,
                cache,
                sink,
                timing: Mutex::new(config.relist),
                max_inspections: config.max_concurrent_inspections.max(1),
                state: tokio::sync::Mutex::default(),
                stats: Mutex::default(),
                running: Mutex::default(),
            }),
        }
    }

    /// The relist period and threshold in force.
    pub fn timing(&self) -> RelistTiming {
        *lock(&self.inner.timing)
    }

    /// Changes the relist period and threshold (upstream `Update`); a
    /// running loop uses the new period after its current wait.
    pub fn update(&self, timing: RelistTiming) {
        *lock(&self.inner.timing) = timing;
    }

    /// True while the relist loop runs.
    pub fn is_running(&self) -> bool {
        lock(&self.inner.running).is_some()
    }

    /// The start of the last successful relist.
    pub fn relist_time(&self) -> Option<Instant> {
        lock(&self.inner.stats).relist_time
    }

    /// The pods whose inspection failed in the last relist, to be inspected
    /// again on the next.
    pub async fn pods_to_reinspect(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .state
            .lock()
            .await
            .to_reinspect
            .iter()
            .cloned()
            .collect();
        v.sort();
        v
    }

    pub(crate) fn sink(&self) -> &Arc<EventSink> {
        &self.inner.sink
    }
}

impl Inner {
    async fn relist(&self) {
        let mut state = self.state.lock().await;
        tracing::trace!("GenericPLEG: relisting");
        let timestamp = Instant::now();
        {
            let mut stats = lock(&self.stats);
            if let Some(last) = stats.last_start {
                stats.last_interval = Some(timestamp.saturating_duration_since(last));
            }
            stats.last_start = Some(timestamp);
        }

        let pods = match self.runtime.get_pods(true).await {
            Ok(pods) => pods,
            Err(e) => {
                tracing::error!(error = %e, "GenericPLEG: unable to retrieve pods");
                return;
            }
        };
        lock(&self.stats).relist_time = Some(timestamp);
        state.set_current(pods);

        // Only the pods that changed (or failed to inspect) are cloned out.
        let mut jobs: Vec<(String, Option<RunningPod>, Vec<PodLifecycleEvent>)> = Vec::new();
        for (uid, record) in &state.records {
            let events = compute_pod_events(uid, record.old.as_ref(), record.current.as_ref());
            if events.is_empty() && !state.to_reinspect.contains(uid) {
                continue;
            }
            jobs.push((uid.clone(), record.current.clone(), events));
        }
        jobs.sort_unstable_by(|a, b| a.0.cmp(&b.0));

        let inspections: Vec<_> = jobs
            .into_iter()
            .map(|(uid, pod, events)| async move {
                let result = self.update_cache(&uid, pod.as_ref()).await;
                (uid, events, result)
            })
            .collect();
        let results: Vec<(String, Vec<PodLifecycleEvent>, Result<bool, Error>)> =
            futures::stream::iter(inspections)
                .buffered(self.max_inspections)
                .collect()
                .await;

        let mut needs_reinspection = HashSet::new();
        for (uid, events, result) in results {
            match result {
                Err(e) => {
                    tracing::debug!(pod = %uid, error = %e, "PLEG: ignoring events for pod");
                    needs_reinspection.insert(uid);
                    continue;
                }
                // The cache holds newer data (from a CRI event): upstream
                // leaves the record to be compared again.
                Ok(false) if self.cache.rejects_older() => continue,
                Ok(_) => {}
            }
            state.update(&uid);
            for event in events {
                if event.kind == PodLifecycleEventType::ContainerChanged {
                    continue;
                }
                if event.kind == PodLifecycleEventType::ContainerDied
                    && let Ok(status) = self.cache.get(&uid)
                    && let Some(c) = status
                        .container_statuses
                        .iter()
                        .find(|c| c.id == event.data)
                {
                    tracing::debug!(pod = %uid, container = %event.data, exit_code = c.exit_code,
                        "GenericPLEG: container finished");
                }
                self.sink.send(event);
            }
        }

        // After every Set, so waiters see the statuses of this relist.
        self.cache.update_time(timestamp);
        state.to_reinspect = needs_reinspection;
        let mut stats = lock(&self.stats);
        stats.last_duration = Some(timestamp.elapsed());
        stats.relists += 1;
    }

    /// Upstream `updateCache`: inspects the pod and stores its status (or
    /// the error). Returns whether the cache took it.
    async fn update_cache(&self, uid: &str, pod: Option<&RunningPod>) -> Result<bool, Error> {
        let Some(pod) = pod else {
            // Gone from the relist: nothing of it is left in the runtime.
            tracing::debug!(pod = uid, "PLEG: delete status for pod");
            self.cache.delete(uid);
            return Ok(true);
        };
        let timestamp = Instant::now();
        match self
            .runtime
            .get_pod_status(&pod.uid, &pod.name, &pod.namespace)
            .await
        {
            Ok(mut status) => {
                tracing::trace!(pod = %format_args!("{}/{}", pod.namespace, pod.name), "PLEG: write status");
                status.ips = preserved_ips(&self.cache, uid, &status);
                Ok(self.cache.set(uid, Ok(Arc::new(status)), timestamp))
            }
            Err(e) => {
                let name = if pod.name.is_empty() {
                    uid.to_owned()
                } else {
                    format!("{}/{}", pod.namespace, pod.name)
                };
                tracing::error!(pod = %name, error = %e, "PLEG: write status");
                self.cache.set(uid, Err(e.clone()), timestamp);
                Err(Error::Inspect {
                    pod: name,
                    source: e,
                })
            }
        }
    }

    fn healthy(&self) -> Result<(), String> {
        let Some(relist_time) = lock(&self.stats).relist_time else {
            return Err("pleg has yet to be successful".into());
        };
        let elapsed = relist_time.elapsed();
        let threshold = lock(&self.timing).threshold;
        if elapsed > threshold {
            return Err(format!(
                "pleg was last seen active {} ago; threshold is {}",
                go_duration(elapsed),
                go_duration(threshold)
            ));
        }
        Ok(())
    }
}

/// Upstream `getPodIPs`: a status without IPs and without a ready sandbox
/// keeps the IPs cached before (a dead pod keeps its IP in the API).
pub(crate) fn preserved_ips(cache: &PodCache, uid: &str, status: &PodStatus) -> Vec<String> {
    if !status.ips.is_empty() || status.has_ready_sandbox() {
        return status.ips.clone();
    }
    match cache.get(uid) {
        Ok(old) => old.ips.clone(),
        Err(_) => Vec::new(),
    }
}

/// A duration as Go prints it (`3m0s`, `1.5s`, `250ms`).
pub(crate) fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let fraction = |value: u128, unit: u128, suffix: &str| {
        let whole = value / unit;
        let frac = value % unit;
        let mut s = whole.to_string();
        if frac != 0 {
            let width = unit.ilog10() as usize;
            let digits = format!("{frac:0width$}");
            s.push('.');
            s.push_str(digits.trim_end_matches('0'));
        }
        s.push_str(suffix);
        s
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return fraction(nanos, 1_000, "µs");
    }
    if nanos < 1_000_000_000 {
        return fraction(nanos, 1_000_000, "ms");
    }
    let total_secs = d.as_secs();
    let (h, m) = (total_secs / 3600, (total_secs / 60) % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let secs_nanos = u128::from(total_secs % 60) * 1_000_000_000 + u128::from(d.subsec_nanos());
    out.push_str(&fraction(secs_nanos, 1_000_000_000, "s"));
    out
}

/// The relist loop (upstream `wait.Until(g.Relist, period, stopCh)`): it
/// holds only a weak reference, so dropping every handle stops it too.
async fn relist_loop(inner: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        let Some(this) = inner.upgrade() else { return };
        this.relist().await;
        let period = lock(&this.timing).period;
        drop(this);
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
    }
}

#[async_trait]
impl PodLifecycleEventGenerator for GenericPleg {
    fn start(&self) -> Result<(), Error> {
        let handle =
            tokio::runtime::Handle::try_current().map_err(|e| Error::NoRuntime(e.to_string()))?;
        let mut running = lock(&self.inner.running);
        if running.is_some() {
            return Ok(());
        }
        let (tx, rx) = watch::channel(false);
        *running = Some(tx);
        handle.spawn(relist_loop(Arc::downgrade(&self.inner), rx));
        Ok(())
    }

    fn stop(&self) {
        if let Some(tx) = lock(&self.inner.running).take() {
            let _ = tx.send(true);
        }
    }

    fn watch(&self) -> Option<mpsc::Receiver<PodLifecycleEvent>> {
        self.inner.sink.take_receiver()
    }

    fn healthy(&self) -> Result<(), String> {
        self.inner.healthy()
    }

    async fn relist(&self) {
        self.inner.relist().await;
    }

    fn relist_duration(&self) -> Option<Duration> {
        lock(&self.inner.stats).last_duration
    }

    fn relist_interval(&self) -> Option<Duration> {
        lock(&self.inner.stats).last_interval
    }

    fn update_cache(&self) -> bool {
        true
    }

    fn metrics(&self) -> PlegMetrics {
        let stats = lock(&self.inner.stats);
        PlegMetrics {
            relists: stats.relists,
            last_relist_duration: stats.last_duration,
            last_relist_interval: stats.last_interval,
            discarded_events: self.inner.sink.discarded(),
            last_relist: stats.relist_time,
            ..PlegMetrics::default()
        }
    }
}

#[cfg(test)]
mod tests;
