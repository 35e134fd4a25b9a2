//! The one error type of this crate.
//!
//! Every error names where the bad input came from (a manifest file, a URL,
//! a pod's full name), so a log line or a [`Rejection`](crate::Rejection) is
//! enough to find and fix it.

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong reading, validating or merging pod config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A manifest is larger than the per-manifest limit (10 MiB, upstream's
    /// `maxConfigLength`).
    #[error("{origin}: manifest is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The file or URL.
        origin: String,
        /// The limit in bytes.
        limit: u64,
    },

    /// A manifest is not YAML or JSON, not a `v1` `Pod` (or `PodList` where
    /// one is accepted), or does not match the Pod schema.
    #[error("{origin}: could not decode manifest: {reason}")]
    Decode {
        /// The file or URL.
        origin: String,
        /// What the decoder said.
        reason: String,
    },

    /// A manifest decoded but the pod is not valid (upstream's
    /// `ValidatePodCreate`, plus the static pod rules).
    #[error("{origin}: invalid pod: {}", .errors.join("; "))]
    Invalid {
        /// The file or URL.
        origin: String,
        /// One entry per failed rule, `field: reason`.
        errors: Vec<String>,
    },

    /// A file or directory could not be read.
    #[error("{origin}: {source}")]
    Io {
        /// The path.
        origin: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The manifest URL could not be fetched (connection, timeout, status).
    #[error("{url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// Two pods of one update from one source share a full name
    /// (`name_namespace`); the later one is dropped (upstream's
    /// `filterInvalidPods`).
    #[error("pod {full_name} from source {source_name}: duplicate pod name, ignoring")]
    DuplicateName {
        /// The source that sent both.
        source_name: String,
        /// `name_namespace`.
        full_name: String,
    },

    /// A pod claims a UID that another source already owns. Upstream does not
    /// check this; we reject the later claim.
    #[error(
        "pod {full_name} from source {source_name}: UID {uid} is already claimed by source {owner}"
    )]
    UidConflict {
        /// The source whose pod was rejected.
        source_name: String,
        /// `name_namespace` of the rejected pod.
        full_name: String,
        /// The contested UID.
        uid: String,
        /// The source that owns the UID.
        owner: String,
    },

    /// A pod without a UID reached the merger (static pod sources generate
    /// one; a user's own source must set it).
    #[error("pod {full_name} from source {source_name} has no UID")]
    MissingUid {
        /// The source.
        source_name: String,
        /// `name_namespace` of the pod.
        full_name: String,
    },

    /// The pod config (its merge task) has shut down.
    #[error("the pod config has shut down")]
    Closed,
}
