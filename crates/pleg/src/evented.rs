//! [`EventedPleg`]: pod lifecycle events from CRI container events
//! (upstream `pkg/kubelet/pleg/evented.go`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use kubelet_container::{ContainerStatus, PodStatus, RuntimeReader};
use kubelet_cri_client::RuntimeService;
use kubelet_cri_client::api::{self, ContainerEventResponse, ContainerEventType};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::generic::{GenericPleg, PlegConfig, preserved_ips};
use crate::{
    EVENTED_MAX_STREAM_RETRIES, Error, EventSink, GLOBAL_CACHE_UPDATE_PERIOD, PlegMetrics,
    PodCache, PodLifecycleEvent, PodLifecycleEventGenerator, PodLifecycleEventType, RelistTiming,
    lock,
};

/// Settings of an [`EventedPleg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventedConfig {
    /// The safety-net generic PLEG while events flow (its relist timing
    /// defaults to 300 s / 10 min, upstream's evented relist duration).
    pub generic: PlegConfig,
    /// The generic PLEG's timing after falling back (1 s / 3 min).
    pub fallback: RelistTiming,
    /// Consecutive stream failures before falling back (5).
    pub max_stream_retries: u32,
    /// How often the cache's global timestamp is refreshed while events
    /// flow, so that a pod worker waiting on an event that was lost is
    /// released (2 s).
    pub global_cache_update_period: Duration,
}

impl Default for EventedConfig {
    fn default() -> Self {
        Self {
            generic: PlegConfig {
                relist: RelistTiming::evented(),
                ..PlegConfig::default()
            },
            fallback: RelistTiming::default(),
            max_stream_retries: EVENTED_MAX_STREAM_RETRIES,
            global_cache_update_period: GLOBAL_CACHE_UPDATE_PERIOD,
        }
    }
}

struct Inner {
    generic: GenericPleg,
    /// Builds container statuses from event payloads.
    runtime: Arc<dyn RuntimeReader>,
    runtime_service: Arc<dyn RuntimeService>,
    cache: Arc<PodCache>,
    config: EventedConfig,
    /// Events are being consumed (upstream `isEventedPLEGInUse`).
    in_use: AtomicBool,
    /// Gave up on events; the generic PLEG relists at the fallback period.
    fell_back: AtomicBool,
    events: AtomicU64,
    stream_errors: AtomicU64,
    running: Mutex<Option<watch::Sender<bool>>>,
}

/// A PLEG driven by the runtime's container events (upstream `EventedPLEG`,
/// `pkg/kubelet/pleg/evented.go`).
///
/// It consumes CRI `GetContainerEvents` and stores each event's payload
/// (the sandbox status and container statuses) in the [`PodCache`], stamped
/// with the event's creation time, then sends: STARTED →
/// `ContainerStarted`, STOPPED → `ContainerDied`, DELETED →
/// `ContainerDied` + `ContainerRemoved`, CREATED → nothing. An event older
/// than the cached entry changes nothing and sends nothing. A container
/// exit thus reaches the pod worker in milliseconds; upstream's generic
/// PLEG takes up to its 1 s relist period, plus the relist.
///
/// Where we differ from upstream, deliberately:
///
/// - The payload is merged into the cached status (statuses replaced by ID)
///   instead of replacing it, so a runtime that sends only the changed
///   container (the fake) or a pod with an older sandbox keeps the rest; a
///   deleted container or sandbox is removed from the status, and the entry
///   is deleted only when nothing of the pod is left (upstream deletes it on
///   any sandbox deletion).
/// - Events without a sandbox status (containerd sends those once the
///   sandbox is gone) are attributed through the cache instead of dropped.
/// - Failures are counted consecutively: a stream that delivered events
///   resets the count (upstream never resets it).
///
/// As upstream, a [`GenericPleg`] sharing the cache and the event channel
/// relists every 300 s as a safety net, and is forced to relist after each
/// stream failure; after [`EventedConfig::max_stream_retries`] consecutive
/// failures, or at once when the runtime answers `Unimplemented` to
/// `GetContainerEvents` (containerd 1.6), the evented PLEG stops and the
/// generic one is restarted at 1 s with a 3 min threshold. While events
/// flow, the cache's global timestamp is refreshed every 2 s.
///
/// containerd 1.7 hands each event to one `GetContainerEvents` stream only
/// (its CRI plugin has one event channel that every stream reads), so run
/// one evented PLEG per containerd and no other event reader beside it.
///
/// Clones share the same PLEG.
#[derive(Clone)]
pub struct EventedPleg {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventedPleg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventedPleg")
            .field("generic", &self.inner.generic)
            .field("config", &self.inner.config)
            .field("in_use", &self.is_evented_in_use())
            .field("fell_back", &self.fell_back())
            .finish_non_exhaustive()
    }
}

