//! The node lease of a kubelet (upstream `pkg/kubelet/nodelease` over
//! `component-helpers/apimachinery/lease`): the Lease
//! `kube-node-lease/<node>`, held by the node, owned by its Node, renewed
//! every quarter of its duration; the node lifecycle controller reads its
//! `renewTime` as the node's heartbeat.
//!
//! ```no_run
//! use kubelet_nodelease::{DEFAULT_LEASE_DURATION_SECONDS, LeaseController};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let controller = LeaseController::new(client, "node-a", DEFAULT_LEASE_DURATION_SECONDS);
//! let mut renewed = controller.subscribe();
//! let (stop, stop_rx) = tokio::sync::watch::channel(false);
//! let task = tokio::spawn(controller.run(stop_rx));
//! renewed.changed().await?; // the lease was created or renewed
//! let renew_time = renewed.borrow().as_ref().and_then(|l| l.spec.as_ref()?.renew_time.clone());
//! println!("renewed at {renew_time:?}");
//! stop.send(true)?;
//! task.await?;
//! # Ok(())
//! # }
//! ```
//!
//! As upstream: renewals update the last lease written without reading it
//! first; a conflict reads it again and retries, up to 5 immediate tries
//! ([`MAX_UPDATE_RETRIES`]), the hook of
//! [`LeaseController::with_on_repeated_heartbeat_failure`] called on
//! repeated failures; ensuring the lease backs off 200 ms doubling to 7 s;
//! the renew interval has 4 % jitter; a lease is created only once the Node
//! exists, with an owner reference to it (`apiVersion: v1`, `kind: Node`,
//! name, uid), and an existing lease without one gets it at its next
//! renewal.
//!
//! Better: a renewal that finds the lease deleted goes straight to
//! re-creating it instead of five doomed updates; renewals can be watched
//! ([`LeaseController::subscribe`]); a 403 names the verb and resource the
//! credentials lack; `stop` ends a round in progress, backoff included
//! (upstream's backoff only stops with its context).
//!
//! Not done: leases of other components (the generic controller's
//! `holderIdentity` other than the node name, other namespaces).

mod controller;
mod error;

pub use controller::{
    DEFAULT_LEASE_DURATION_SECONDS, INITIAL_BACKOFF, JITTER, LeaseController, MAX_BACKOFF,
    MAX_UPDATE_RETRIES, NODE_LEASE_NAMESPACE, RENEW_INTERVAL_FRACTION, micro_now,
};
pub use error::Error;
