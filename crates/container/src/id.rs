//! Container IDs that carry the runtime's own type.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A container's ID as the API shows it: `<type>://<id>`, where the type is
/// the runtime's name as its CRI `Version` call reports it (upstream
/// `kubecontainer.ContainerID`, `pkg/kubelet/container/runtime.go`). Never
/// assume `containerd`: CRI-O reports `cri-o`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ContainerId {
    /// The runtime's name (`containerd`, `cri-o`).
    pub runtime_type: String,
    /// The runtime's own ID of the container.
    pub id: String,
}

impl ContainerId {
    /// An ID of runtime `runtime_type`.
    pub fn new(runtime_type: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            runtime_type: runtime_type.into(),
            id: id.into(),
        }
    }

    /// Parses `<type>://<id>` (upstream `ParseContainerID`); both parts
    /// must be non-empty.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match s.split_once("://") {
            Some((t, id)) if !t.is_empty() && !id.is_empty() => Ok(Self::new(t, id)),
            _ => Err(Error::InvalidContainerId(s.to_owned())),
        }
    }

    /// True when no ID is set (upstream `IsEmpty`).
    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }
}

impl FromStr for ContainerId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.runtime_type, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_partial_ids() {
        let id = ContainerId::new("cri-o", "abc");
        assert_eq!(id.to_string(), "cri-o://abc");
        assert_eq!(ContainerId::parse("cri-o://abc").ok(), Some(id));
        for bad in ["abc", "://abc", "containerd://"] {
            assert!(ContainerId::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