impl EventedPleg {
    /// An evented PLEG reading `runtime_service`'s events, with a generic
    /// PLEG relisting `runtime`, both into `cache` (which from now on
    /// ignores data older than its entries, as upstream's cache does with
    /// the `EventedPLEG` gate). Nothing runs until
    /// [`start`](PodLifecycleEventGenerator::start).
    pub fn new(
        runtime: Arc<dyn RuntimeReader>,
        runtime_service: Arc<dyn RuntimeService>,
        cache: Arc<PodCache>,
        config: EventedConfig,
    ) -> Self {
        cache.set_reject_older(true);
        let sink = EventSink::new(config.generic.channel_capacity);
        let generic = GenericPleg::with_sink(runtime.clone(), cache.clone(), config.generic, sink);
        Self {
            inner: Arc::new(Inner {
                generic,
                runtime,
                runtime_service,
                cache,
                config,
                in_use: AtomicBool::new(false),
                fell_back: AtomicBool::new(false),
                events: AtomicU64::new(0),
                stream_errors: AtomicU64::new(0),
                running: Mutex::default(),
            }),
        }
    }

    /// The generic PLEG it runs beside (and falls back to).
    pub fn generic(&self) -> &GenericPleg {
        &self.inner.generic
    }

    /// True while container events are being consumed.
    pub fn is_evented_in_use(&self) -> bool {
        self.inner.in_use.load(Ordering::Acquire)
    }

    /// True once it gave up on events and relists at the fallback period.
    pub fn fell_back(&self) -> bool {
        self.inner.fell_back.load(Ordering::Acquire)
    }
}

/// Maps the runtime's wall-clock event times (nanoseconds since the epoch)
/// to tokio instants, by one offset taken when the stream opens: events
/// keep their order and their distance from relists, whatever the delay in
/// reading them. An instant after now is now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClockBase {
    instant: Instant,
    wall: SystemTime,
}

impl ClockBase {
    pub(crate) fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    pub(crate) fn instant_of(&self, unix_nanos: i64) -> Instant {
        let now = Instant::now();
        let Ok(nanos) = u64::try_from(unix_nanos) else {
            return now;
        };
        let at = UNIX_EPOCH + Duration::from_nanos(nanos);
        let mapped = match at.duration_since(self.wall) {
            Ok(after) => self.instant.checked_add(after),
            Err(before) => self.instant.checked_sub(before.duration()),
        };
        mapped.map_or(now, |m| m.min(now))
    }
}

fn pod_uid_of(sandbox: &api::PodSandboxStatus) -> Option<String> {
    sandbox
        .labels
        .get(kubelet_container::pod::POD_UID_LABEL)
        .filter(|u| !u.is_empty())
        .cloned()
        .or_else(|| {
            sandbox
                .metadata
                .as_ref()
                .map(|m| m.uid.clone())
                .filter(|u| !u.is_empty())
        })
}

