//! [`Recorder`] (the non-blocking front, an [`EventRecorder`]) and
//! [`RecorderTask`] (the owned task that correlates and writes).

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Event, EventSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubelet_container::events::{EventRecorder, EventType, ObjectReference};
use kubelet_container::flowcontrol::TokenBucket;
use kubelet_container::flowcontrol::ratelimit::{EVENT_BURST, EVENT_RECORD_QPS};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::Error;
use crate::correlator::{Correlated, Correlator, Now};

/// The component events are reported by (`source.component`,
/// `reportingComponent`).
pub const COMPONENT: &str = "kubelet";

/// Events waiting for the task before new ones are dropped (upstream
/// `maxQueuedEvents`).
pub const DEFAULT_QUEUE_CAPACITY: usize = 1000;

/// Writes of one event before it is given up (upstream
/// `maxTriesPerEvent`).
pub const MAX_TRIES_PER_EVENT: u32 = 12;

/// The wait between two writes of one event; the first wait is a random
/// part of it (upstream `defaultSleepDuration`).
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(10);

type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// What the recorder and its task count, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events dropped because the queue was full or the task gone.
    pub dropped: u64,
    /// Events the spam filter dropped.
    pub filtered: u64,
    /// Events created (POST).
    pub created: u64,
    /// Events counted again on an existing one (PATCH).
    pub patched: u64,
    /// Events given up: refused by the API server, or every try failed.
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    filtered: AtomicU64,
    created: AtomicU64,
    patched: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            dropped: get(&self.dropped),
            filtered: get(&self.filtered),
            created: get(&self.created),
            patched: get(&self.patched),
            failed: get(&self.failed),
        }
    }
}

fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed) + 1
}

/// What the recorder and its task share.
struct Shared {
    node: String,
    component: String,
    clock: WallClock,
    /// The last nanosecond used in an event name.
    last_nanos: AtomicU64,
    counters: Counters,
}

impl Shared {
    /// Nanoseconds since the epoch at `t`, made unique: never the same
    /// twice, so two events of one object in the same nanosecond still get
    /// different names (upstream's can collide and be refused).
    fn unique_nanos(&self, t: SystemTime) -> u64 {
        let now = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut last = self.last_nanos.load(Ordering::Relaxed);
        loop {
            let next = now.max(last.saturating_add(1));
            match self.last_nanos.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}

fn time_of(t: SystemTime) -> Time {
    Time(Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Writes events to the API server as `core/v1` Events (upstream
/// `record.EventBroadcaster` started with `StartRecordingToSink`, and the
/// recorder it makes for the kubelet's source).
///
/// [`EventRecorder::event`] stamps the event (name `<object>.<hex
/// nanoseconds>`, `firstTimestamp` = `lastTimestamp` = now, `count` 1,
/// source `kubelet` on the node, `reportingComponent: kubelet`,
/// `reportingInstance: <node>`, the object's namespace or `default`) and
/// queues it without blocking: when the queue is full the event is
/// dropped and counted ([`Stats::dropped`]). The [`RecorderTask`] does the
/// rest. Cheap to clone; the task ends when every clone is dropped or on
/// its stop signal.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Event>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("node", &self.shared.node)
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
            .field("stats", &self.stats())
            .finish()
    }
}

/// Configures a [`Recorder`] and its [`RecorderTask`].
pub struct RecorderBuilder {
    client: kube::Client,
    node: String,
    component: String,
    qps: u32,
    burst: u32,
    capacity: usize,
    max_tries: u32,
    retry_interval: Duration,
    clock: WallClock,
}

impl fmt::Debug for RecorderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecorderBuilder")
            .field("node", &self.node)
            .field("component", &self.component)
            .field("qps", &self.qps)
            .field("burst", &self.burst)
            .field("capacity", &self.capacity)
            .field("max_tries", &self.max_tries)
            .field("retry_interval", &self.retry_interval)
            .finish_non_exhaustive()
    }
}

impl RecorderBuilder {
    /// Writes per second and their burst (the kubelet's `eventRecordQPS`,
    /// default 50, and `eventBurst`, default 100). A QPS of 0 means no
    /// limit.
    pub fn rate_limit(mut self, qps: u32, burst: u32) -> Self {
        self.qps = qps;
        self.burst = burst;
        self
    }

