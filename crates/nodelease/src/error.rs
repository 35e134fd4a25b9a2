//! The crate's one error type.

use kube::core::Status;

/// Why a call to the API server about the lease failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request. A 403 says which verb on
    /// which resource the kubelet's credentials lack.
    #[error("{verb} {resource} {name:?}: {}", describe(.verb, .resource, .source))]
    Api {
        /// `get`, `create`, `update`.
        verb: &'static str,
        /// `leases` (in `kube-node-lease`) or `nodes`.
        resource: &'static str,
        /// The object's name: the node's.
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Every immediate retry of a renewal failed (upstream's "failed 5
    /// attempts to update lease"); the last error is kept.
    #[error("failed {tries} attempts to update lease: {last}")]
    RetriesExhausted {
        /// How many updates were tried.
        tries: usize,
        /// The last one's error.
        #[source]
        last: Box<Error>,
    },
    /// The lease could not be read back after a conflict (its Node is
    /// missing, so it is not created again yet).
    #[error("lease {name:?} is gone and was not created again")]
    Gone {
        /// The lease's name.
        name: String,
    },
}

fn describe(verb: &str, resource: &str, source: &kube::Error) -> String {
    match api_status(source) {
        Some(s) if s.is_forbidden() => format!(
            "forbidden: the kubelet's credentials may not {verb} {resource} ({})",
            s.message
        ),
        Some(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        None => source.to_string(),
    }
}

fn api_status(e: &kube::Error) -> Option<&Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

impl Error {
    pub(crate) fn api(
        verb: &'static str,
        resource: &'static str,
        name: &str,
        source: kube::Error,
    ) -> Self {
        Error::Api {
            verb,
            resource,
            name: name.to_owned(),
            source,
        }
    }

    fn status(&self) -> Option<&Status> {
        match self {
            Error::Api { source, .. } => api_status(source),
            Error::RetriesExhausted { last, .. } => last.status(),
            Error::Gone { .. } => None,
        }
    }

    /// The object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status().is_some_and(Status::is_not_found)
    }

    /// Someone else changed the lease since it was read (409 Conflict).
    pub fn is_conflict(&self) -> bool {
        self.status().is_some_and(Status::is_conflict)
    }

    /// The kubelet may not do this (403).
    pub fn is_forbidden(&self) -> bool {
        self.status().is_some_and(Status::is_forbidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_names_the_verb_and_resource() {
        let status = Status::failure("leases.coordination.k8s.io \"n\" is forbidden", "Forbidden")
            .with_code(403);
        let e = Error::api("update", "leases", "n", kube::Error::Api(status.boxed()));
        assert!(e.is_forbidden());
        assert!(!e.is_conflict());
        let text = e.to_string();
        assert!(
            text.starts_with(
                "update leases \"n\": forbidden: the kubelet's credentials may not update leases"
            ),
            "{text}"
        );
    }
}