/// The pod status after a CRI container event (upstream
/// `GeneratePodStatus`, `kuberuntime_manager.go`): the event's sandbox and
/// container statuses merged into `previous` by ID (a deleted container or
/// sandbox removed), newest first, with the IPs of the newest sandbox when
/// it is ready.
///
/// `convert` builds one container's status from the CRI's, as the runtime
/// does ([`RuntimeReader::container_status_from_cri`]).
pub fn pod_status_from_event(
    uid: &str,
    previous: Option<&PodStatus>,
    event: &ContainerEventResponse,
    convert: impl Fn(&api::ContainerStatus) -> ContainerStatus,
) -> PodStatus {
    let mut status = previous.cloned().unwrap_or_else(|| PodStatus {
        uid: uid.to_owned(),
        ..PodStatus::default()
    });
    if let Some(sandbox) = &event.pod_sandbox_status {
        if let Some(meta) = &sandbox.metadata {
            if status.name.is_empty() {
                status.name.clone_from(&meta.name);
            }
            if status.namespace.is_empty() {
                status.namespace.clone_from(&meta.namespace);
            }
        }
        match status
            .sandbox_statuses
            .iter_mut()
            .find(|s| s.id == sandbox.id)
        {
            Some(s) => *s = sandbox.clone(),
            None => status.sandbox_statuses.push(sandbox.clone()),
        }
    }
    for c in &event.containers_statuses {
        let c = convert(c);
        match status.container_statuses.iter_mut().find(|s| s.id == c.id) {
            Some(s) => *s = c,
            None => status.container_statuses.push(c),
        }
    }
    if event.container_event_type() == ContainerEventType::ContainerDeletedEvent {
        status
            .container_statuses
            .retain(|c| c.id != event.container_id);
        status
            .sandbox_statuses
            .retain(|s| s.id != event.container_id);
    }
    status
        .sandbox_statuses
        .sort_by_key(|s| std::cmp::Reverse(s.created_at));
    status
        .container_statuses
        .sort_by_key(|c| std::cmp::Reverse(c.created_at));
    status.ips = match status.sandbox_statuses.first() {
        Some(s) if s.state() == api::PodSandboxState::SandboxReady => s
            .network
            .as_ref()
            .map(|n| {
                std::iter::once(n.ip.clone())
                    .chain(n.additional_ips.iter().map(|p| p.ip.clone()))
                    .filter(|ip| !ip.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    status
}

impl Inner {
    /// Upstream `processCRIEvents` for one event.
    fn process(&self, event: &ContainerEventResponse, clock: &ClockBase) {
        use PodLifecycleEventType::*;
        self.events.fetch_add(1, Ordering::Relaxed);
        let kind = event.container_event_type();
        let with_sandbox = event
            .pod_sandbox_status
            .as_ref()
            .filter(|s| s.metadata.is_some());
        let uid = match with_sandbox.and_then(pod_uid_of) {
            Some(uid) => uid,
            // Upstream drops these; the cache may still know whose it is.
            None => match self.cache.find_pod_of(&event.container_id) {
                Some(uid) => uid,
                None => {
                    tracing::debug!(container = %event.container_id, ?kind,
                        "evented PLEG: event without sandbox status for an unknown container");
                    return;
                }
            },
        };
        let previous = self.cache.get(&uid).ok();
        let mut status = pod_status_from_event(&uid, previous.as_deref(), event, |c| {
            self.runtime.container_status_from_cri(c)
        });
        status.ips = preserved_ips(&self.cache, &uid, &status);
        let timestamp = clock.instant_of(event.created_at);
        tracing::trace!(pod = %uid, container = %event.container_id, ?kind, "evented PLEG: event");

        let send = if kind == ContainerEventType::ContainerDeletedEvent {
            if status.sandbox_statuses.is_empty() && status.container_statuses.is_empty() {
                self.cache.delete(&uid);
            } else {
                self.cache.set(&uid, Ok(Arc::new(status)), timestamp);
            }
            true
        } else {
            self.cache.set(&uid, Ok(Arc::new(status)), timestamp)
        };
        if !send {
            return;
        }
        let sink = self.generic.sink();
        let cid = event.container_id.as_str();
        match kind {
            ContainerEventType::ContainerStoppedEvent => {
                sink.send(PodLifecycleEvent::new(&uid, ContainerDied, cid));
            }
            ContainerEventType::ContainerStartedEvent => {
                sink.send(PodLifecycleEvent::new(&uid, ContainerStarted, cid));
            }
            ContainerEventType::ContainerDeletedEvent => {
                sink.send(PodLifecycleEvent::new(&uid, ContainerDied, cid));
                sink.send(PodLifecycleEvent::new(&uid, ContainerRemoved, cid));
            }
            // Only the cache needs the creation (as upstream).
            ContainerEventType::ContainerCreatedEvent => {}
        }
    }

    /// Stops consuming events and restarts the generic PLEG at the
    /// fallback timing (upstream, in `watchEventsChannel`).
    fn fall_back(&self) -> Result<(), Error> {
        self.in_use.store(false, Ordering::Release);
        self.fell_back.store(true, Ordering::Release);
        self.generic.stop();
        self.generic.update(self.config.fallback);
        self.generic.start()
    }
}

enum StreamEnd {
    Stopped,
    Failed(kubelet_cri_client::Error, bool),
    Ended,
}

/// Reads one stream until it fails, ends, or the PLEG stops. Holds the
/// PLEG only weakly between events.
async fn read_stream(
    weak: &Weak<Inner>,
    stop: &mut watch::Receiver<bool>,
    failures: &mut u32,
) -> StreamEnd {
    let opened = {
        let Some(this) = weak.upgrade() else {
            return StreamEnd::Stopped;
        };
        let service = this.runtime_service.clone();
        drop(this);
        tokio::select! {
            opened = service.get_container_events() => opened,
            _ = stop.changed() => return StreamEnd::Stopped,
        }
    };
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(e) => return StreamEnd::Failed(e, true),
    };
    let clock = ClockBase::now();
    // Changes made before the runtime registered the subscription have no
    // event: relist once it is open.
    match weak.upgrade() {
        Some(this) => this.generic.relist().await,
        None => return StreamEnd::Stopped,
    }
    let mut first = true;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = stop.changed() => return StreamEnd::Stopped,
        };
        let Some(this) = weak.upgrade() else {
            return StreamEnd::Stopped;
        };
        match item {
            Some(Ok(event)) => {
                first = false;
                *failures = 0;
                this.process(&event, &clock);
            }
            Some(Err(e)) => return StreamEnd::Failed(e, first),
            None => return StreamEnd::Ended,
        }
    }
}

/// Upstream `watchEventsChannel`.
async fn event_loop(weak: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    let mut failures = 0u32;
    loop {
        let end = read_stream(&weak, &mut stop, &mut failures).await;
        let Some(this) = weak.upgrade() else { return };
        match end {
            StreamEnd::Stopped => return,
            StreamEnd::Failed(e, first) if first && e.is_unimplemented() => {
                tracing::warn!(error = %e, period = ?this.config.fallback.period,
                    "the runtime does not implement GetContainerEvents: using the generic PLEG");
                if let Err(e) = this.fall_back() {
                    tracing::error!(error = %e, "cannot restart the generic PLEG");
                }
                return;
            }
            StreamEnd::Failed(e, _) => {
                tracing::warn!(error = %e, failures = failures + 1,
                    "evented PLEG: failed to get container events, retrying");
            }
            StreamEnd::Ended => {
                tracing::warn!(
                    failures = failures + 1,
                    "evented PLEG: the event stream ended, retrying"
                );
            }
        }
        failures += 1;
        this.stream_errors.fetch_add(1, Ordering::Relaxed);
        // Upstream forces a relist after each failure.
        this.generic.relist().await;
        if failures >= this.config.max_stream_retries {
            tracing::warn!(failures, period = ?this.config.fallback.period,
                "falling back to generic PLEG relisting since evented PLEG is not working");
            if let Err(e) = this.fall_back() {
                tracing::error!(error = %e, "cannot restart the generic PLEG");
            }
            return;
        }
    }
}

/// Upstream `updateGlobalCache`, every 2 s while events are in use.
async fn global_cache_loop(weak: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        let period = match weak.upgrade() {
            Some(this) => this.config.global_cache_update_period,
            None => return,
        };
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
        let Some(this) = weak.upgrade() else { return };
        if !this.in_use.load(Ordering::Acquire) {
            return;
        }
        // Never before the first relist: see `PodCache::refresh_time`.
        this.cache.refresh_time(Instant::now());
    }
}

