//! The one error type of this crate.
//!
//! Every error that comes from a CRI call names the CRI method and, where the
//! call was about one object, its ID, so a log line is enough to find what
//! failed. gRPC status codes map to variants a caller can match on: a kubelet
//! treats `NotFound` on `StopContainer` as success, retries `Unavailable`,
//! and falls back when a method is `Unimplemented` (containerd 1.6 and
//! `GetContainerEvents`, containerd 1.7 and `RuntimeConfig`).

use std::fmt;
use std::time::Duration;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a failed CRI call was aimed: the method and, when known, the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The CRI method, as named in `runtime.v1` (for example `StopContainer`).
    pub method: &'static str,
    /// The sandbox, container or image the call was about, if any.
    pub id: Option<String>,
}

impl Call {
    /// A call to `method` about no particular object.
    pub fn new(method: &'static str) -> Self {
        Self { method, id: None }
    }

    /// A call to `method` about the object `id`.
    pub fn with_id(method: &'static str, id: impl Into<String>) -> Self {
        Self {
            method,
            id: Some(id.into()),
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{} {:?}", self.method, id),
            None => f.write_str(self.method),
        }
    }
}

/// Everything that can go wrong talking to a container runtime.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint is not a `unix://` socket path this client can dial.
    #[error("invalid CRI endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },

    /// The runtime's socket did not accept a connection before the deadline.
    #[error("could not connect to the CRI runtime at {endpoint} within {waited:?}: {reason}")]
    Connect {
        /// The endpoint dialled.
        endpoint: String,
        /// How long the client kept trying.
        waited: Duration,
        /// The last connection error.
        reason: String,
    },

    /// The runtime answered, but not with the `runtime.v1` API.
    #[error("the runtime at {endpoint} does not serve CRI runtime.v1: {reason}")]
    UnsupportedApi {
        /// The endpoint dialled.
        endpoint: String,
        /// What the runtime said.
        reason: String,
    },

    /// The object does not exist (gRPC `NotFound`).
    #[error("{call}: not found: {message}")]
    NotFound {
        /// The failed call.
        call: Call,
        /// The runtime's message.
        message: String,
    },

    /// The object already exists (gRPC `AlreadyExists`).
    #[error("{call}: already exists: {message}")]
    AlreadyExists {
        /// The failed call.
        call: Call,
        /// The runtime's message.
        message: String,
    },

    /// The runtime refused the request's content (gRPC `InvalidArgument` or
    /// `FailedPrecondition`).
    #[error("{call}: invalid request ({code:?}): {message}")]
    InvalidArgument {
        /// The failed call.
        call: Call,
        /// The exact gRPC code.
        code: tonic::Code,
        /// The runtime's message.
        message: String,
    },

    /// The call did not finish before its deadline (gRPC `DeadlineExceeded`).
    #[error("{call}: deadline exceeded: {message}")]
    DeadlineExceeded {
        /// The failed call.
        call: Call,
        /// The runtime's message.
        message: String,
    },

    /// The runtime could not be reached (gRPC `Unavailable`); worth retrying.
    #[error("{call}: runtime unavailable: {message}")]
    Unavailable {
        /// The failed call.
        call: Call,
        /// The runtime's message.
        message: String,
    },

    /// The runtime does not implement the method (gRPC `Unimplemented`).
    #[error("{call}: not implemented by the runtime: {message}")]
    Unimplemented {
        /// The failed call.
        call: Call,
        /// The runtime's message.
        message: String,
    },

    /// A message exceeded a size limit or the runtime ran out of a resource
    /// (gRPC `ResourceExhausted`, or `OutOfRange`, which is what tonic reports
    /// for a reply larger than the client's message limit).
    #[error("{call}: resource exhausted ({code:?}): {message}")]
    ResourceExhausted {
        /// The failed call.
        call: Call,
        /// The exact gRPC code.
        code: tonic::Code,
        /// The runtime's or transport's message.
        message: String,
    },

    /// The call was cancelled (gRPC `Cancelled`).
    #[error("{call}: cancelled: {message}")]
    Cancelled {
        /// The failed call.
        call: Call,
        /// The runtime's message.
        message: String,
    },

    /// Any other gRPC failure (`Internal`, `Unknown`, `PermissionDenied`, ...).
    #[error("{call}: {code:?}: {message}")]
    Rpc {
        /// The failed call.
        call: Call,
        /// The gRPC code.
        code: tonic::Code,
        /// The runtime's message.
        message: String,
    },

    /// The runtime answered, but the reply lacks something the CRI requires
    /// (an empty sandbox ID, a status without its body, ...).
    #[error("{call}: malformed reply: {reason}")]
    MalformedResponse {
        /// The call whose reply was malformed.
        call: Call,
        /// What was wrong with it.
        reason: String,
    },
}

