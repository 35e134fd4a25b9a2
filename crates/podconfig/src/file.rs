//! The file source: static pods from a directory or a single file.
//!
//! Mirrors upstream `pkg/kubelet/config/file.go` and `file_linux.go`:
//!
//! - the path is read at start and relisted every `fileCheckFrequency`
//!   (20 s); a missing path yields an empty snapshot so that the source
//!   still counts as seen;
//! - in a directory, names starting with `.` are skipped, entries are
//!   sorted, subdirectories are not recursed into, non-regular files are
//!   skipped, at most 10 MiB is read per file, and a bad manifest is logged,
//!   reported and skipped while the rest apply;
//! - the path is also watched with inotify (the `notify` crate), so a
//!   change is applied within milliseconds instead of at the next relist.
//!   Watch failures are retried every second with a backoff of 1 s to 20 s;
//!   a missing path is retried without backoff.
//!
//! Differences, all deliberate:
//! - upstream keys its store by pod `namespace/name` and maps files to keys;
//!   we key by file, so two files naming the same pod both reach the merger,
//!   which keeps the first and reports the second as a duplicate;
//! - a single-file path holding a broken manifest yields an empty snapshot
//!   (upstream sends nothing, so the source never becomes ready);
//! - for a single-file path we watch its directory and filter on the name
//!   (upstream watches the file itself and loses the watch when an editor
//!   replaces the file by a rename);
//! - a change seen through inotify is sent as an incremental ADD, UPDATE or
//!   REMOVE of that file's pod (O(1)), not as a SET of every file (O(files),
//!   upstream's `UndeltaStore`); when the pod's full name is shared with
//!   another file, a SET is sent so that duplicates are handled as upstream;
//! - on an inotify event we re-stat the file rather than trust the event
//!   kind, which covers renames into and out of the directory alike; an
//!   empty file seen through inotify is taken as "still being written" and
//!   left to the next event or relist.
//! - as upstream, a manifest that turns bad through an inotify event keeps
//!   its old pod until the next relist (so a half-written file does not
//!   kill a running pod); the relist then drops it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{PodSource, SourceSink};
use crate::decode::{ManifestOrigin, decode_static_pod};
use crate::error::Error;
use crate::{FILE_SOURCE, MAX_MANIFEST_BYTES, PodOperation};

/// Upstream `fileCheckFrequency` default.
const DEFAULT_RELIST_PERIOD: Duration = Duration::from_secs(20);
/// Upstream `retryPeriod` / `maxRetryPeriod` of `startWatch`.
const WATCH_RETRY: Duration = Duration::from_secs(1);
const WATCH_MAX_RETRY: Duration = Duration::from_secs(20);

/// Static pods from a directory of manifests, or from one manifest file
/// (the kubelet's `staticPodPath`). Source name `file`.
#[derive(Debug, Clone)]
#[must_use]
pub struct FileSource {
    path: PathBuf,
    node_name: String,
    relist_period: Duration,
    inotify: bool,
    max_manifest_bytes: u64,
}

impl FileSource {
    /// A source on `path` for node `node_name`, relisting every 20 s and
    /// watching with inotify. A trailing `/` is stripped, as upstream.
    pub fn new(path: impl Into<PathBuf>, node_name: impl Into<String>) -> Self {
        let path: PathBuf = path.into();
        let text = path.to_string_lossy();
        let trimmed = text.trim_end_matches('/');
        let path = if trimmed.is_empty() || trimmed.len() == text.len() {
            path
        } else {
            PathBuf::from(trimmed)
        };
        Self {
            path,
            node_name: node_name.into(),
            relist_period: DEFAULT_RELIST_PERIOD,
            inotify: true,
            max_manifest_bytes: MAX_MANIFEST_BYTES,
        }
    }

    /// How often the path is relisted (upstream `fileCheckFrequency`, 20 s).
    pub fn relist_period(mut self, period: Duration) -> Self {
        self.relist_period = period.max(Duration::from_millis(1));
        self
    }

    /// Whether to watch the path with inotify (default on). Off, changes are
    /// only seen at the next relist, as upstream's non-Linux builds.
    pub fn inotify(mut self, enabled: bool) -> Self {
        self.inotify = enabled;
        self
    }

