//! The crate's one error type.

use kube::core::Status;

/// Why an event could not be written, or a recorder not built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API server refused or failed a request about an event. A 403
    /// says which verb the kubelet's credentials lack.
    #[error("{verb} event {namespace}/{name}: {}", describe(.verb, .source))]
    Api {
        /// `create` or `patch`.
        verb: &'static str,
        /// The event's namespace.
        namespace: String,
        /// The event's name.
        name: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The recorder's settings do not make sense (a write rate without a
    /// burst, an empty queue, no node name).
    #[error("invalid event recorder configuration: {0}")]
    InvalidConfig(String),
}

fn describe(verb: &str, source: &kube::Error) -> String {
    match api_status(source) {
        Some(s) if s.is_forbidden() => format!(
            "forbidden: the kubelet's credentials may not {verb} events ({})",
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
        namespace: &str,
        name: &str,
        source: kube::Error,
    ) -> Self {
        Error::Api {
            verb,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source: Box::new(source),
        }
    }

    fn status(&self) -> Option<&Status> {
        match self {
            Error::Api { source, .. } => api_status(source),
            Error::InvalidConfig(_) => None,
        }
    }

    /// The event does not exist (404): a PATCH of a deleted event is
    /// followed by a create.
    pub fn is_not_found(&self) -> bool {
        self.status().is_some_and(Status::is_not_found)
    }

    /// An event of that name exists already (409 AlreadyExists).
    pub fn is_already_exists(&self) -> bool {
        self.status().is_some_and(Status::is_already_exists)
    }

    /// Whether writing the event again may succeed: the request did not
    /// reach the API server or its answer was lost (upstream `recordEvent`
    /// retries transport errors; an answer from the server, a `Status`, is
    /// final, and so is a request that cannot be built).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Api { source, .. } => matches!(
                **source,
                kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)
            ),
            Error::InvalidConfig(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_names_the_verb_and_server_answers_are_final() {
        let status = Status::failure("events is forbidden", "Forbidden").with_code(403);
        let e = Error::api(
            "create",
            "default",
            "web.1",
            kube::Error::Api(status.boxed()),
        );
        assert!(!e.is_retriable());
        assert!(!e.is_not_found());
        let text = e.to_string();
        assert!(
            text.starts_with(
                "create event default/web.1: forbidden: the kubelet's credentials may not create events"
            ),
            "{text}"
        );
        let lost = Error::api(
            "patch",
            "default",
            "web.1",
            kube::Error::Service("reset".into()),
        );
        assert!(lost.is_retriable());
        let gone = Status::failure("not found", "NotFound").with_code(404);
        assert!(Error::api("patch", "d", "n", kube::Error::Api(gone.boxed())).is_not_found());
    }
}
