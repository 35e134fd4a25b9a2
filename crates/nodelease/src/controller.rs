//! The lease controller (upstream `pkg/kubelet/nodelease/controller.go` and
//! `component-helpers/apimachinery/lease/controller.go`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

use crate::error::Error;

/// The namespace of node leases (upstream `v1.NamespaceNodeLease`).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The kubelet's default `nodeLeaseDurationSeconds`.
pub const DEFAULT_LEASE_DURATION_SECONDS: i32 = 40;
/// The renew interval as a fraction of the lease duration (upstream
/// `renewIntervalFraction`): 10 s for 40 s.
pub const RENEW_INTERVAL_FRACTION: f64 = 0.25;
/// Immediate, successive update tries before waiting for the next interval
/// (upstream `maxUpdateRetries`).
pub const MAX_UPDATE_RETRIES: usize = 5;
/// The first backoff of ensuring the lease doubles from this: the first
/// wait is 200 ms (upstream `backoffEnsureLease`).
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest backoff (upstream `maxBackoff`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(7);
/// The jitter of the renew interval (upstream `wait.JitterUntil(...,
/// 0.04, ...)`).
pub const JITTER: f64 = 0.04;

type Hook = Arc<dyn Fn() + Send + Sync>;
type Clock = Arc<dyn Fn() -> MicroTime + Send + Sync>;

/// Now as an API micro-time.
pub fn micro_now() -> MicroTime {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    let nanos = i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0);
    MicroTime(
        k8s_openapi::jiff::Timestamp::new(secs, nanos)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// `d` stretched by up to `factor` (upstream `wait.Jitter`), from the
/// clock's nanoseconds.
fn jittered(d: Duration, factor: f64) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d.mul_f64(1.0 + factor * f64::from(nanos % 1000) / 1000.0)
}

/// Resolves once `stop` turns true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Creates and renews the Lease `kube-node-lease/<node>` (upstream
/// `nodelease.NewController` over the generic lease controller).
///
/// Each round ([`sync`](Self::sync)) updates the lease from the last one
/// written (no GET, as upstream); when that fails it ensures the lease
/// exists, backing off 200 ms doubling to 7 s while the API server fails,
/// and updates it. A new lease is owned by the Node and is not created
/// before the Node exists (upstream's `setNodeOwnerFunc`); a lease without
/// an owner gets one at the next renewal once the Node exists.
pub struct LeaseController {
    leases: Api<Lease>,
    nodes: Api<Node>,
    node_name: String,
    lease_duration_seconds: i32,
    renew_interval: Duration,
    latest: Option<Lease>,
    renewed: watch::Sender<Option<Lease>>,
    on_repeated_heartbeat_failure: Option<Hook>,
    clock: Clock,
}

impl std::fmt::Debug for LeaseController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseController")
            .field("node_name", &self.node_name)
            .field("lease_duration_seconds", &self.lease_duration_seconds)
            .field("renew_interval", &self.renew_interval)
            .finish_non_exhaustive()
    }
}

impl LeaseController {
    /// The controller of `node_name`'s lease of `lease_duration_seconds`,
    /// renewed every quarter of it. A duration that is not positive (which
    /// the API server would refuse, and which would renew without pause) is
    /// replaced by [`DEFAULT_LEASE_DURATION_SECONDS`].
    pub fn new(
        client: kube::Client,
        node_name: impl Into<String>,
        lease_duration_seconds: i32,
    ) -> Self {
        let lease_duration_seconds = if lease_duration_seconds > 0 {
            lease_duration_seconds
        } else {
            tracing::warn!(
                lease_duration_seconds,
                "node lease duration must be positive; using the default"
            );
            DEFAULT_LEASE_DURATION_SECONDS
        };
        let seconds = u64::try_from(lease_duration_seconds).unwrap_or(40);
        LeaseController {
            leases: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            nodes: Api::all(client),
            node_name: node_name.into(),
            lease_duration_seconds,
            renew_interval: Duration::from_secs(seconds).mul_f64(RENEW_INTERVAL_FRACTION),
            latest: None,
            renewed: watch::Sender::new(None),
            on_repeated_heartbeat_failure: None,
            clock: Arc::new(micro_now),
        }
    }