    /// Events queued for the task before new ones are dropped (default
    /// [`DEFAULT_QUEUE_CAPACITY`]).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// How often one event is written at most when the API server cannot
    /// be reached, and the wait between writes, the first a random part of
    /// it (defaults [`MAX_TRIES_PER_EVENT`], [`DEFAULT_RETRY_INTERVAL`]).
    pub fn retries(mut self, max_tries: u32, interval: Duration) -> Self {
        self.max_tries = max_tries.max(1);
        self.retry_interval = interval;
        self
    }

    /// The reporting component (default [`COMPONENT`]).
    pub fn component(mut self, component: impl Into<String>) -> Self {
        self.component = component.into();
        self
    }

    /// The wall clock of the events' timestamps and names (default the
    /// system's; tests pass one that follows tokio's paused clock).
    pub fn clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The recorder and its task. Fails on an empty node name, a zero
    /// queue, or a write rate without a burst.
    pub fn build(self) -> Result<(Recorder, RecorderTask), Error> {
        if self.node.is_empty() {
            return Err(Error::InvalidConfig("the node name is empty".into()));
        }
        if self.capacity == 0 {
            return Err(Error::InvalidConfig("the event queue holds nothing".into()));
        }
        let limiter = TokenBucket::with_clock(self.qps, self.burst, TokioClock)
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        let (tx, rx) = mpsc::channel(self.capacity);
        let shared = Arc::new(Shared {
            node: self.node,
            component: self.component,
            clock: self.clock,
            last_nanos: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let task = RecorderTask {
            rx,
            client: self.client,
            correlator: Correlator::new(TokioClock),
            limiter,
            qps: self.qps,
            max_tries: self.max_tries,
            retry_interval: self.retry_interval,
            degraded: false,
            shared: shared.clone(),
        };
        Ok((Recorder { tx, shared }, task))
    }
}

impl Recorder {
    /// A builder for events of the kubelet on `node_name`, written through
    /// `client`.
    pub fn builder(client: kube::Client, node_name: impl Into<String>) -> RecorderBuilder {
        RecorderBuilder {
            client,
            node: node_name.into(),
            component: COMPONENT.to_owned(),
            qps: EVENT_RECORD_QPS,
            burst: EVENT_BURST,
            capacity: DEFAULT_QUEUE_CAPACITY,
            max_tries: MAX_TRIES_PER_EVENT,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            clock: Arc::new(SystemTime::now),
        }
    }

    /// The recorder and its task with upstream's defaults. Fails only on an
    /// empty node name.
    pub fn new(
        client: kube::Client,
        node_name: impl Into<String>,
    ) -> Result<(Recorder, RecorderTask), Error> {
        Self::builder(client, node_name).build()
    }

    /// What was dropped, filtered, written and given up so far.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// The event as upstream's recorder makes it (`makeEvent`).
    fn make_event(
        &self,
        object: &ObjectReference,
        event_type: EventType,
        reason: &str,
        message: String,
    ) -> Event {
        let sh = &self.shared;
        let now = (sh.clock)();
        let t = time_of(now);
        let namespace = match object.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => ns.to_owned(),
            _ => "default".to_owned(),
        };
        Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    object.name.as_deref().unwrap_or_default(),
                    sh.unique_nanos(now)
                )),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.to_owned()),
            message: Some(message),
            first_timestamp: Some(t.clone()),
            last_timestamp: Some(t),
            count: Some(1),
            type_: Some(event_type.as_str().to_owned()),
            source: Some(EventSource {
                component: Some(sh.component.clone()),
                host: Some(sh.node.clone()),
            }),
            reporting_component: Some(sh.component.clone()),
            reporting_instance: Some(sh.node.clone()),
            ..Default::default()
        }
    }
}