    /// The most bytes read from one manifest (default 10 MiB); a larger
    /// file is rejected.
    pub fn max_manifest_bytes(mut self, limit: u64) -> Self {
        self.max_manifest_bytes = limit;
        self
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl PodSource for FileSource {
    fn name(&self) -> &str {
        FILE_SOURCE
    }

    async fn run(self: Box<Self>, sink: SourceSink) {
        tracing::info!(path = %self.path.display(), "watching static pod path");
        let mut state = FileState {
            cfg: *self,
            store: BTreeMap::new(),
            sink,
            single_file: false,
        };
        if state.run().await.is_err() {
            tracing::debug!("pod config closed, file source stops");
        }
    }
}

struct FileState {
    cfg: FileSource,
    /// file → its pod.
    store: BTreeMap<PathBuf, Pod>,
    sink: SourceSink,
    /// The path is one file; its parent directory is watched.
    single_file: bool,
}

/// What one listing found.
struct Listing {
    pods: BTreeMap<PathBuf, Pod>,
    rejected: Vec<(String, Error)>,
}

type WatchEvents = mpsc::UnboundedReceiver<notify::Result<notify::Event>>;

impl FileState {
    async fn run(&mut self) -> Result<(), Error> {
        let mut watcher: Option<(notify::RecommendedWatcher, WatchEvents)> = None;
        let mut next_watch = Instant::now();
        let mut watch_backoff = WATCH_RETRY;
        let mut relist = tokio::time::interval(self.cfg.relist_period);
        relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.cfg.inotify && watcher.is_none() && Instant::now() >= next_watch {
                match start_watch(&self.cfg.path) {
                    Ok(w) => {
                        self.single_file = self.cfg.path.is_file();
                        tracing::debug!(path = %self.cfg.path.display(), "inotify watch established");
                        watcher = Some(w);
                        watch_backoff = WATCH_RETRY;
                        // Catch what changed before the watch existed.
                        self.relist().await?;
                    }
                    Err((retryable, err)) => {
                        tracing::debug!(path = %self.cfg.path.display(), %err, "unable to watch static pod path");
                        next_watch = Instant::now() + watch_backoff;
                        if !retryable {
                            watch_backoff = (watch_backoff * 2).min(WATCH_MAX_RETRY);
                        }
                    }
                }
            }
            let retry_watch = self.cfg.inotify && watcher.is_none();
            tokio::select! {
                _ = relist.tick() => self.relist().await?,
                event = next_event(&mut watcher) => {
                    match event {
                        Some(Ok(event)) => {
                            let mut events = vec![event];
                            if let Some((_, rx)) = watcher.as_mut() {
                                while let Ok(Ok(more)) = rx.try_recv() {
                                    events.push(more);
                                }
                            }
                            if self.handle_events(events).await? {
                                // The watched path itself went away.
                                watcher = None;
                                next_watch = Instant::now() + WATCH_RETRY;
                                self.relist().await?;
                            }
                        }
                        Some(Err(err)) => {
                            tracing::warn!(path = %self.cfg.path.display(), %err, "error while watching static pod path");
                            watcher = None;
                            next_watch = Instant::now() + watch_backoff;
                            watch_backoff = (watch_backoff * 2).min(WATCH_MAX_RETRY);
                            self.relist().await?;
                        }
                        None => {
                            watcher = None;
                            next_watch = Instant::now() + WATCH_RETRY;
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_watch), if retry_watch => {}
            }
        }
    }

    /// Lists the path and sends the snapshot (upstream `listConfig` /
    /// `resetStoreFromPath`).
    async fn relist(&mut self) -> Result<(), Error> {
        let path = self.cfg.path.clone();
        let node = self.cfg.node_name.clone();
        let limit = self.cfg.max_manifest_bytes;
        let listing = tokio::task::spawn_blocking(move || list_path(&path, &node, limit))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "static pod listing task failed");
                Listing {
                    pods: BTreeMap::new(),
                    rejected: Vec::new(),
                }
            });
        self.sink.replace_rejections(listing.rejected).await?;
        self.store = listing.pods;
        self.send_snapshot().await
    }

    async fn send_snapshot(&self) -> Result<(), Error> {
        self.sink.set(self.store.values().cloned().collect()).await
    }