    /// Renews every `interval` instead.
    pub fn with_renew_interval(mut self, interval: Duration) -> Self {
        self.renew_interval = interval;
        self
    }

    /// Called when a renewal fails again after a failed try (upstream
    /// `onRepeatedHeartbeatFailure`: the kubelet closes its client's
    /// connections).
    pub fn with_on_repeated_heartbeat_failure(
        mut self,
        hook: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        self.on_repeated_heartbeat_failure = Some(Arc::new(hook));
        self
    }

    /// The clock of `renewTime` (the system clock by default).
    pub fn with_clock(mut self, clock: impl Fn() -> MicroTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The interval between the end of one round and the start of the next
    /// (before jitter).
    pub fn renew_interval(&self) -> Duration {
        self.renew_interval
    }

    /// The last lease the API server returned for a create or update of
    /// ours: `None` until the first; its `renewTime` is the last renewal.
    pub fn subscribe(&self) -> watch::Receiver<Option<Lease>> {
        self.renewed.subscribe()
    }

    fn name(&self) -> &str {
        &self.node_name
    }

    fn written(&mut self, lease: Lease) {
        self.renewed.send_replace(Some(lease.clone()));
        self.latest = Some(lease);
    }

    /// A new lease (`base` `None`) or a copy of `base`, renewed now
    /// (upstream `newLease`).
    fn new_lease(&self, base: Option<&Lease>) -> Lease {
        let mut lease = base.cloned().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.node_name.clone()),
                namespace: Some(NODE_LEASE_NAMESPACE.to_owned()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.node_name.clone()),
                lease_duration_seconds: Some(self.lease_duration_seconds),
                ..Default::default()
            }),
        });
        lease.spec.get_or_insert_with(LeaseSpec::default).renew_time = Some((self.clock)());
        lease
    }

    /// Makes the Node the lease's owner unless it has one (upstream
    /// `setNodeOwnerFunc`); false when the Node could not be read.
    async fn set_node_owner(&self, lease: &mut Lease) -> bool {
        if lease
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| !o.is_empty())
        {
            return true;
        }
        match self.nodes.get(self.name()).await {
            Ok(node) => {
                lease.metadata.owner_references = Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: self.node_name.clone(),
                    uid: node.metadata.uid.unwrap_or_default(),
                    ..Default::default()
                }]);
                true
            }
            Err(e) => {
                let e = Error::api("get", "nodes", self.name(), e);
                tracing::error!(node = self.name(), error = %e, "failed to get node when trying to set owner ref to the node lease");
                false
            }
        }
    }

    /// Gets the lease, creating it (owned by the Node) when missing
    /// (upstream `ensureLease`): the lease, if any, and whether it was
    /// created. No lease and no error when the Node is not there yet.
    async fn ensure_lease(&self) -> Result<(Option<Lease>, bool), Error> {
        let found = self
            .leases
            .get_opt(self.name())
            .await
            .map_err(|e| Error::api("get", "leases", self.name(), e))?;
        if let Some(lease) = found {
            return Ok((Some(lease), false));
        }
        let mut lease = self.new_lease(None);
        if !self.set_node_owner(&mut lease).await {
            // A lease is always created with its owner: try again next round.
            return Ok((None, false));
        }
        let created = self
            .leases
            .create(&PostParams::default(), &lease)
            .await
            .map_err(|e| Error::api("create", "leases", self.name(), e))?;
        Ok((Some(created), true))
    }

    /// [`ensure_lease`](Self::ensure_lease) until it does not fail, waiting
    /// 200 ms, 400 ms, ... up to 7 s between tries (upstream
    /// `backoffEnsureLease`).
    async fn backoff_ensure_lease(&self) -> (Option<Lease>, bool) {
        let mut sleep = INITIAL_BACKOFF;
        loop {
            match self.ensure_lease().await {
                Ok(found) => return found,
                Err(e) => {
                    sleep = (sleep * 2).min(MAX_BACKOFF);
                    tracing::error!(node = self.name(), error = %e, retry_in = ?sleep, "failed to ensure lease exists, will retry");
                    tokio::time::sleep(sleep).await;
                }
            }
        }
    }

    /// Updates the lease from `base` up to [`MAX_UPDATE_RETRIES`] times
    /// (upstream `retryUpdateLease`); a conflict reads the lease again. A
    /// lease that is gone ends the tries at once (upstream tries it five
    /// times).
    async fn retry_update_lease(&mut self, base: Lease) -> Result<(), Error> {
        let mut base = base;
        let mut last = None;
        for try_number in 0..MAX_UPDATE_RETRIES {
            let mut lease = self.new_lease(Some(&base));
            // Unlike a create, a missing owner does not hold back a renewal.
            self.set_node_owner(&mut lease).await;
            let result = self
                .leases
                .replace(self.name(), &PostParams::default(), &lease)
                .await
                .map_err(|e| Error::api("update", "leases", self.name(), e));
            match result {
                Ok(updated) => {
                    self.written(updated);
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(node = self.name(), error = %e, "failed to update lease");
                    if e.is_conflict() {
                        match self.backoff_ensure_lease().await {
                            (Some(fresh), _) => base = fresh,
                            (None, _) => {
                                return Err(Error::Gone {
                                    name: self.node_name.clone(),
                                });
                            }
                        }
                        last = Some(e);
                        continue;
                    }
                    if e.is_not_found() {
                        return Err(e);
                    }
                    if try_number > 0
                        && let Some(hook) = &self.on_repeated_heartbeat_failure
                    {
                        hook();
                    }
                    last = Some(e);
                }
            }
        }
        Err(match last {
            Some(e) => Error::RetriesExhausted {
                tries: MAX_UPDATE_RETRIES,
                last: Box::new(e),
            },
            None => Error::Gone {
                name: self.node_name.clone(),
            },
        })
    }

    /// One round (upstream `sync`): renew from the last lease written; on
    /// failure (or the first time) ensure the lease and renew it unless it
    /// was just created.
    pub async fn sync(&mut self) {
        if let Some(latest) = self.latest.clone() {
            match self.retry_update_lease(latest).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::info!(node = self.name(), error = %e, "failed to update lease using latest lease, fallback to ensure lease")
                }
            }
        }
        let (lease, created) = self.backoff_ensure_lease().await;
        self.latest = lease.clone();
        if let Some(lease) = lease {
            if created {
                self.written(lease);
            } else if let Err(e) = self.retry_update_lease(lease).await {
                tracing::error!(node = self.name(), error = %e, retry_in = ?self.renew_interval, "will retry updating lease");
            }
        }
    }

    /// Runs [`sync`](Self::sync) now and then every renew interval (4 %
    /// jitter, counted from the end of the previous round) until `stop`
    /// turns true; a round in progress is abandoned then.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.sync() => {}
                _ = stopped(&mut stop) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(jittered(self.renew_interval, JITTER)) => {}
                _ = stopped(&mut stop) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renew_interval_is_a_quarter_of_the_duration() {
        let (mock, _handle) = tower_test::mock::pair::<
            hyper::Request<kube::client::Body>,
            hyper::Response<kube::client::Body>,
        >();
        let client = kube::Client::new(mock, "default");
        let c = LeaseController::new(client, "n", DEFAULT_LEASE_DURATION_SECONDS);
        assert_eq!(c.renew_interval(), Duration::from_secs(10));
        let c = c.with_renew_interval(Duration::from_secs(1));
        assert_eq!(c.renew_interval(), Duration::from_secs(1));
        let (mock, _handle) = tower_test::mock::pair::<
            hyper::Request<kube::client::Body>,
            hyper::Response<kube::client::Body>,
        >();
        let c = LeaseController::new(kube::Client::new(mock, "default"), "n", 0);
        assert_eq!(c.renew_interval(), Duration::from_secs(10));
        assert_eq!(
            c.new_lease(None).spec.unwrap().lease_duration_seconds,
            Some(DEFAULT_LEASE_DURATION_SECONDS)
        );
    }

    #[test]
    fn jitter_stays_within_four_percent() {
        let d = Duration::from_secs(10);
        let j = jittered(d, JITTER);
        assert!(j >= d && j <= Duration::from_millis(10_400), "{j:?}");
    }
}