#[async_trait]
impl PodLifecycleEventGenerator for EventedPleg {
    fn start(&self) -> Result<(), Error> {
        let handle =
            tokio::runtime::Handle::try_current().map_err(|e| Error::NoRuntime(e.to_string()))?;
        let mut running = lock(&self.inner.running);
        if running.is_some() {
            return Ok(());
        }
        self.inner.in_use.store(true, Ordering::Release);
        self.inner.fell_back.store(false, Ordering::Release);
        self.inner.generic.update(self.inner.config.generic.relist);
        self.inner.generic.start()?;
        let (tx, rx) = watch::channel(false);
        *running = Some(tx);
        let weak = Arc::downgrade(&self.inner);
        handle.spawn(event_loop(weak.clone(), rx.clone()));
        handle.spawn(global_cache_loop(weak, rx));
        Ok(())
    }

    fn stop(&self) {
        if let Some(tx) = lock(&self.inner.running).take() {
            let _ = tx.send(true);
        }
        self.inner.in_use.store(false, Ordering::Release);
        self.inner.generic.stop();
    }

    fn watch(&self) -> Option<mpsc::Receiver<PodLifecycleEvent>> {
        self.inner.generic.watch()
    }

    /// While events are in use: unhealthy only when the event channel is
    /// full (upstream); otherwise the generic PLEG's health.
    fn healthy(&self) -> Result<(), String> {
        if !self.is_evented_in_use() {
            return self.inner.generic.healthy();
        }
        let sink = self.inner.generic.sink();
        if sink.is_full() {
            return Err(format!(
                "EventedPLEG: pleg event channel capacity is full with {} events",
                sink.len()
            ));
        }
        Ok(())
    }

    async fn relist(&self) {
        self.inner.generic.relist().await;
    }

    fn relist_duration(&self) -> Option<Duration> {
        self.inner.generic.relist_duration()
    }

    fn relist_interval(&self) -> Option<Duration> {
        self.inner.generic.relist_interval()
    }

    fn update_cache(&self) -> bool {
        true
    }

    fn metrics(&self) -> PlegMetrics {
        PlegMetrics {
            container_events: self.inner.events.load(Ordering::Relaxed),
            stream_errors: self.inner.stream_errors.load(Ordering::Relaxed),
            ..self.inner.generic.metrics()
        }
    }
}

#[cfg(test)]
mod tests;