    /// Applies a batch of inotify events. Returns true when the watched path
    /// itself was removed or renamed.
    async fn handle_events(&mut self, events: Vec<notify::Event>) -> Result<bool, Error> {
        let mut root_gone = false;
        let mut rescan = false;
        let mut touched: Vec<PathBuf> = Vec::new();
        for event in events {
            if event.need_rescan() {
                rescan = true;
            }
            if matches!(
                event.kind,
                EventKind::Access(notify::event::AccessKind::Open(_))
            ) || matches!(
                event.kind,
                EventKind::Access(notify::event::AccessKind::Read)
            ) {
                continue;
            }
            for path in event.paths {
                if self.single_file {
                    if path == self.cfg.path && !touched.contains(&path) {
                        touched.push(path);
                    } else if Some(path.as_path()) == self.cfg.path.parent() && !path.exists() {
                        root_gone = true;
                    }
                    continue;
                }
                if path == self.cfg.path {
                    if !self.cfg.path.exists() {
                        root_gone = true;
                    }
                    continue;
                }
                if path.parent() != Some(self.cfg.path.as_path()) || is_dotfile(&path) {
                    tracing::trace!(path = %path.display(), "ignoring event");
                    continue;
                }
                if !touched.contains(&path) {
                    touched.push(path);
                }
            }
        }
        if root_gone {
            return Ok(true);
        }
        if rescan {
            self.relist().await?;
            return Ok(false);
        }
        // One file's change goes to the merger as an incremental op, which
        // costs O(1) instead of a SET of every file (upstream's UndeltaStore
        // resends everything on any change). Whenever a full name is shared
        // with another file, a SET keeps upstream's duplicate handling.
        let mut ops: Vec<(PodOperation, Pod)> = Vec::new();
        let mut need_set = false;
        for path in touched {
            let Some((old, new)) = self.refresh_file(&path).await? else {
                continue;
            };
            for pod in old.iter().chain(new.iter()) {
                need_set |= self.name_shared(&path, pod);
            }
            match (old, new) {
                (Some(old), None) => ops.push((PodOperation::Remove, old)),
                (None, Some(new)) => ops.push((PodOperation::Add, new)),
                (Some(old), Some(new)) if old.metadata.uid == new.metadata.uid => {
                    ops.push((PodOperation::Update, new))
                }
                (Some(old), Some(new)) => {
                    ops.push((PodOperation::Remove, old));
                    ops.push((PodOperation::Add, new));
                }
                (None, None) => {}
            }
        }
        if need_set {
            self.send_snapshot().await?;
        } else {
            for (op, pod) in ops {
                self.sink.send(op, vec![pod]).await?;
            }
        }
        Ok(false)
    }

    /// Whether another file's pod has the same full name as `pod`.
    fn name_shared(&self, path: &Path, pod: &Pod) -> bool {
        self.store.iter().any(|(p, other)| {
            p != path
                && other.metadata.name == pod.metadata.name
                && other.metadata.namespace == pod.metadata.namespace
        })
    }

    /// Re-reads one file after an event and updates the store. Returns the
    /// old and new pod of the file when the store changed.
    async fn refresh_file(
        &mut self,
        path: &Path,
    ) -> Result<Option<(Option<Pod>, Option<Pod>)>, Error> {
        let node = self.cfg.node_name.clone();
        let limit = self.cfg.max_manifest_bytes;
        let p = path.to_path_buf();
        let outcome = tokio::task::spawn_blocking(move || refresh_one(&p, &node, limit))
            .await
            .unwrap_or(Refresh::Ignore);
        let origin = path.display().to_string();
        match outcome {
            Refresh::Gone => {
                self.sink.clear_rejection(origin).await?;
                Ok(self.store.remove(path).map(|old| (Some(old), None)))
            }
            Refresh::Ignore => Ok(None),
            Refresh::Pod(pod) => {
                self.sink.clear_rejection(origin).await?;
                if self.store.get(path) == Some(&pod) {
                    return Ok(None);
                }
                let old = self.store.insert(path.to_path_buf(), (*pod).clone());
                Ok(Some((old, Some(*pod))))
            }
            Refresh::Bad(err) => {
                // As upstream's watch path: report, keep the old pod until
                // the next relist.
                self.sink.reject(origin, err).await?;
                Ok(None)
            }
        }
    }
}

async fn next_event(
    watcher: &mut Option<(notify::RecommendedWatcher, WatchEvents)>,
) -> Option<notify::Result<notify::Event>> {
    match watcher {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Creates the inotify watch: on the directory, or for a single file on its
/// parent directory (so that an editor replacing the file by a rename is
/// still seen). The error says whether it is retryable without backoff (the
/// path does not exist).
fn start_watch(path: &Path) -> Result<(notify::RecommendedWatcher, WatchEvents), (bool, String)> {
    if !path.exists() {
        return Err((true, "path does not exist, ignoring".into()));
    }
    let path = match path.parent() {
        Some(parent) if path.is_file() && !parent.as_os_str().is_empty() => parent,
        _ => path,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })
    .map_err(|e| (false, format!("unable to create inotify: {e}")))?;
    watcher
        .watch(path, RecursiveMode::NonRecursive)
        .map_err(|e| {
            (
                false,
                format!("unable to create inotify for path {}: {e}", path.display()),
            )
        })?;
    Ok((watcher, rx))
}

fn is_dotfile(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

enum Refresh {
    Gone,
    Ignore,
    Pod(Box<Pod>),
    Bad(Error),
}

fn refresh_one(path: &Path, node: &str, limit: u64) -> Refresh {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Refresh::Gone,
        Err(e) => Refresh::Bad(io_err(path, e)),
        Ok(meta) if meta.is_dir() => Refresh::Ignore,
        Ok(meta) if !meta.is_file() => Refresh::Gone,
        Ok(meta) if meta.len() == 0 => Refresh::Ignore,
        Ok(_) => match read_manifest(path, node, limit) {
            Ok(pod) => Refresh::Pod(Box::new(pod)),
            Err(e) => Refresh::Bad(e),
        },
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        origin: path.display().to_string(),
        source,
    }
}

/// Reads and decodes one manifest, at most `limit` bytes
/// (upstream `extractFromFile` with `utilio.ReadAtMost`).
fn read_manifest(path: &Path, node: &str, limit: u64) -> Result<Pod, Error> {
    tracing::trace!(path = %path.display(), "reading manifest file");
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut data = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| io_err(path, e))?;
    if data.len() as u64 > limit {
        return Err(Error::TooLarge {
            origin: path.display().to_string(),
            limit,
        });
    }
    decode_static_pod(&data, &ManifestOrigin::file(path), node)
}

