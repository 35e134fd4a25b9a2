//! The pod config of a kubelet: every pod source merged into one stream of
//! pod updates.
//!
//! A kubelet learns which pods to run from several sources at once: static
//! pod manifests in a directory, a manifest URL, and the API server. This
//! crate is the in-memory source of truth that merges them, as upstream's
//! `pkg/kubelet/config` does (`config.go`, `common.go`, `file.go`,
//! `file_linux.go`, `http.go`, `apiserver.go`, `sources.go`):
//!
//! - [`PodSource`]: the central trait. A source runs as a task and pushes
//!   its pods through a [`SourceSink`], usually as full snapshots
//!   ([`PodOperation::Set`]). A custom node agent plugs its own sources in
//!   here.
//! - Three sources: [`FileSource`] (static pods from a directory or a file,
//!   relisted every 20 s and watched with inotify so a change is seen within
//!   milliseconds rather than at the next relist), [`HttpSource`] (a
//!   manifest URL polled every 20 s) and [`ApiServerSource`] (a kube-rs
//!   watcher on the pods bound to this node).
//! - [`decode_static_pod`] / [`decode_static_pods`]: manifest decoding, the
//!   static pod defaults (name suffix, namespace, node name, deterministic
//!   UID, `kubernetes.io/config.hash`, the NoExecute toleration, phase
//!   Pending) and validation. The decoder never panics, whatever the bytes.
//! - [`Merger`]: per-source state keyed by UID, producing upstream's
//!   incremental ADD, UPDATE, DELETE, REMOVE and RECONCILE updates in
//!   upstream's order. Synchronous and I/O free.
//! - [`PodConfig`]: runs the sources and the merger, and hands out the
//!   [`PodUpdates`] stream, [`PodConfig::seen_all_sources`], and the
//!   manifests it had to reject ([`PodConfig::rejected_manifests`]).
//!
//! Errors are one enum, [`Error`]. A broken manifest never stops the rest:
//! it is logged with its file and reason, kept in the rejected list, and
//! every other pod goes on.
//!
//! # Example
//!
//! ```no_run
//! use std::collections::HashSet;
//! use futures::StreamExt;
//! use kubelet_podconfig::{PodConfig, PodOperation};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let (config, mut updates) = PodConfig::builder("node-1")
//!     .file("/etc/kubernetes/manifests")
//!     .api_server(client)
//!     .start();
//!
//! let mut seen = HashSet::new();
//! while let Some(update) = updates.next().await {
//!     match update.op {
//!         PodOperation::Add => println!("add {} pods from {}", update.pods.len(), update.source),
//!         PodOperation::Update | PodOperation::Delete => { /* HandlePodUpdates */ }
//!         PodOperation::Remove => { /* HandlePodRemoves */ }
//!         PodOperation::Reconcile => { /* HandlePodReconcile */ }
//!         PodOperation::Set => { /* only from PodConfig::sync */ }
//!     }
//!     seen.insert(update.source.clone());
//!     if config.seen_all_sources(&seen) {
//!         // every source has delivered its first snapshot
//!     }
//!     for rejected in config.rejected_manifests() {
//!         eprintln!("{}: {}", rejected.origin, rejected.error);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

mod apiserver;
mod config;
mod decode;
pub mod error;
mod file;
mod http;
mod merge;

pub use apiserver::ApiServerSource;
pub use config::{PodConfig, PodConfigBuilder, PodSource, PodUpdates, SourceSink};
pub use decode::{
    ManifestOrigin, apply_defaults, decode_static_pod, decode_static_pods, set_api_defaults,
    static_pod_name, validate_static_pod,
};
pub use error::{Error, Result};
pub use file::FileSource;
pub use http::HttpSource;
pub use merge::{MergeOutput, Merger};

pub use kubelet_container::pod::{
    ALL_SOURCE, API_SOURCE, CONFIG_HASH_ANNOTATION, CONFIG_MIRROR_ANNOTATION,
    CONFIG_SEEN_ANNOTATION, CONFIG_SOURCE_ANNOTATION, FILE_SOURCE, HTTP_SOURCE, pod_full_name,
};

/// At most this many bytes are read from one manifest (upstream
/// `maxConfigLength`, 10 MiB). The HTTP source applies it to bodies too.
pub const MAX_MANIFEST_BYTES: u64 = 10 * 1024 * 1024;

/// What a [`PodUpdate`] asks of its consumer (upstream
/// `kubetypes.PodOperation`, same order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PodOperation {
    /// The full set of pods of a source (from a source), or of all sources
    /// (from [`PodConfig::sync`], source `*`).
    Set,
    /// Pods seen for the first time. An empty ADD on a source's first
    /// snapshot says the source is ready.
    Add,
    /// Pods being gracefully deleted (`deletionTimestamp` set).
    Delete,
    /// Pods gone from their source: stop them now.
    Remove,
    /// Pods whose spec, labels, non-kubelet annotations or deletion fields
    /// changed.
    Update,
    /// Pods whose only change is their status.
    Reconcile,
}

impl std::fmt::Display for PodOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Set => "SET",
            Self::Add => "ADD",
            Self::Delete => "DELETE",
            Self::Remove => "REMOVE",
            Self::Update => "UPDATE",
            Self::Reconcile => "RECONCILE",
        })
    }
}

/// One change to the pod configuration (upstream `kubetypes.PodUpdate`).
#[derive(Debug, Clone, PartialEq)]
pub struct PodUpdate {
    /// What to do with the pods.
    pub op: PodOperation,
    /// The source the pods belong to (`file`, `http`, `api`, a custom one,
    /// or `*`).
    pub source: String,
    /// The pods, each a copy the consumer owns.
    pub pods: Vec<Pod>,
}

/// A manifest or pod that was refused, with why. The rest of its source's
/// pods are unaffected.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The source that sent it.
    pub source: String,
    /// The file path, URL, or `pod <name>_<namespace>` for merger rejections.
    pub origin: String,
    /// The reason.
    pub error: Arc<Error>,
}
