//! [`PodConfig`]: the sources, the merge task and the update stream.
//!
//! Mirrors upstream `PodConfig` (`pkg/kubelet/config/config.go`) and its mux
//! (`mux.go`): every source gets a channel, one task merges what arrives
//! serially, and the updates go to one bounded channel (capacity 50, as
//! upstream) in order.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::Stream;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::{ApiServerSource, FileSource, HttpSource, Merger, PodOperation, PodUpdate, Rejection};

/// Capacity of the update channel (upstream: `make(chan kubetypes.PodUpdate, 50)`).
const UPDATES_CAPACITY: usize = 50;
/// Capacity of the channel from the sources to the merge task.
const EVENTS_CAPACITY: usize = 64;

/// A source of pods: the file, HTTP and API server sources, or a user's own.
///
/// [`run`](Self::run) is spawned as a task by [`PodConfigBuilder::start`] and
/// should run until the sink reports [`Error::Closed`]. A source sends
/// snapshots with [`SourceSink::set`] (what upstream's sources do: the first
/// SET marks the source as seen) or incremental changes with
/// [`SourceSink::send`], and reports bad input with [`SourceSink::reject`].
///
/// ```no_run
/// use async_trait::async_trait;
/// use kubelet_podconfig::{PodSource, SourceSink};
///
/// struct Nothing;
///
/// #[async_trait]
/// impl PodSource for Nothing {
///     fn name(&self) -> &str { "nothing" }
///     async fn run(self: Box<Self>, sink: SourceSink) {
///         // An empty snapshot: the source is ready and has no pods.
///         let _ = sink.set(Vec::new()).await;
///     }
/// }
/// ```
#[async_trait]
pub trait PodSource: Send + 'static {
    /// The source name put on its updates and pods (`file`, `http`, `api`,
    /// or a custom one). Names must be unique within a [`PodConfig`].
    fn name(&self) -> &str;

    /// Runs the source, feeding `sink`, until the config shuts down.
    async fn run(self: Box<Self>, sink: SourceSink);
}

enum Envelope {
    Update {
        source: Arc<str>,
        op: PodOperation,
        pods: Vec<Pod>,
    },
    Reject(Rejection),
    ClearRejection {
        source: Arc<str>,
        origin: String,
    },
    ReplaceRejections {
        source: Arc<str>,
        rejections: Vec<Rejection>,
    },
    Sync,
}

/// The sending half a [`PodSource`] writes to (upstream's `Channel(source)`).
///
/// Cheap to clone. Every method fails only with [`Error::Closed`], once the
/// [`PodConfig`] is gone.
#[derive(Clone)]
pub struct SourceSink {
    source: Arc<str>,
    tx: mpsc::Sender<Envelope>,
}

impl std::fmt::Debug for SourceSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSink")
            .field("source", &self.source)
            .finish()
    }
}

impl SourceSink {
    /// The source name.
    pub fn source(&self) -> &str {
        &self.source
    }

    async fn post(&self, envelope: Envelope) -> Result<()> {
        self.tx.send(envelope).await.map_err(|_| Error::Closed)
    }

    /// Sends the source's full set of pods (a SET). The first one marks the
    /// source as seen.
    pub async fn set(&self, pods: Vec<Pod>) -> Result<()> {
        self.send(PodOperation::Set, pods).await
    }

    /// Sends an incremental change: ADD, UPDATE or DELETE upsert pods by UID,
    /// REMOVE drops them by UID, SET replaces everything.
    pub async fn send(&self, op: PodOperation, pods: Vec<Pod>) -> Result<()> {
        self.post(Envelope::Update {
            source: self.source.clone(),
            op,
            pods,
        })
        .await
    }

    /// Records that the manifest at `origin` was rejected, replacing any
    /// earlier rejection of the same origin.
    pub async fn reject(&self, origin: impl Into<String>, error: Error) -> Result<()> {
        self.post(Envelope::Reject(self.rejection(origin.into(), error)))
            .await
    }

    /// Forgets the rejection of `origin` (it was fixed or removed).
    pub async fn clear_rejection(&self, origin: impl Into<String>) -> Result<()> {
        self.post(Envelope::ClearRejection {
            source: self.source.clone(),
            origin: origin.into(),
        })
        .await
    }

    /// Replaces all of this source's rejections (after a full relist).
    pub async fn replace_rejections(&self, rejections: Vec<(String, Error)>) -> Result<()> {
        let rejections = rejections
            .into_iter()
            .map(|(o, e)| self.rejection(o, e))
            .collect();
        self.post(Envelope::ReplaceRejections {
            source: self.source.clone(),
            rejections,
        })
        .await
    }

    fn rejection(&self, origin: String, error: Error) -> Rejection {
        Rejection {
            source: self.source.to_string(),
            origin,
            error: Arc::new(error),
        }
    }
}

/// The stream of merged [`PodUpdate`]s, in order. Ends when the
/// [`PodConfig`] and all its sources are gone.
#[derive(Debug)]
pub struct PodUpdates {
    rx: mpsc::Receiver<PodUpdate>,
}