/// upstream `resetStoreFromPath` + `extractFromDir`.
fn list_path(path: &Path, node: &str, limit: u64) -> Listing {
    let mut listing = Listing {
        pods: BTreeMap::new(),
        rejected: Vec::new(),
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::NotFound {
                tracing::info!(path = %path.display(), "static pod path does not exist, ignoring");
            } else {
                tracing::error!(path = %path.display(), error = %e, "unable to read static pod path");
            }
            return listing;
        }
    };
    if meta.is_file() {
        match read_manifest(path, node, limit) {
            Ok(pod) => {
                listing.pods.insert(path.to_path_buf(), pod);
            }
            Err(e) => listing.rejected.push((path.display().to_string(), e)),
        }
        return listing;
    }
    if !meta.is_dir() {
        tracing::error!(path = %path.display(), "static pod path is not a directory or file");
        return listing;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "unable to list static pod directory");
            return listing;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !is_dotfile(p))
        .collect();
    files.sort();
    for file in files {
        let meta = match std::fs::metadata(&file) {
            Ok(meta) => meta,
            Err(e) => {
                tracing::error!(path = %file.display(), error = %e, "can't get metadata");
                continue;
            }
        };
        if meta.is_dir() {
            tracing::error!(path = %file.display(), "not recursing into manifest path");
        } else if meta.is_file() {
            match read_manifest(&file, node, limit) {
                Ok(pod) => {
                    listing.pods.insert(file, pod);
                }
                Err(e) => {
                    // Logged as a warning when first reported (PodConfig).
                    tracing::debug!(path = %file.display(), error = %e, "can't process manifest file");
                    listing.rejected.push((file.display().to_string(), e));
                }
            }
        } else {
            tracing::error!(path = %file.display(), "manifest path is not a directory or file");
        }
    }
    listing
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\nspec:\n  containers:\n  - name: c\n    image: busybox\n";

    fn pod(name: &str) -> String {
        POD.replace("NAME", name)
    }

    #[test]
    fn trailing_slash_is_stripped() {
        assert_eq!(
            FileSource::new("/etc/kubernetes/manifests/", "n").path(),
            Path::new("/etc/kubernetes/manifests")
        );
        assert_eq!(FileSource::new("/", "n").path(), Path::new("/"));
    }

    #[test]
    fn listing_skips_dotfiles_subdirs_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), pod("b")).unwrap();
        std::fs::write(dir.path().join("a.json"), r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#).unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), pod("hidden")).unwrap();
        std::fs::write(
            dir.path().join("broken.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: [",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c.yaml"), pod("c")).unwrap();
        let listing = list_path(dir.path(), "node", 1024);
        let names: Vec<_> = listing
            .pods
            .values()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a-node", "b-node"]);
        assert_eq!(listing.rejected.len(), 1);
        assert!(listing.rejected[0].0.ends_with("broken.yaml"));
    }

    #[test]
    fn oversized_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let big = format!("{}\n# {}\n", pod("big"), "x".repeat(200));
        std::fs::write(dir.path().join("big.yaml"), big).unwrap();
        let listing = list_path(dir.path(), "node", 100);
        assert!(listing.pods.is_empty());
        assert!(matches!(
            listing.rejected[0].1,
            Error::TooLarge { limit: 100, .. }
        ));
    }

    #[test]
    fn missing_path_lists_nothing_and_single_file_works() {
        let dir = tempfile::tempdir().unwrap();
        let listing = list_path(&dir.path().join("nope"), "node", 1024);
        assert!(listing.pods.is_empty() && listing.rejected.is_empty());
        let file = dir.path().join("one.yaml");
        std::fs::write(&file, pod("one")).unwrap();
        let listing = list_path(&file, "node", 1024);
        assert_eq!(listing.pods.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn non_regular_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), pod("a")).unwrap();
        let listing = list_path(dir.path(), "node", 1024);
        assert_eq!(listing.pods.len(), 1);
        assert!(listing.rejected.is_empty());
    }
}
