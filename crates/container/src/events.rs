//! Kubernetes events, without I/O: what a component records so that
//! `kubectl describe pod` tells a user what happened.
//!
//! Mirrors upstream's recorder interface
//! (`staging/src/k8s.io/client-go/tools/record/event.go`, `EventRecorder`),
//! the kubelet's event reasons (`pkg/kubelet/events/event.go`) and the
//! object references of container events (`pkg/kubelet/container/ref.go`,
//! `GenerateContainerRef`).
//!
//! Components take an `Arc<dyn` [`EventRecorder`]`>` and call
//! [`EventRecorder::event`], which never blocks; [`NoopRecorder`] is the
//! default, [`FakeRecorder`] keeps what it is given for tests (upstream
//! `record.FakeRecorder`), and the `kubelet-events` crate writes them to the
//! API server as `core/v1` Events.
//!
//! ```
//! use std::sync::Arc;
//! use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
//! use kubelet_container::events::{
//!     container_ref, reason, EventRecorder, EventType, FakeRecorder,
//! };
//!
//! let pod = Pod {
//!     metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
//!         name: Some("web".into()),
//!         namespace: Some("default".into()),
//!         uid: Some("uid-1".into()),
//!         ..Default::default()
//!     },
//!     spec: Some(PodSpec {
//!         containers: vec![Container { name: "app".into(), ..Default::default() }],
//!         ..Default::default()
//!     }),
//!     ..Default::default()
//! };
//! let recorder = Arc::new(FakeRecorder::new());
//! let r: Arc<dyn EventRecorder> = recorder.clone();
//! let object = container_ref(&pod, "app");
//! assert_eq!(object.field_path.as_deref(), Some("spec.containers{app}"));
//! r.event(&object, EventType::Normal, reason::STARTED_CONTAINER, "Started container app".into());
//! assert_eq!(recorder.strings(), ["Normal Started Started container app"]);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;

/// The object an event is about (upstream `v1.ObjectReference`): for a
/// container, its pod with `fieldPath: spec.containers{name}`.
pub use k8s_openapi::api::core::v1::ObjectReference;

/// The type of an event (upstream `v1.EventTypeNormal`,
/// `v1.EventTypeWarning`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// Something expected happened (`Normal`).
    Normal,
    /// Something may need attention (`Warning`).
    Warning,
}

impl EventType {
    /// The API's spelling: `Normal` or `Warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where components record events (upstream `record.EventRecorder`).
///
/// `event` must never block nor fail: an implementation that cannot keep
/// up drops events (and counts them), as upstream's broadcaster does.
pub trait EventRecorder: Send + Sync {
    /// Records that `reason` happened to `object`. `reason` is short,
    /// UpperCamelCase and machine-readable (one of [`reason`]'s constants);
    /// `message` is for humans. The event goes to the object's namespace
    /// (`default` for cluster-scoped objects such as the Node).
    fn event(&self, object: &ObjectReference, event_type: EventType, reason: &str, message: String);

    /// As [`event`](Self::event), with `annotations` on the Event
    /// (upstream `AnnotatedEventf`, which the eviction manager uses for
    /// `Evicted`). The default drops the annotations.
    fn annotated_event(
        &self,
        object: &ObjectReference,
        annotations: &BTreeMap<String, String>,
        event_type: EventType,
        reason: &str,
        message: String,
    ) {
        let _ = annotations;
        self.event(object, event_type, reason, message);
    }
}

/// An [`EventRecorder`] that records nothing: the default of every
/// component that takes one.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopRecorder;

impl EventRecorder for NoopRecorder {
    fn event(&self, _: &ObjectReference, _: EventType, _: &str, _: String) {}
}

/// One event a [`FakeRecorder`] was given.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    /// The object it is about.
    pub object: ObjectReference,
    /// Normal or Warning.
    pub event_type: EventType,
    /// The reason.
    pub reason: String,
    /// The message.
    pub message: String,
    /// The annotations of an [`EventRecorder::annotated_event`] (empty for
    /// a plain event).
    pub annotations: BTreeMap<String, String>,
}