impl PodUpdates {
    /// The next update; `None` once the config has shut down.
    pub async fn recv(&mut self) -> Option<PodUpdate> {
        self.rx.recv().await
    }

    /// The next update if one is waiting.
    pub fn try_recv(&mut self) -> Option<PodUpdate> {
        self.rx.try_recv().ok()
    }
}

impl Stream for PodUpdates {
    type Item = PodUpdate;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PodUpdate>> {
        self.rx.poll_recv(cx)
    }
}

/// State shared by the handle and the merge task.
struct Shared {
    merger: Mutex<Merger>,
    sources: Mutex<BTreeSet<String>>,
    /// (source, origin) → rejection.
    rejections: Mutex<BTreeMap<(String, String), Rejection>>,
    rejection_tx: broadcast::Sender<Rejection>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the merger half-updated in
    // a way worse than losing the process; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Keeps a rejection; logs it as a warning and broadcasts it when it is
    /// new or its reason changed (a relist repeats known ones every period).
    fn record(&self, rejection: Rejection) {
        let key = (rejection.source.clone(), rejection.origin.clone());
        let mut map = lock(&self.rejections);
        let changed = map
            .get(&key)
            .is_none_or(|old| old.error.to_string() != rejection.error.to_string());
        map.insert(key, rejection.clone());
        drop(map);
        if changed {
            tracing::warn!(source = %rejection.source, origin = %rejection.origin, error = %rejection.error, "rejected pod manifest");
            let _ = self.rejection_tx.send(rejection);
        } else {
            tracing::debug!(source = %rejection.source, origin = %rejection.origin, error = %rejection.error, "pod manifest still rejected");
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    events_tx: mpsc::Sender<Envelope>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// The merged pod configuration of a node: its sources, the merger and the
/// update stream (upstream `PodConfig`).
///
/// Built and started with [`PodConfig::builder`]. Cheap to clone; the
/// sources and the merge task stop when the last clone is dropped or on
/// [`shutdown`](Self::shutdown).
#[derive(Clone)]
pub struct PodConfig {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PodConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodConfig")
            .field("sources", &*lock(&self.inner.shared.sources))
            .finish()
    }
}

/// Builder for a [`PodConfig`].
#[must_use]
pub struct PodConfigBuilder {
    node_name: String,
    sources: Vec<Box<dyn PodSource>>,
    updates_capacity: usize,
}

impl std::fmt::Debug for PodConfigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodConfigBuilder")
            .field("node_name", &self.node_name)
            .field(
                "sources",
                &self
                    .sources
                    .iter()
                    .map(|s| s.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl PodConfigBuilder {
    /// Adds a [`FileSource`] on `path` (a directory or one file) with the
    /// default periods.
    pub fn file(self, path: impl Into<std::path::PathBuf>) -> Self {
        let source = FileSource::new(path, self.node_name.clone());
        self.source(source)
    }

    /// Adds an [`HttpSource`] on `url` with no custom headers.
    pub fn http(self, url: impl Into<String>) -> Self {
        let source = HttpSource::new(url, self.node_name.clone());
        self.source(source)
    }

    /// Adds an [`ApiServerSource`] watching this node's pods.
    pub fn api_server(self, client: kube::Client) -> Self {
        let source = ApiServerSource::new(client, self.node_name.clone());
        self.source(source)
    }

    /// Adds any [`PodSource`], for example a configured [`FileSource`].
    pub fn source(mut self, source: impl PodSource) -> Self {
        self.sources.push(Box::new(source));
        self
    }

    /// The capacity of the update channel (default 50, as upstream).
    pub fn updates_capacity(mut self, capacity: usize) -> Self {
        self.updates_capacity = capacity.max(1);
        self
    }

    /// Registers the sources, spawns them and the merge task on the current
    /// tokio runtime, and returns the config and its update stream.
    ///
    /// # Panics
    /// Outside a tokio runtime (as `tokio::spawn`).
    pub fn start(self) -> (PodConfig, PodUpdates) {
        let (events_tx, events_rx) = mpsc::channel(EVENTS_CAPACITY);
        let (updates_tx, updates_rx) = mpsc::channel(self.updates_capacity);
        let (rejection_tx, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            merger: Mutex::new(Merger::new()),
            sources: Mutex::new(BTreeSet::new()),
            rejections: Mutex::new(BTreeMap::new()),
            rejection_tx,
        });
        let merge_task = tokio::spawn(merge_loop(shared.clone(), events_rx, updates_tx));
        let config = PodConfig {
            inner: Arc::new(Inner {
                shared,
                events_tx,
                tasks: Mutex::new(vec![merge_task]),
            }),
        };
        tracing::info!(node = %self.node_name, sources = self.sources.len(), "starting pod config");
        for source in self.sources {
            config.spawn_source(source);
        }
        (config, PodUpdates { rx: updates_rx })
    }
}

async fn merge_loop(
    shared: Arc<Shared>,
    mut events: mpsc::Receiver<Envelope>,
    updates: mpsc::Sender<PodUpdate>,
) {
    let mut consumer_gone = false;
    while let Some(envelope) = events.recv().await {
        let out = match envelope {
            Envelope::Update { source, op, pods } => {
                let output = lock(&shared.merger).merge(&source, op, pods);
                if op == PodOperation::Set {
                    // Merger rejections of a source are recomputed by each SET.
                    lock(&shared.rejections)
                        .retain(|(s, o), _| !(**s == *source && o.starts_with("pod ")));
                }
                for rejection in output.rejected {
                    shared.record(rejection);
                }
                output.updates
            }
            Envelope::Reject(rejection) => {
                shared.record(rejection);
                continue;
            }
            Envelope::ClearRejection { source, origin } => {
                lock(&shared.rejections).remove(&(source.to_string(), origin));
                continue;
            }
            Envelope::ReplaceRejections { source, rejections } => {
                lock(&shared.rejections)
                    .retain(|(s, o), _| **s != *source || o.starts_with("pod "));
                for rejection in rejections {
                    shared.record(rejection);
                }
                continue;
            }
            Envelope::Sync => vec![lock(&shared.merger).sync()],
        };
        if consumer_gone {
            continue;
        }
        for update in out {
            tracing::trace!(op = %update.op, source = %update.source, pods = update.pods.len(), "pod update");
            if updates.send(update).await.is_err() {
                // Nobody listens any more; keep the state current for queries.
                consumer_gone = true;
                break;
            }
        }
    }
}

impl PodConfig {
    /// A builder for the pods of node `node_name`.
    pub fn builder(node_name: impl Into<String>) -> PodConfigBuilder {
        PodConfigBuilder {
            node_name: node_name.into(),
            sources: Vec::new(),
            updates_capacity: UPDATES_CAPACITY,
        }
    }

    fn spawn_source(&self, source: Box<dyn PodSource>) {
        let sink = self.channel(source.name());
        let task = tokio::spawn(source.run(sink));
        lock(&self.inner.tasks).push(task);
    }

    /// Registers a source named `source` and returns its sink, for a source
    /// driven from outside (upstream `PodConfig.Channel`). The source then
    /// counts in [`seen_all_sources`](Self::seen_all_sources).
    pub fn channel(&self, source: &str) -> SourceSink {
        lock(&self.inner.shared.sources).insert(source.to_string());
        SourceSink {
            source: Arc::from(source),
            tx: self.inner.events_tx.clone(),
        }
    }

    /// Spawns another source on a running config.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn add_source(&self, source: impl PodSource) {
        self.spawn_source(Box::new(source));
    }

    /// The registered source names.
    pub fn sources(&self) -> Vec<String> {
        lock(&self.inner.shared.sources).iter().cloned().collect()
    }

    /// True when `seen` (the sources the consumer has had an update from)
    /// holds every registered source, and every registered source has sent
    /// at least one SET (upstream `SeenAllSources`).
    pub fn seen_all_sources(&self, seen: &HashSet<String>) -> bool {
        let sources = lock(&self.inner.shared.sources).clone();
        sources.iter().all(|s| seen.contains(s))
            && lock(&self.inner.shared.merger).seen_sources(sources.iter().map(String::as_str))
    }

    /// True when every registered source has sent at least one SET (the
    /// merger's half of [`seen_all_sources`](Self::seen_all_sources)).
    pub fn sources_ready(&self) -> bool {
        let sources = lock(&self.inner.shared.sources).clone();
        lock(&self.inner.shared.merger).seen_sources(sources.iter().map(String::as_str))
    }

    /// A copy of every pod of every source (upstream `MergedState`).
    pub fn merged_pods(&self) -> Vec<Pod> {
        lock(&self.inner.shared.merger).merged_state()
    }

    /// Asks for the whole merged state as one SET with source `*` on the
    /// update stream, after the updates already queued (upstream `Sync`).
    ///
    /// # Errors
    /// [`Error::Closed`] after shutdown.
    pub async fn sync(&self) -> Result<()> {
        self.inner
            .events_tx
            .send(Envelope::Sync)
            .await
            .map_err(|_| Error::Closed)
    }

    /// The manifests and pods currently rejected, by source then origin.
    /// A file that is fixed or removed leaves the list.
    pub fn rejected_manifests(&self) -> Vec<Rejection> {
        lock(&self.inner.shared.rejections)
            .values()
            .cloned()
            .collect()
    }

    /// A receiver of each new or changed rejection, as it happens.
    pub fn subscribe_rejections(&self) -> broadcast::Receiver<Rejection> {
        self.inner.shared.rejection_tx.subscribe()
    }

    /// Stops every source and the merge task. The update stream ends.
    pub fn shutdown(&self) {
        for task in lock(&self.inner.tasks).drain(..) {
            task.abort();
        }
    }
}
