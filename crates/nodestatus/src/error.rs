//! The crate's one error type.

use kube::core::Status;

/// Why a call to the API server about the Node failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request. A 403 says which verb on
    /// which resource the kubelet's credentials lack.
    #[error("{verb} {resource} {name:?}: {}", describe(.verb, .resource, .source))]
    Api {
        /// `create`, `get`, `patch`.
        verb: &'static str,
        /// `nodes` or `nodes/status`.
        resource: &'static str,
        /// The Node's name.
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The status patch could not be encoded.
    #[error("encoding the status patch of node {name:?}: {source}")]
    Encode {
        /// The Node's name.
        name: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// Every try of a status update failed (upstream's "update node status
    /// exceeds retry count"); the last error is kept.
    #[error("update node status exceeds retry count ({tries} tries): {last}")]
    RetriesExhausted {
        /// How many tries were made.
        tries: usize,
        /// The last try's error.
        #[source]
        last: Box<Error>,
    },
}

fn describe(verb: &str, resource: &str, source: &kube::Error) -> String {
    match api_status(source) {
        Some(s) if s.is_forbidden() => format!(
            "forbidden: the kubelet's credentials may not {verb} {resource} ({})",
            s.message
        ),
        Some(s) if s.is_not_found() => format!("not found ({})", s.message),
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
            Error::Encode { .. } => None,
        }
    }

    /// The Node does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status().is_some_and(Status::is_not_found)
    }

    /// The Node already exists (409 AlreadyExists).
    pub fn is_already_exists(&self) -> bool {
        self.status().is_some_and(Status::is_already_exists)
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
        let status = Status::failure(
            "nodes \"n\" is forbidden: User \"system:node:n\" cannot patch resource \"nodes/status\"",
            "Forbidden",
        )
        .with_code(403);
        let e = Error::api(
            "patch",
            "nodes/status",
            "n",
            kube::Error::Api(status.boxed()),
        );
        assert!(e.is_forbidden());
        let text = e.to_string();
        assert!(
            text.starts_with("patch nodes/status \"n\": forbidden: the kubelet's credentials may not patch nodes/status"),
            "{text}"
        );
        let wrapped = Error::RetriesExhausted {
            tries: 5,
            last: Box::new(e),
        };
        assert!(wrapped.is_forbidden());
        assert!(wrapped.to_string().contains("may not patch nodes/status"));
    }
}
