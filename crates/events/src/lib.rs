//! Kubernetes events from a kubelet, written to the API server as
//! `core/v1` Events, so that `kubectl describe pod` tells a user what
//! happened.
//!
//! Mirrors upstream's event broadcaster and recorder
//! (`staging/src/k8s.io/client-go/tools/record/event.go`) and its
//! correlator (`events_cache.go`), as the kubelet starts them
//! (`cmd/kubelet/app/server.go`, `makeEventRecorder`: source component
//! `kubelet`, host the node name; an event client with `eventRecordQPS` and
//! `eventBurst`).
//!
//! Components record through the core crate's
//! [`EventRecorder`](kubelet_container::events::EventRecorder) trait, which
//! [`Recorder`] implements: a call never blocks; the event is queued (1000
//! at most, then dropped and counted) for the [`RecorderTask`], which
//!
//! - correlates it as upstream's `EventCorrelator` does: more than nine
//!   events that differ only by message within 10 minutes become one
//!   `(combined from similar events): <message>` event; an event seen
//!   before is not created again but PATCHed with its `count` + 1 and a new
//!   `lastTimestamp` (a strategic merge patch of `count`, `lastTimestamp`
//!   and `message`; a PATCH of an event that is gone creates it again); a
//!   source may send 25 events about one object, then one every 5 minutes
//!   (the spam filter drops the rest);
//! - writes at most `eventRecordQPS` requests a second with a burst of
//!   `eventBurst` (50 and 100 by default; the core crate's `TokenBucket`);
//! - logs an API error with the event and the verb (`create`, `patch`);
//!   an answer from the API server (any `Status`, a 403 or a 500 alike) is
//!   final, as upstream; a transport error is tried again, 12 tries at
//!   most, 10 s apart (the first wait random), as upstream.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kubelet_container::events::{node_ref, reason, EventRecorder, EventType};
//! use kubelet_events::Recorder;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let (recorder, task) = Recorder::builder(client, "node-a")
//!     .rate_limit(50, 100) // eventRecordQPS, eventBurst
//!     .build()?;
//! let (stop, stop_rx) = tokio::sync::watch::channel(false);
//! let task = tokio::spawn(task.run(stop_rx));
//!
//! let events: Arc<dyn EventRecorder> = Arc::new(recorder.clone());
//! events.event(&node_ref("node-a"), EventType::Normal, reason::STARTING_KUBELET,
//!     "Starting kubelet.".into());
//!
//! stop.send(true)?;
//! task.await?;
//! println!("{:?}", recorder.stats());
//! # Ok(())
//! # }
//! ```
//!
//! Better than upstream: event names cannot collide (the nanosecond suffix
//! is made unique); the aggregation window runs on the monotonic clock;
//! cache keys separate their fields (upstream concatenates them, so two
//! different events can share a key); after an event used up its tries,
//! the next ones are tried once each until a write succeeds, so an API
//! server outage costs one event's retries, not every queued event's; what
//! was dropped, filtered, written and given up is counted
//! ([`Recorder::stats`]).
//!
//! Not done: the `events.k8s.io/v1` API and its `EventSeries` (the kubelet
//! still writes `core/v1` Events upstream too); annotations
//! (`AnnotatedEventf`); watching events, or sending them anywhere but the
//! API server and the log; a combined event keeps the reporting fields
//! (upstream's drops them).

mod correlator;
mod error;
mod lru;
mod recorder;

pub use correlator::{
    AGGREGATE_INTERVAL, AGGREGATE_MAX_EVENTS, AGGREGATE_MESSAGE_PREFIX, LRU_CACHE_ENTRIES,
};
pub use error::Error;
pub use kubelet_container::flowcontrol::ratelimit::{
    EVENT_BURST, EVENT_RECORD_QPS, EVENT_SPAM_BURST, EVENT_SPAM_PERIOD,
};
pub use recorder::{
    COMPONENT, DEFAULT_QUEUE_CAPACITY, DEFAULT_RETRY_INTERVAL, MAX_TRIES_PER_EVENT, Recorder,
    RecorderBuilder, RecorderTask, Stats,
};