impl fmt::Display for RecordedEvent {
    /// `<type> <reason> <message>`, as upstream's `FakeRecorder` writes
    /// events to its channel.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.event_type, self.reason, self.message)
    }
}

/// An [`EventRecorder`] that keeps every event in memory, for tests
/// (upstream `record.FakeRecorder`).
#[derive(Debug, Default)]
pub struct FakeRecorder {
    events: Mutex<Vec<RecordedEvent>>,
}

impl FakeRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The events recorded so far, oldest first.
    pub fn events(&self) -> Vec<RecordedEvent> {
        crate::lock(&self.events).clone()
    }

    /// The events recorded so far as `<type> <reason> <message>` strings.
    pub fn strings(&self) -> Vec<String> {
        crate::lock(&self.events)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Takes the events recorded so far, leaving none.
    pub fn take(&self) -> Vec<RecordedEvent> {
        std::mem::take(&mut *crate::lock(&self.events))
    }
}

impl EventRecorder for FakeRecorder {
    fn event(
        &self,
        object: &ObjectReference,
        event_type: EventType,
        reason: &str,
        message: String,
    ) {
        self.annotated_event(object, &BTreeMap::new(), event_type, reason, message);
    }

    fn annotated_event(
        &self,
        object: &ObjectReference,
        annotations: &BTreeMap<String, String>,
        event_type: EventType,
        reason: &str,
        message: String,
    ) {
        crate::lock(&self.events).push(RecordedEvent {
            object: object.clone(),
            event_type,
            reason: reason.to_owned(),
            message,
            annotations: annotations.clone(),
        });
    }
}

/// The field path prefix of a container that is not in its pod's spec
/// (upstream `kubecontainer.ImplicitContainerPrefix`).
pub const IMPLICIT_CONTAINER_PREFIX: &str = "implicitly required container ";

/// A reference to the pod itself, for pod-level events (upstream
/// `ref.GetReference(legacyscheme.Scheme, pod)`): `apiVersion: v1`,
/// `kind: Pod`, its name, namespace, UID and resource version.
pub fn pod_ref(pod: &Pod) -> ObjectReference {
    let m = &pod.metadata;
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

/// A reference to one of the pod's containers (upstream
/// `kubecontainer.GenerateContainerRef`): the pod with `fieldPath`
/// `spec.containers{name}`, `spec.initContainers{name}` or
/// `spec.ephemeralContainers{name}` (`[index]` for an unnamed one), and
/// `implicitly required container <name>` for a container the spec does not
/// hold (a pod rebuilt from container labels).
pub fn container_ref(pod: &Pod, container_name: &str) -> ObjectReference {
    ObjectReference {
        field_path: Some(field_path(pod, container_name)),
        ..pod_ref(pod)
    }
}

fn field_path(pod: &Pod, name: &str) -> String {
    let spec = pod.spec.as_ref();
    let lists = [
        (
            "containers",
            spec.map(|s| s.containers.iter().map(|c| c.name.as_str()).collect()),
        ),
        (
            "initContainers",
            spec.and_then(|s| s.init_containers.as_ref())
                .map(|v| v.iter().map(|c| c.name.as_str()).collect()),
        ),
        (
            "ephemeralContainers",
            spec.and_then(|s| s.ephemeral_containers.as_ref())
                .map(|v| v.iter().map(|c| c.name.as_str()).collect()),
        ),
    ];
    for (field, names) in lists {
        let names: Vec<&str> = names.unwrap_or_default();
        if let Some(i) = names.iter().position(|n| *n == name) {
            return if name.is_empty() {
                format!("spec.{field}[{i}]")
            } else {
                format!("spec.{field}{{{name}}}")
            };
        }
    }
    format!("{IMPLICIT_CONTAINER_PREFIX}{name}")
}

/// A reference to the node, for node-level events (upstream `kubelet.go`:
/// `kind: Node`, the node's name as name and UID, no namespace; its events
/// go to `default`).
pub fn node_ref(node_name: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("Node".into()),
        name: Some(node_name.to_owned()),
        uid: Some(node_name.to_owned()),
        ..Default::default()
    }
}

