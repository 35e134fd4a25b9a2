//! The one error type of the status manager.

/// What went wrong recording a status or syncing it with the API server.
/// Every variant names the pod; the API variants name the verb and the
/// resource.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The API server refused the kubelet's credentials (403): the node's
    /// RBAC or the NodeRestriction admission does not allow `verb` on
    /// `resource`.
    #[error(
        "{verb} {resource} {namespace}/{name}: forbidden: the kubelet may not {verb} {resource}: {message}"
    )]
    Forbidden {
        /// `get`, `patch` or `delete`.
        verb: &'static str,
        /// `pods` or `pods/status`.
        resource: &'static str,
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
        /// The API server's message.
        message: String,
    },
    /// Any other failed request: the API server unreachable, a 5xx, a
    /// conflict on the UID precondition, an undecodable answer. The status
    /// is kept and sent again next round.
    #[error("{verb} {resource} {namespace}/{name}: {source}")]
    Request {
        /// `get`, `patch` or `delete`.
        verb: &'static str,
        /// `pods` or `pods/status`.
        resource: &'static str,
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
        /// What the client reported.
        #[source]
        source: Box<kube::Error>,
    },
    /// A terminated container would go back to running although its restart
    /// policy does not allow it (upstream `checkContainerStateTransition`):
    /// the status is refused and the previous one kept.
    #[error(
        "pod {pod}: terminated {kind} {container} attempted illegal transition to non-terminated state"
    )]
    IllegalTransition {
        /// The pod's `namespace/name`.
        pod: String,
        /// `container` or `init container`.
        kind: &'static str,
        /// The container's name.
        container: String,
    },
}

impl StatusError {
    /// The error for a failed request, a 403 becoming
    /// [`StatusError::Forbidden`].
    pub(crate) fn request(
        verb: &'static str,
        resource: &'static str,
        namespace: &str,
        name: &str,
        source: kube::Error,
    ) -> Self {
        match source {
            kube::Error::Api(status) if status.code == 403 => StatusError::Forbidden {
                verb,
                resource,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                message: status.message,
            },
            source => StatusError::Request {
                verb,
                resource,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source: Box::new(source),
            },
        }
    }

    /// The verb of a failed request, if this is one.
    pub fn verb(&self) -> Option<&'static str> {
        match self {
            StatusError::Forbidden { verb, .. } | StatusError::Request { verb, .. } => Some(verb),
            StatusError::IllegalTransition { .. } => None,
        }
    }
}