impl EventRecorder for Recorder {
    fn event(
        &self,
        object: &ObjectReference,
        event_type: EventType,
        reason: &str,
        message: String,
    ) {
        self.annotated_event(object, &BTreeMap::new(), event_type, reason, message);
    }

    /// Upstream `AnnotatedEventf`: the annotations go on the Event's
    /// metadata.
    fn annotated_event(
        &self,
        object: &ObjectReference,
        annotations: &BTreeMap<String, String>,
        event_type: EventType,
        reason: &str,
        message: String,
    ) {
        let mut event = self.make_event(object, event_type, reason, message);
        if !annotations.is_empty() {
            event.metadata.annotations = Some(annotations.clone());
        }
        // Upstream StartStructuredLogging(3): every event is logged.
        tracing::debug!(event = %Describe(&event), "Event occurred");
        if let Err(e) = self.tx.try_send(event) {
            let dropped = bump(&self.shared.counters.dropped);
            let (why, event) = match e {
                mpsc::error::TrySendError::Full(ev) => ("too many queued events", ev),
                mpsc::error::TrySendError::Closed(ev) => ("the event recorder has stopped", ev),
            };
            // Once, then every hundredth, so that a flood does not flood the log.
            if dropped == 1 || dropped.is_multiple_of(100) {
                tracing::warn!(event = %Describe(&event), dropped, "Unable to record event: {why}, dropped event");
            }
        }
    }
}

/// The owned task of a [`Recorder`]: correlates the queued events
/// (upstream's `EventCorrelator`) and writes them, at most `qps` requests a
/// second. Run it with [`RecorderTask::run`].
pub struct RecorderTask {
    rx: mpsc::Receiver<Event>,
    client: kube::Client,
    correlator: Correlator<TokioClock>,
    limiter: TokenBucket<TokioClock>,
    qps: u32,
    max_tries: u32,
    retry_interval: Duration,
    /// The last event used up its tries: until a write succeeds, events are
    /// tried once each.
    degraded: bool,
    shared: Arc<Shared>,
}

