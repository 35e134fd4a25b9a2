//! Registration and the node status loop against the API server (upstream
//! `registerWithAPIServer`, `tryRegisterWithAPIServer`, `syncNodeStatus`,
//! `updateNodeStatus`, `tryUpdateNodeStatus`,
//! `pkg/kubelet/kubelet_node_status.go`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{GetParams, Patch, PatchParams, PostParams};
use kubelet_container::events::{EventRecorder, EventType, node_ref};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::compare::{node_status_has_changed, should_patch};
use crate::config::NodeConfig;
use crate::error::Error;
use crate::inputs::{NodeInputs, NodeSnapshot};
use crate::patch::node_status_patch;
use crate::reconcile::reconcile_existing;
use crate::setters::{StatusReport, ensure_required_labels, initial_node, set_node_status};

/// Tries of one status update before giving up until the next period
/// (upstream `nodeStatusUpdateRetry`).
pub const NODE_STATUS_UPDATE_RETRY: usize = 5;
/// The first wait of registration; it doubles up to
/// [`REGISTER_MAX_BACKOFF`] (upstream `registerWithAPIServer`).
pub const REGISTER_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between registration attempts.
pub const REGISTER_MAX_BACKOFF: Duration = Duration::from_secs(7);
/// The jitter of the status period (upstream `wait.JitterUntil(...,
/// 0.04, ...)`).
const JITTER: f64 = 0.04;

type Hook = Arc<dyn Fn() + Send + Sync>;
type Clock = Arc<dyn Fn() -> Time + Send + Sync>;

/// What one status update did.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOutcome {
    /// The status was patched; this is the Node the API server returned.
    Patched(Box<Node>),
    /// No patch: nothing changed and the report period has not passed, or
    /// the API server already has exactly this status.
    Unchanged,
}

/// Registers the Node and keeps its status current (upstream
/// `kubelet_node_status.go`).
///
/// [`run`](Self::run) registers (with `register_node`), then every
/// `node_status_update_frequency` reads the Node (from the API server's
/// cache first, as upstream did before it had a node informer), applies the
/// setters, and patches `nodes/<name>/status` only when the status changed
/// or `node_status_report_frequency` has passed. A Node that is gone is
/// registered again (see [`NodeConfig::reregister_on_not_found`]).
///
/// [`subscribe`](Self::subscribe) gives the last Node the API server
/// returned for a create or a patch: `None` until registered.
pub struct NodeStatusManager {
    nodes: Api<Node>,
    config: NodeConfig,
    inputs: Arc<dyn NodeInputs>,
    last_sent: watch::Sender<Option<Node>>,
    last_report: Mutex<Option<Instant>>,
    on_repeated_heartbeat_failure: Option<Hook>,
    clock: Clock,
    events: Option<Arc<dyn EventRecorder>>,
}

impl std::fmt::Debug for NodeStatusManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStatusManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Now as an API time.
pub fn system_now() -> Time {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    let nanos = i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0);
    Time(
        k8s_openapi::jiff::Timestamp::new(secs, nanos)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// `d` stretched by up to `factor` (upstream `wait.Jitter`), from the
/// clock's nanoseconds: no random number generator needed for 4 %.
pub(crate) fn jittered(d: Duration, factor: f64) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let fraction = f64::from(nanos % 1000) / 1000.0;
    d.mul_f64(1.0 + factor * fraction)
}

/// Resolves once `stop` turns true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn log_report(node: &str, report: &StatusReport) {
    for e in &report.errors {
        tracing::error!(node, error = %e, "failed to set some node status fields");
    }
}

impl NodeStatusManager {
    /// A manager of `config.node_name` reading `inputs`.
    pub fn new(client: kube::Client, config: NodeConfig, inputs: Arc<dyn NodeInputs>) -> Self {
        NodeStatusManager {
            nodes: Api::all(client),
            config,
            inputs,
            last_sent: watch::Sender::new(None),
            last_report: Mutex::new(None),
            on_repeated_heartbeat_failure: None,
            clock: Arc::new(system_now),
            events: None,
        }
    }

    /// Records the events of the status setters on the Node (upstream
    /// `recordNodeStatusEvent` and `recordEvent`): `NodeReady` /
    /// `NodeNotReady` when the Ready condition flips,
    /// `NodeHasSufficientMemory` / `NodeHasInsufficientMemory` and the disk
    /// and PID twins when a pressure condition flips (from Unknown at
    /// registration too), and `Rebooted`. Each is recorded once the API
    /// server has the status that made it, so a transition is one event
    /// however many updates follow.
    pub fn with_event_recorder(mut self, events: Arc<dyn EventRecorder>) -> Self {
        self.events = Some(events);
        self
    }