/// `<name>_<namespace>(<uid>)`, how upstream's event messages name a pod
/// (`pkg/kubelet/util/format.Pod`).
pub fn pod_desc(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    )
}

/// The kubelet's event reasons, with upstream's names and values
/// (`pkg/kubelet/events/event.go`, plus `Evicted` from
/// `pkg/kubelet/eviction` and the node condition reasons of
/// `pkg/kubelet/nodestatus/setters.go`).
pub mod reason {
    // Container event reasons.
    /// A container was created.
    pub const CREATED_CONTAINER: &str = "Created";
    /// A container was started.
    pub const STARTED_CONTAINER: &str = "Started";
    /// Creating a container failed (also an image that could not be had).
    pub const FAILED_TO_CREATE_CONTAINER: &str = "Failed";
    /// Starting a container failed.
    pub const FAILED_TO_START_CONTAINER: &str = "Failed";
    /// A container is being stopped.
    pub const KILLING_CONTAINER: &str = "Killing";
    /// A container is being stopped to make room for another pod.
    pub const PREEMPT_CONTAINER: &str = "Preempting";
    /// A container that exited waits for its crash-loop back-off.
    pub const BACK_OFF_START_CONTAINER: &str = "BackOff";
    /// A pod did not terminate within its grace period.
    pub const EXCEEDED_GRACE_PERIOD: &str = "ExceededGracePeriod";

    // Pod event reasons.
    /// Killing a pod failed.
    pub const FAILED_TO_KILL_POD: &str = "FailedKillPod";
    /// The pod's cgroup could not be made.
    pub const FAILED_TO_CREATE_POD_CONTAINER: &str = "FailedCreatePodContainer";
    /// The pod's directories could not be made.
    pub const FAILED_TO_MAKE_POD_DATA_DIRECTORIES: &str = "Failed";
    /// The pod network is not ready.
    pub const NETWORK_NOT_READY: &str = "NetworkNotReady";

    // Image event reasons.
    /// An image pull began.
    pub const PULLING_IMAGE: &str = "Pulling";
    /// An image was pulled, or was present already.
    pub const PULLED_IMAGE: &str = "Pulled";
    /// An image pull failed.
    pub const FAILED_TO_PULL_IMAGE: &str = "Failed";
    /// An image could not be inspected.
    pub const FAILED_TO_INSPECT_IMAGE: &str = "InspectFailed";
    /// An image is absent and its pull policy is `Never`.
    pub const ERR_IMAGE_NEVER_PULL_POLICY: &str = "ErrImageNeverPull";
    /// An image pull waits for its back-off.
    pub const BACK_OFF_PULL_IMAGE: &str = "BackOff";