impl fmt::Debug for RecorderTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecorderTask")
            .field("node", &self.shared.node)
            .field("qps", &self.qps)
            .field("max_tries", &self.max_tries)
            .field("degraded", &self.degraded)
            .finish_non_exhaustive()
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A number in [0, 1) from the standard library's randomly keyed hasher.
fn random_fraction() -> f64 {
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

impl RecorderTask {
    /// Writes the queued events until `stop` turns true (or its sender is
    /// dropped), or every [`Recorder`] is dropped and the queue is empty. A
    /// write or a wait in progress is abandoned on stop; events still
    /// queued then are not written.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let event = tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
                e = self.rx.recv() => match e {
                    Some(e) => e,
                    None => break,
                },
            };
            if !self.record(event, &mut stop).await {
                break;
            }
        }
        let left = self.rx.len();
        if left > 0 {
            tracing::info!(
                left,
                "event recorder stopped; queued events were not written"
            );
        }
    }

    /// Correlates and writes one event; false when stopped.
    async fn record(&mut self, event: Event, stop: &mut watch::Receiver<bool>) -> bool {
        let shared = self.shared.clone();
        let unique_nanos = move |t| shared.unique_nanos(t);
        let now = Now {
            mono: tokio::time::Instant::now(),
            wall: (self.shared.clock)(),
            unique_nanos: &unique_nanos,
        };
        let (event, mut patch) = match self.correlator.correlate(event, &now) {
            Correlated::Skip => {
                bump(&self.shared.counters.filtered);
                tracing::debug!(
                    "event dropped by the spam filter (25 per object, then one per 5 minutes)"
                );
                return true;
            }
            Correlated::Create(e) => (e, None),
            Correlated::Patch { event, patch } => (event, Some(patch)),
        };
        let max_tries = if self.degraded { 1 } else { self.max_tries };
        let mut tries = 0;
        loop {
            if !self.wait_for_token(stop).await {
                return false;
            }
            let result = match &patch {
                Some(p) => self.patch(&event, p).await,
                None => self.create(&event).await,
            };
            let err = match result {
                Ok(written) => {
                    let c = &self.shared.counters;
                    bump(if patch.is_some() {
                        &c.patched
                    } else {
                        &c.created
                    });
                    self.correlator.update_state(&written);
                    self.degraded = false;
                    return true;
                }
                Err(e) if patch.is_some() && e.is_not_found() => {
                    // The event was deleted (it expired): create it again.
                    patch = None;
                    continue;
                }
                Err(e) => e,
            };
            let desc = Describe(&event);
            if !err.is_retriable() {
                bump(&self.shared.counters.failed);
                if err.is_already_exists() {
                    tracing::debug!(event = %desc, error = %err, "Server rejected event (will not retry!)");
                } else {
                    tracing::warn!(event = %desc, error = %err, "Server rejected event (will not retry!)");
                }
                return true;
            }
            tries += 1;
            if tries >= max_tries {
                bump(&self.shared.counters.failed);
                self.degraded = true;
                tracing::error!(event = %desc, error = %err, tries, "Unable to write event (retry limit exceeded!)");
                return true;
            }
            tracing::warn!(event = %desc, error = %err, tries, "Unable to write event (may retry after sleeping)");
            // The first wait is random, so that kubelets do not all come
            // back at once after an outage.
            let delay = if tries == 1 {
                self.retry_interval.mul_f64(random_fraction())
            } else {
                self.retry_interval
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(stop) => {
                    tracing::warn!(event = %desc, "Unable to write event (the recorder is stopping)");
                    return false;
                }
            }
        }
    }

    /// Waits for a write token (upstream: the event client's own QPS and
    /// burst); false when stopped first.
    async fn wait_for_token(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let step = Duration::from_secs(1) / self.qps.max(1);
        loop {
            if *stop.borrow() {
                return false;
            }
            if self.limiter.try_acquire() {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = stopped(stop) => return false,
            }
        }
    }

    fn api(&self, event: &Event) -> (Api<Event>, String, String) {
        let ns = event
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let name = event.metadata.name.clone().unwrap_or_default();
        (Api::namespaced(self.client.clone(), &ns), ns, name)
    }

    async fn create(&self, event: &Event) -> Result<Event, Error> {
        let (api, ns, name) = self.api(event);
        let mut event = event.clone();
        // A create never carries a resource version.
        event.metadata.resource_version = None;
        api.create(&PostParams::default(), &event)
            .await
            .map_err(|e| Error::api("create", &ns, &name, e))
    }

    async fn patch(&self, event: &Event, patch: &Value) -> Result<Event, Error> {
        let (api, ns, name) = self.api(event);
        api.patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map_err(|e| Error::api("patch", &ns, &name, e))
    }
}

/// An event in one line for logs.
struct Describe<'a>(&'a Event);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        let o = &e.involved_object;
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        write!(
            f,
            "{}/{} ({} {}/{}/{}",
            s(&e.metadata.namespace),
            s(&e.metadata.name),
            s(&o.kind),
            s(&o.namespace),
            s(&o.name),
            s(&o.field_path),
        )?;
        write!(
            f,
            ") {} {} x{}: {}",
            s(&e.type_),
            s(&e.reason),
            e.count.unwrap_or(1),
            s(&e.message)
        )
    }
}

/// A governor clock that follows tokio's (paused in tests), for the write
/// limiter and the spam filter.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TokioClock;

impl governor::clock::Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}