    /// Called when a status update fails again after a failed try
    /// (upstream `onRepeatedHeartbeatFailure`, which closes the client's
    /// connections so that the next try dials afresh).
    pub fn with_on_repeated_heartbeat_failure(
        mut self,
        hook: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        self.on_repeated_heartbeat_failure = Some(Arc::new(hook));
        self
    }

    /// The clock of heartbeat and transition times (the system clock by
    /// default).
    pub fn with_clock(mut self, clock: impl Fn() -> Time + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The last Node the API server returned for a create or patch of ours:
    /// `None` until registered. The kubelet reads its registration state
    /// and Ready condition here.
    pub fn subscribe(&self) -> watch::Receiver<Option<Node>> {
        self.last_sent.subscribe()
    }

    fn name(&self) -> &str {
        &self.config.node_name
    }

    fn publish(&self, node: &Node) {
        self.last_sent.send_replace(Some(node.clone()));
    }

    /// Records the report's events on the Node, once the status that made
    /// them is the API server's (upstream records them as the setters run,
    /// again on each retry of a failed update).
    fn record_events(&self, report: &StatusReport) {
        for e in &report.events {
            tracing::info!(node = self.name(), event_type = e.event_type, reason = %e.reason, message = %e.message, "node event");
            if let Some(events) = &self.events {
                let event_type = if e.event_type == "Warning" {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                events.event(
                    &node_ref(self.name()),
                    event_type,
                    &e.reason,
                    e.message.clone(),
                );
            }
        }
    }

    /// One registration attempt (upstream `tryRegisterWithAPIServer`):
    /// creates the Node; when it already exists, gets it, reconciles it with
    /// the initial node ([`reconcile_existing`]) and patches it if needed.
    pub async fn try_register(&self) -> Result<Node, Error> {
        let snapshot = NodeSnapshot::collect(&*self.inputs).await;
        let (initial, report) = initial_node(&self.config, &snapshot, (self.clock)());
        log_report(self.name(), &report);
        tracing::info!(node = self.name(), "attempting to register node");
        let create = self.nodes.create(&PostParams::default(), &initial).await;
        let err = match create {
            Ok(node) => {
                self.publish(&node);
                self.record_events(&report);
                return Ok(node);
            }
            Err(e) => Error::api("create", "nodes", self.name(), e),
        };
        if !err.is_already_exists() {
            return Err(err);
        }
        let original = self
            .nodes
            .get(self.name())
            .await
            .map_err(|e| Error::api("get", "nodes", self.name(), e))?;
        tracing::info!(node = self.name(), "node was previously registered");
        let mut existing = original.clone();
        // Upstream records the initial node's events (the pressure
        // conditions from Unknown) whether the Node is new or not.
        if !reconcile_existing(&mut existing, &initial) {
            self.publish(&original);
            self.record_events(&report);
            return Ok(original);
        }
        let node = self.patch_status(&original, &existing).await?;
        self.publish(&node);
        self.record_events(&report);
        Ok(node)
    }

    /// Registers, retrying with upstream's backoff (100 ms doubling to 7 s,
    /// waited before each attempt) until it succeeds or `stop` turns true
    /// (`None`).
    pub async fn register(&self, stop: &mut watch::Receiver<bool>) -> Option<Node> {
        let mut step = REGISTER_INITIAL_BACKOFF;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = stopped(stop) => return None,
            }
            step = (step * 2).min(REGISTER_MAX_BACKOFF);
            let attempt = tokio::select! {
                r = self.try_register() => r,
                _ = stopped(stop) => return None,
            };
            match attempt {
                Ok(node) => {
                    tracing::info!(node = self.name(), "successfully registered node");
                    return Some(node);
                }
                Err(e) => {
                    tracing::error!(node = self.name(), error = %e, "unable to register node with API server")
                }
            }
        }
    }

    async fn patch_status(&self, original: &Node, node: &Node) -> Result<Node, Error> {
        let patch = node_status_patch(original, node).map_err(|source| Error::Encode {
            name: self.name().to_owned(),
            source,
        })?;
        self.send_patch(patch).await
    }