    // Kubelet event reasons.
    /// The node became Ready.
    pub const NODE_READY: &str = "NodeReady";
    /// The node became NotReady.
    pub const NODE_NOT_READY: &str = "NodeNotReady";
    /// The node became schedulable.
    pub const NODE_SCHEDULABLE: &str = "NodeSchedulable";
    /// The node became unschedulable.
    pub const NODE_NOT_SCHEDULABLE: &str = "NodeNotSchedulable";
    /// The kubelet started.
    pub const STARTING_KUBELET: &str = "Starting";
    /// The kubelet could not set itself up.
    pub const KUBELET_SETUP_FAILED: &str = "KubeletSetupFailed";
    /// A volume could not be attached.
    pub const FAILED_ATTACH_VOLUME: &str = "FailedAttachVolume";
    /// A volume could not be mounted.
    pub const FAILED_MOUNT_VOLUME: &str = "FailedMount";
    /// A volume could not be resized.
    pub const VOLUME_RESIZE_FAILED: &str = "VolumeResizeFailed";
    /// A volume was resized.
    pub const VOLUME_RESIZE_SUCCESS: &str = "VolumeResizeSuccessful";
    /// A file system could not be resized.
    pub const FILE_SYSTEM_RESIZE_FAILED: &str = "FileSystemResizeFailed";
    /// A file system was resized.
    pub const FILE_SYSTEM_RESIZE_SUCCESS: &str = "FileSystemResizeSuccessful";
    /// A block volume could not be mapped.
    pub const FAILED_MAP_VOLUME: &str = "FailedMapVolume";
    /// A volume is mounted already.
    pub const WARN_ALREADY_MOUNTED_VOLUME: &str = "AlreadyMountedVolume";
    /// A volume was attached.
    pub const SUCCESSFUL_ATTACH_VOLUME: &str = "SuccessfulAttachVolume";
    /// A volume was mounted.
    pub const SUCCESSFUL_MOUNT_VOLUME: &str = "SuccessfulMountVolume";
    /// The node rebooted.
    pub const NODE_REBOOTED: &str = "Rebooted";
    /// Container garbage collection failed.
    pub const CONTAINER_GC_FAILED: &str = "ContainerGCFailed";
    /// Image garbage collection failed.
    pub const IMAGE_GC_FAILED: &str = "ImageGCFailed";
    /// Node allocatable could not be enforced.
    pub const FAILED_NODE_ALLOCATABLE_ENFORCEMENT: &str = "FailedNodeAllocatableEnforcement";
    /// Node allocatable was enforced.
    pub const SUCCESSFUL_NODE_ALLOCATABLE_ENFORCEMENT: &str = "NodeAllocatableEnforced";
    /// The pod's sandbox changed; it will be killed and re-created.
    pub const SANDBOX_CHANGED: &str = "SandboxChanged";
    /// The pod's sandbox could not be created.
    pub const FAILED_CREATE_POD_SAND_BOX: &str = "FailedCreatePodSandBox";
    /// The pod's sandbox status could not be read.
    pub const FAILED_STATUS_POD_SAND_BOX: &str = "FailedPodSandBoxStatus";
    /// A volume's file system does not match.
    pub const FAILED_MOUNT_ON_FILESYSTEM_MISMATCH: &str = "FailedMountOnFilesystemMismatch";

    // Image manager event reasons.
    /// The image file system's capacity is invalid.
    pub const INVALID_DISK_CAPACITY: &str = "InvalidDiskCapacity";
    /// Image garbage collection could not free enough space.
    pub const FREE_DISK_SPACE_FAILED: &str = "FreeDiskSpaceFailed";

    // Probe event reasons.
    /// A probe failed or errored.
    pub const CONTAINER_UNHEALTHY: &str = "Unhealthy";
    /// A probe succeeded with a warning.
    pub const CONTAINER_PROBE_WARNING: &str = "ProbeWarning";

    // Pod worker event reasons.
    /// Syncing a pod failed.
    pub const FAILED_SYNC: &str = "FailedSync";

    // Config event reasons.
    /// A pod from a config source failed validation.
    pub const FAILED_VALIDATION: &str = "FailedValidation";

    // Lifecycle hook event reasons.
    /// A `postStart` hook failed.
    pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
    /// A `preStop` hook failed.
    pub const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";

    // Eviction (`pkg/kubelet/eviction/helpers.go`).
    /// A pod was evicted under node pressure.
    pub const EVICTED: &str = "Evicted";
    /// An eviction threshold was met: the node tries to reclaim a resource
    /// (`eviction_manager.go`, recorded on the Node).
    pub const EVICTION_THRESHOLD_MET: &str = "EvictionThresholdMet";