impl Error {
    /// Maps a gRPC status from `call` to the matching variant.
    pub fn from_status(call: Call, status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::NotFound => Error::NotFound { call, message },
            tonic::Code::AlreadyExists => Error::AlreadyExists { call, message },
            code @ (tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition) => {
                Error::InvalidArgument {
                    call,
                    code,
                    message,
                }
            }
            code @ (tonic::Code::ResourceExhausted | tonic::Code::OutOfRange) => {
                Error::ResourceExhausted {
                    call,
                    code,
                    message,
                }
            }
            tonic::Code::DeadlineExceeded => Error::DeadlineExceeded { call, message },
            tonic::Code::Unavailable => Error::Unavailable { call, message },
            tonic::Code::Unimplemented => Error::Unimplemented { call, message },
            tonic::Code::Cancelled => Error::Cancelled { call, message },
            code => Error::Rpc {
                call,
                code,
                message,
            },
        }
    }

    /// A reply that is missing something the CRI requires.
    pub fn malformed(call: Call, reason: impl Into<String>) -> Self {
        Error::MalformedResponse {
            call,
            reason: reason.into(),
        }
    }

    /// The gRPC code this error corresponds to (`Unknown` for local errors
    /// such as a bad endpoint, `Internal` for a malformed reply).
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::InvalidEndpoint { .. } => tonic::Code::InvalidArgument,
            Error::Connect { .. } => tonic::Code::Unavailable,
            Error::UnsupportedApi { .. } => tonic::Code::Unimplemented,
            Error::NotFound { .. } => tonic::Code::NotFound,
            Error::AlreadyExists { .. } => tonic::Code::AlreadyExists,
            Error::InvalidArgument { code, .. }
            | Error::ResourceExhausted { code, .. }
            | Error::Rpc { code, .. } => *code,
            Error::DeadlineExceeded { .. } => tonic::Code::DeadlineExceeded,
            Error::Unavailable { .. } => tonic::Code::Unavailable,
            Error::Unimplemented { .. } => tonic::Code::Unimplemented,
            Error::Cancelled { .. } => tonic::Code::Cancelled,
            Error::MalformedResponse { .. } => tonic::Code::Internal,
        }
    }

    /// The call that failed, for errors that come from a CRI call.
    pub fn call(&self) -> Option<&Call> {
        match self {
            Error::NotFound { call, .. }
            | Error::AlreadyExists { call, .. }
            | Error::InvalidArgument { call, .. }
            | Error::DeadlineExceeded { call, .. }
            | Error::Unavailable { call, .. }
            | Error::Unimplemented { call, .. }
            | Error::ResourceExhausted { call, .. }
            | Error::Cancelled { call, .. }
            | Error::Rpc { call, .. }
            | Error::MalformedResponse { call, .. } => Some(call),
            Error::InvalidEndpoint { .. }
            | Error::Connect { .. }
            | Error::UnsupportedApi { .. } => None,
        }
    }

    /// True when the object the call was about does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True when the runtime does not implement the method.
    pub fn is_unimplemented(&self) -> bool {
        matches!(
            self,
            Error::Unimplemented { .. } | Error::UnsupportedApi { .. }
        )
    }

    /// Converts the error back into a gRPC status (used by the fake runtime's
    /// server so a remote client sees the same code).
    pub fn to_status(&self) -> tonic::Status {
        let message = match self {
            Error::NotFound { message, .. }
            | Error::AlreadyExists { message, .. }
            | Error::InvalidArgument { message, .. }
            | Error::DeadlineExceeded { message, .. }
            | Error::Unavailable { message, .. }
            | Error::Unimplemented { message, .. }
            | Error::ResourceExhausted { message, .. }
            | Error::Cancelled { message, .. }
            | Error::Rpc { message, .. } => message.clone(),
            other => other.to_string(),
        };
        tonic::Status::new(self.code(), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_matchable_variants() {
        let cases = [
            (tonic::Code::NotFound, "NotFound"),
            (tonic::Code::Unavailable, "Unavailable"),
            (tonic::Code::DeadlineExceeded, "DeadlineExceeded"),
            (tonic::Code::Unimplemented, "Unimplemented"),
            (tonic::Code::AlreadyExists, "AlreadyExists"),
            (tonic::Code::ResourceExhausted, "ResourceExhausted"),
            (tonic::Code::FailedPrecondition, "InvalidArgument"),
            (tonic::Code::OutOfRange, "ResourceExhausted"),
            (tonic::Code::Internal, "Rpc"),
        ];
        for (code, variant) in cases {
            let err = Error::from_status(
                Call::with_id("StopContainer", "abc"),
                tonic::Status::new(code, "boom"),
            );
            let debug = format!("{err:?}");
            assert!(
                debug.starts_with(variant),
                "{code:?} mapped to {debug}, want {variant}"
            );
            assert_eq!(err.code(), code);
            assert_eq!(err.to_status().code(), code);
        }
    }

    #[test]
    fn message_names_method_and_object() {
        let err = Error::from_status(
            Call::with_id("ContainerStatus", "c0ffee"),
            tonic::Status::not_found("no such container"),
        );
        assert_eq!(
            err.to_string(),
            "ContainerStatus \"c0ffee\": not found: no such container"
        );
        assert!(err.is_not_found());
        assert_eq!(err.call().and_then(|c| c.id.as_deref()), Some("c0ffee"));
    }
}