    async fn send_patch(&self, patch: serde_json::Value) -> Result<Node, Error> {
        self.nodes
            .patch_status(
                self.name(),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
            .map_err(|e| Error::api("patch", "nodes/status", self.name(), e))
    }

    /// One status update with up to [`NODE_STATUS_UPDATE_RETRY`] tries
    /// (upstream `updateNodeStatus`). A Node that does not exist ends it at
    /// once: more tries cannot find it.
    pub async fn update_node_status(&self) -> Result<UpdateOutcome, Error> {
        let snapshot = NodeSnapshot::collect(&*self.inputs).await;
        let mut last = None;
        for try_number in 0..NODE_STATUS_UPDATE_RETRY {
            match self.try_update_node_status(try_number, &snapshot).await {
                Ok(outcome) => return Ok(outcome),
                Err(e) => {
                    if try_number > 0
                        && let Some(hook) = &self.on_repeated_heartbeat_failure
                    {
                        hook();
                    }
                    if e.is_not_found() {
                        return Err(e);
                    }
                    tracing::error!(node = self.name(), error = %e, "error updating node status, will retry");
                    last = Some(e);
                }
            }
        }
        match last {
            Some(e) => Err(Error::RetriesExhausted {
                tries: NODE_STATUS_UPDATE_RETRY,
                last: Box::new(e),
            }),
            None => Ok(UpdateOutcome::Unchanged),
        }
    }

    /// Upstream `tryUpdateNodeStatus`: the first try reads the Node from the
    /// API server's cache (`resourceVersion=0`), retries read it fresh.
    async fn try_update_node_status(
        &self,
        try_number: usize,
        snapshot: &NodeSnapshot,
    ) -> Result<UpdateOutcome, Error> {
        let params = if try_number == 0 {
            GetParams::any()
        } else {
            GetParams::default()
        };
        let original = self
            .nodes
            .get_with(self.name(), &params)
            .await
            .map_err(|e| Error::api("get", "nodes", self.name(), e))?;
        let mut node = original.clone();
        let labels_changed = ensure_required_labels(&mut node, &self.config);
        let report = set_node_status(&mut node, &self.config, snapshot, (self.clock)());
        log_report(self.name(), &report);
        let empty = Default::default();
        let changed = labels_changed
            || node_status_has_changed(
                original.status.as_ref().unwrap_or(&empty),
                node.status.as_ref().unwrap_or(&empty),
            );
        let since = self
            .last_report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|t| t.elapsed());
        if !should_patch(changed, since, self.config.node_status_report_frequency) {
            return Ok(UpdateOutcome::Unchanged);
        }
        let patch = node_status_patch(&original, &node).map_err(|source| Error::Encode {
            name: self.name().to_owned(),
            source,
        })?;
        // An empty patch (the API server already has this status, heartbeat
        // times included) is not sent; upstream sends it.
        let outcome = if patch.as_object().is_some_and(|p| p.is_empty()) {
            self.publish(&original);
            UpdateOutcome::Unchanged
        } else {
            let updated = self.send_patch(patch).await?;
            self.publish(&updated);
            UpdateOutcome::Patched(Box::new(updated))
        };
        self.record_events(&report);
        *self
            .last_report
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        Ok(outcome)
    }

    /// Registers (with `register_node`), then updates the status every
    /// `node_status_update_frequency` (4 % jitter, counted from the end of
    /// the previous update, as upstream's sliding `JitterUntil`) until
    /// `stop` turns true. Errors are logged, never fatal.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        if self.config.register_node && self.register(&mut stop).await.is_none() {
            return;
        }
        // Upstream's validation refuses a period that is not positive; here
        // anything under a second is taken as a second, so none can spin.
        let period = self
            .config
            .node_status_update_frequency
            .max(Duration::from_secs(1));
        loop {
            let result = tokio::select! {
                r = self.update_node_status() => r,
                _ = stopped(&mut stop) => return,
            };
            match result {
                Ok(_) => {}
                Err(e)
                    if e.is_not_found()
                        && self.config.register_node
                        && self.config.reregister_on_not_found =>
                {
                    tracing::warn!(
                        node = self.name(),
                        "node not found: it was deleted; registering it again"
                    );
                    *self
                        .last_report
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = None;
                    if self.register(&mut stop).await.is_none() {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(node = self.name(), error = %e, "unable to update node status")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(jittered(period, JITTER)) => {}
                _ = stopped(&mut stop) => return,
            }
        }
    }
}