    // Node conditions (`pkg/kubelet/nodestatus/setters.go`).
    /// The node has enough memory.
    pub const NODE_HAS_SUFFICIENT_MEMORY: &str = "NodeHasSufficientMemory";
    /// The node is under memory pressure.
    pub const NODE_HAS_INSUFFICIENT_MEMORY: &str = "NodeHasInsufficientMemory";
    /// The node has no disk pressure.
    pub const NODE_HAS_NO_DISK_PRESSURE: &str = "NodeHasNoDiskPressure";
    /// The node is under disk pressure.
    pub const NODE_HAS_DISK_PRESSURE: &str = "NodeHasDiskPressure";
    /// The node has enough PIDs.
    pub const NODE_HAS_SUFFICIENT_PID: &str = "NodeHasSufficientPID";
    /// The node is under PID pressure.
    pub const NODE_HAS_INSUFFICIENT_PID: &str = "NodeHasInsufficientPID";
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, EphemeralContainer, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        let c = |name: &str| Container {
            name: name.into(),
            ..Default::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("uid-1".into()),
                resource_version: Some("42".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![c("app"), c("")],
                init_containers: Some(vec![c("init")]),
                ephemeral_containers: Some(vec![EphemeralContainer {
                    name: "debug".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn container_refs_name_the_field_path_as_upstream() {
        let p = pod();
        let fp = |name: &str| container_ref(&p, name).field_path.unwrap_or_default();
        assert_eq!(fp("app"), "spec.containers{app}");
        assert_eq!(fp(""), "spec.containers[1]");
        assert_eq!(fp("init"), "spec.initContainers{init}");
        assert_eq!(fp("debug"), "spec.ephemeralContainers{debug}");
        assert_eq!(fp("gone"), "implicitly required container gone");
        let r = container_ref(&p, "app");
        assert_eq!(r.kind.as_deref(), Some("Pod"));
        assert_eq!(r.api_version.as_deref(), Some("v1"));
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.namespace.as_deref(), Some("prod"));
        assert_eq!(r.uid.as_deref(), Some("uid-1"));
        assert_eq!(r.resource_version.as_deref(), Some("42"));
        assert_eq!(pod_ref(&p).field_path, None);
    }

    #[test]
    fn node_ref_and_pod_desc() {
        let n = node_ref("node-a");
        assert_eq!(
            (n.kind.as_deref(), n.name.as_deref(), n.uid.as_deref()),
            (Some("Node"), Some("node-a"), Some("node-a"))
        );
        assert_eq!(n.namespace, None);
        assert_eq!(pod_desc(&pod()), "web_prod(uid-1)");
    }

    #[test]
    fn fake_recorder_keeps_events_in_order() {
        let f = FakeRecorder::new();
        let r: &dyn EventRecorder = &f;
        r.event(
            &node_ref("n"),
            EventType::Normal,
            reason::STARTING_KUBELET,
            "Starting kubelet.".into(),
        );
        r.event(
            &node_ref("n"),
            EventType::Warning,
            reason::NODE_NOT_READY,
            "x".into(),
        );
        assert_eq!(
            f.strings(),
            [
                "Normal Starting Starting kubelet.",
                "Warning NodeNotReady x"
            ]
        );
        assert_eq!(f.take().len(), 2);
        assert!(f.events().is_empty());
        let annotations = BTreeMap::from([("starved_resource".to_owned(), "memory".to_owned())]);
        r.annotated_event(
            &node_ref("n"),
            &annotations,
            EventType::Warning,
            reason::EVICTED,
            "x".into(),
        );
        assert_eq!(f.events()[0].annotations, annotations);
        NoopRecorder.event(&node_ref("n"), EventType::Normal, "R", String::new());
        NoopRecorder.annotated_event(
            &node_ref("n"),
            &annotations,
            EventType::Normal,
            "R",
            String::new(),
        );
    }
}
