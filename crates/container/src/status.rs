//! The runtime's view of a pod: what sandboxes and containers exist for it,
//! rebuilt (by `kubelet-kuberuntime`) from the CRI and the `io.kubernetes.*`
//! labels and annotations.
//!
//! Mirrors upstream `pkg/kubelet/container/runtime.go` (`PodStatus`,
//! `Status`, `Pod`) and `kuberuntime_manager.go` (`GetPodStatus`, `GetPods`).

use crate::cri as api;

/// A container hash and the version of the field list it covers (upstream
/// `HashContainer`; computed by `kubelet-kuberuntime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContainerHash {
    /// The field-list version (0: unknown, e.g. a container made by another
    /// kubelet).
    pub version: u32,
    /// The 64-bit FNV-1a hash of the fields' JSON.
    pub value: u64,
}

impl ContainerHash {
    /// Parses the annotation value (hex) recorded under `version`.
    pub fn parse(version: u32, hex: &str) -> Option<Self> {
        u64::from_str_radix(hex, 16)
            .ok()
            .map(|value| Self { version, value })
    }

    /// The annotation value: lower-case hex.
    pub fn hex(&self) -> String {
        format!("{:x}", self.value)
    }
}

/// What kind of container a container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerType {
    /// An init container.
    Init,
    /// A regular (app) container.
    Regular,
    /// An ephemeral (debug) container.
    Ephemeral,
}

impl ContainerType {
    /// The annotation value upstream uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerType::Init => "init",
            ContainerType::Regular => "container",
            ContainerType::Ephemeral => "ephemeral",
        }
    }

    /// The type an annotation value names; anything unknown is a regular
    /// container, as upstream.
    pub fn parse(value: &str) -> Self {
        match value {
            "init" => ContainerType::Init,
            "ephemeral" => ContainerType::Ephemeral,
            _ => ContainerType::Regular,
        }
    }
}

/// A container's state, as the CRI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// The runtime cannot tell.
    Unknown,
}

impl From<api::ContainerState> for ContainerState {
    fn from(s: api::ContainerState) -> Self {
        match s {
            api::ContainerState::ContainerCreated => ContainerState::Created,
            api::ContainerState::ContainerRunning => ContainerState::Running,
            api::ContainerState::ContainerExited => ContainerState::Exited,
            api::ContainerState::ContainerUnknown => ContainerState::Unknown,
        }
    }
}

/// One container's status (upstream `kubecontainer.Status`).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStatus {
    /// The runtime's container ID.
    pub id: String,
    /// The container's name in the pod spec.
    pub name: String,
    /// Its state.
    pub state: ContainerState,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// Start time, nanoseconds since the epoch (0: never started).
    pub started_at: i64,
    /// Exit time, nanoseconds since the epoch (0: not exited).
    pub finished_at: i64,
    /// The exit code, when exited.
    pub exit_code: i32,
    /// The image as specified.
    pub image: String,
    /// The image the runtime resolved it to.
    pub image_ref: String,
    /// The spec hash recorded at creation.
    pub hash: Option<ContainerHash>,
    /// The restart count recorded at creation.
    pub restart_count: i32,
    /// Why it is in its state (`OOMKilled`, `Error`, `Completed`).
    pub reason: String,
    /// Details: the runtime's message, then, for an exited container, its
    /// termination message (`kubelet-kuberuntime` reads it),
    /// joined by `": "` as upstream.
    pub message: String,
    /// Init, regular or ephemeral.
    pub container_type: ContainerType,
    /// The pod's termination grace period when it was created.
    pub pod_termination_grace_period: Option<i64>,
}

/// Everything the runtime knows of one pod (upstream `kubecontainer.PodStatus`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodStatus {
    /// The pod's UID.
    pub uid: String,
    /// The pod's name.
    pub name: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's IPs, from its newest ready sandbox.
    pub ips: Vec<String>,
    /// Sandbox statuses, newest first.
    pub sandbox_statuses: Vec<api::PodSandboxStatus>,
    /// Container statuses, newest first.
    pub container_statuses: Vec<ContainerStatus>,
}

impl PodStatus {
    /// The newest status of the container named `name` (upstream
    /// `FindContainerStatusByName`).
    pub fn find_container_status_by_name(&self, name: &str) -> Option<&ContainerStatus> {
        self.container_statuses.iter().find(|c| c.name == name)
    }

    /// Containers that are running now.
    pub fn running_containers(&self) -> impl Iterator<Item = &ContainerStatus> {
        self.container_statuses
            .iter()
            .filter(|c| c.state == ContainerState::Running)
    }

    /// Whether any sandbox is ready.
    pub fn has_ready_sandbox(&self) -> bool {
        self.sandbox_statuses
            .iter()
            .any(|s| s.state() == api::PodSandboxState::SandboxReady)
    }

    /// The pod as a [`RunningPod`]: what would have to be killed.
    pub fn to_running_pod(&self) -> RunningPod {
        RunningPod {
            uid: self.uid.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            sandboxes: self
                .sandbox_statuses
                .iter()
                .map(|s| RunningSandbox {
                    id: s.id.clone(),
                    ready: s.state() == api::PodSandboxState::SandboxReady,
                    created_at: s.created_at,
                })
                .collect(),
            containers: self
                .container_statuses
                .iter()
                .map(RunningContainer::from)
                .collect(),
        }
    }
}

/// A sandbox of a [`RunningPod`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningSandbox {
    /// The sandbox ID.
    pub id: String,
    /// Whether it is ready.
    pub ready: bool,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
}

impl From<&ContainerStatus> for RunningContainer {
    fn from(c: &ContainerStatus) -> Self {
        RunningContainer {
            id: c.id.clone(),
            name: c.name.clone(),
            state: c.state,
            created_at: c.created_at,
            hash: c.hash,
            pod_termination_grace_period: c.pod_termination_grace_period,
        }
    }
}

/// A container of a [`RunningPod`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    /// The container ID.
    pub id: String,
    /// Its name in the pod spec.
    pub name: String,
    /// Its state.
    pub state: ContainerState,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// The spec hash recorded at creation.
    pub hash: Option<ContainerHash>,
    /// The pod's termination grace period recorded at creation, for killing
    /// it when the spec is gone.
    pub pod_termination_grace_period: Option<i64>,
}

/// A pod as found in the runtime, with or without a spec (upstream
/// `kubecontainer.Pod`): what the kubelet kills when it has to tear down a
/// pod it no longer knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunningPod {
    /// The pod's UID (from the labels).
    pub uid: String,
    /// The pod's name.
    pub name: String,
    /// The pod's namespace.
    pub namespace: String,
    /// Its sandboxes, newest first.
    pub sandboxes: Vec<RunningSandbox>,
    /// Its containers, newest first.
    pub containers: Vec<RunningContainer>,
}

impl RunningPod {
    /// Whether anything of it still runs.
    pub fn is_running(&self) -> bool {
        self.sandboxes.iter().any(|s| s.ready)
            || self
                .containers
                .iter()
                .any(|c| c.state == ContainerState::Running)
    }
}
