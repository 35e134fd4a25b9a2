//! [`FakeRuntime`]: an in-memory CRI runtime for tests (feature `fake`).
//!
//! It keeps realistic state — sandboxes ready or not ready, containers
//! created, running or exited with exit codes and reasons, images — follows the
//! CRI's idempotency rules (removing what is gone is not an error; stopping or
//! inspecting what never existed is `NotFound`), publishes container events on
//! a stream as containerd 1.7 does, records every call, and lets a test inject
//! an error or a delay into any method (upstream's `criproxy` idea, from
//! `test/e2e_node/criproxy`).
//!
//! [`FakeRuntime::serve`] puts the same runtime behind a real tonic server on a
//! unix socket, so [`RemoteRuntime`](crate::RemoteRuntime) can be tested and
//! benchmarked against it, including against malformed replies
//! ([`FakeRuntime::inject_malformed_reply`]).
//!
//! ```
//! use kubelet_cri_client::{FakeRuntime, RuntimeService, api};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kubelet_cri_client::Error> {
//! let runtime = FakeRuntime::new();
//! let config = api::PodSandboxConfig {
//!     metadata: Some(api::PodSandboxMetadata {
//!         name: "web".into(),
//!         namespace: "default".into(),
//!         uid: "uid-1".into(),
//!         attempt: 0,
//!     }),
//!     ..Default::default()
//! };
//! let sandbox = runtime.run_pod_sandbox(config, "").await?;
//! assert_eq!(runtime.list_pod_sandbox(None).await?.len(), 1);
//! assert_eq!(runtime.calls(), ["RunPodSandbox", "ListPodSandbox"]);
//! # let _ = sandbox;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{broadcast, oneshot};
use tokio_stream::wrappers::{BroadcastStream, UnixListenerStream};

use crate::api::{self, *};
use crate::{Call, ContainerEventStream, Error, ImageService, Result, RuntimeService};

/// The runtime name the fake reports from `Version`.
pub const FAKE_RUNTIME_NAME: &str = "fake-runtime";

/// Answers `ExecSync` for the fake: container ID and command in, reply out.
pub type ExecHandler = dyn Fn(&str, &[String]) -> ExecSyncResponse + Send + Sync;

#[derive(Debug, Clone)]
struct FakeSandbox {
    /// The sandbox as `ListPodSandbox` shows it, but for its state: made
    /// once at creation (what it shows never changes), so that a listing
    /// copies one compact object rather than gathering it from `config`.
    listed: PodSandbox,
    config: PodSandboxConfig,
    runtime_handler: String,
    state: PodSandboxState,
    created_at: i64,
    ip: String,
}

#[derive(Debug, Clone)]
struct FakeContainer {
    /// The container as `ListContainers` shows it, but for its state: made
    /// once at creation, like [`FakeSandbox::listed`].
    listed: Container,
    sandbox_id: String,
    config: ContainerConfig,
    image_ref: String,
    state: ContainerState,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
    reason: String,
    message: String,
    resources: Option<LinuxContainerResources>,
}

#[derive(Default)]
struct State {
    sandboxes: BTreeMap<String, FakeSandbox>,
    containers: BTreeMap<String, FakeContainer>,
    images: BTreeMap<String, Image>,
    calls: Vec<&'static str>,
    pulls: Vec<(String, Option<AuthConfig>)>,
    errors: HashMap<String, VecDeque<Error>>,
    delays: HashMap<String, Duration>,
    /// One-shot hangs: the next call of the method waits this long, then
    /// fails with `DeadlineExceeded` (a client's request timeout).
    hangs: HashMap<String, VecDeque<Duration>>,
    malformed: HashSet<String>,
    next_id: u64,
    next_ip: u32,
}

/// A wall clock for the fake's timestamps: Unix nanoseconds.
type WallClock = dyn Fn() -> i64 + Send + Sync;

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<ContainerEventResponse>,
    exec: Mutex<Option<Arc<ExecHandler>>>,
    /// Where timestamps come from (`None`: the system clock).
    clock: Mutex<Option<Arc<WallClock>>>,
    /// Bumped by [`FakeRuntime::restart`]: calls waiting in a delay or a
    /// hang when it changes fail with `Unavailable`.
    restarts: tokio::sync::watch::Sender<u64>,
}

/// An in-memory CRI runtime implementing [`RuntimeService`] and
/// [`ImageService`]. Clones share state.
#[derive(Clone)]
pub struct FakeRuntime {
    inner: Arc<Inner>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("FakeRuntime")
            .field("sandboxes", &state.sandboxes.len())
            .field("containers", &state.containers.len())
            .field("images", &state.images.len())
            .finish()
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn not_found(call: Call, what: &str) -> Error {
    let message = format!("{what} {:?} not found", call.id.as_deref().unwrap_or(""));
    Error::NotFound { call, message }
}

fn precondition(call: Call, message: String) -> Error {
    Error::InvalidArgument {
        call,
        code: tonic::Code::FailedPrecondition,
        message,
    }
}

fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl FakeRuntime {
    /// An empty runtime with no images.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    next_ip: 2,
                    ..State::default()
                }),
                events,
                exec: Mutex::new(None),
                clock: Mutex::new(None),
                restarts: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The fake's now, in Unix nanoseconds: its [`FakeRuntime::set_wall_clock`]
    /// clock, or the system's.
    fn now(&self) -> i64 {
        let clock = self
            .inner
            .clock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match clock {
            Some(clock) => clock(),
            None => now_nanos(),
        }
    }

    /// Records the call, then applies any injected hang, delay and error.
    /// A [`FakeRuntime::restart`] while the call waits fails it with
    /// `Unavailable`, as a runtime restart breaks the calls in flight.
    async fn enter(&self, method: &'static str) -> Result<()> {
        let (delay, hang, error) = {
            let mut state = self.state();
            state.calls.push(method);
            let delay = state.delays.get(method).copied();
            let hang = state.hangs.get_mut(method).and_then(VecDeque::pop_front);
            let error = state.errors.get_mut(method).and_then(VecDeque::pop_front);
            (delay, hang, error)
        };
        let wait = delay.unwrap_or_default() + hang.unwrap_or_default();
        if !wait.is_zero() {
            let mut restarts = self.inner.restarts.subscribe();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = restarts.changed() => {
                    return Err(Error::Unavailable {
                        call: Call::new(method),
                        message: "the runtime restarted during the call".into(),
                    });
                }
            }
        }
        if hang.is_some() {
            return Err(Error::DeadlineExceeded {
                call: Call::new(method),
                message: format!("context deadline exceeded after {wait:?}"),
            });
        }
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn new_id(state: &mut State) -> String {
        state.next_id += 1;
        // 64 hex digits, like containerd's IDs.
        format!("{:064x}", 0xfa4e_0000_0000_u64 + state.next_id)
    }

    fn emit(&self, container_id: &str, kind: ContainerEventType) {
        let event = {
            let state = self.state();
            let (sandbox_id, statuses) = match state.containers.get(container_id) {
                Some(c) => (
                    c.sandbox_id.clone(),
                    vec![container_status_of(container_id, c)],
                ),
                None => (container_id.to_owned(), Vec::new()),
            };
            ContainerEventResponse {
                container_id: container_id.to_owned(),
                container_event_type: kind as i32,
                created_at: self.now(),
                pod_sandbox_status: state
                    .sandboxes
                    .get(&sandbox_id)
                    .map(|s| sandbox_status_of(&sandbox_id, s)),
                containers_statuses: statuses,
            }
        };
        // No subscriber is not an error: events are fire and forget.
        let _ = self.inner.events.send(event);
    }

    /// Makes `image` available, as if it had been pulled or imported.
    pub fn add_image(&self, image: &str) {
        let mut state = self.state();
        let id = format!("sha256:{:064x}", fnv64(image));
        state.images.insert(
            image.to_owned(),
            Image {
                id,
                repo_tags: vec![image.to_owned()],
                size: 4096,
                ..Default::default()
            },
        );
    }

    /// Every call made so far, by CRI method name, oldest first.
    pub fn calls(&self) -> Vec<&'static str> {
        self.state().calls.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }

    /// Every `PullImage` so far: the image and the credentials it carried.
    pub fn pulls(&self) -> Vec<(String, Option<AuthConfig>)> {
        self.state().pulls.clone()
    }

    /// The next call of `method` (CRI name, e.g. `"StopContainer"`) fails
    /// with `error`. Several injections queue up, one per call.
    pub fn inject_error(&self, method: &str, error: Error) {
        self.state()
            .errors
            .entry(method.to_owned())
            .or_default()
            .push_back(error);
    }

    /// Every call of `method` waits `delay` first (zero removes the delay).
    pub fn set_delay(&self, method: &str, delay: Duration) {
        let mut state = self.state();
        if delay.is_zero() {
            state.delays.remove(method);
        } else {
            state.delays.insert(method.to_owned(), delay);
        }
    }

    /// The next call of `method` hangs for `after`, then fails with
    /// `DeadlineExceeded`, as a call to a hung runtime ends when the
    /// client's request timeout (upstream `runtimeRequestTimeout`, 2 min)
    /// expires. Several hangs queue up, one per call.
    pub fn inject_hang(&self, method: &str, after: Duration) {
        self.state()
            .hangs
            .entry(method.to_owned())
            .or_default()
            .push_back(after);
    }

    /// How many injected errors and hangs still wait for their call.
    pub fn pending_injections(&self) -> usize {
        let state = self.state();
        state.errors.values().map(VecDeque::len).sum::<usize>()
            + state.hangs.values().map(VecDeque::len).sum::<usize>()
    }

    /// How many injected errors and hangs of `method` still wait for their
    /// call.
    pub fn pending_injections_of(&self, method: &str) -> usize {
        let state = self.state();
        state.errors.get(method).map_or(0, VecDeque::len)
            + state.hangs.get(method).map_or(0, VecDeque::len)
    }

    /// Forgets the injected errors and hangs that have not fired yet (a
    /// call already waiting in a hang goes on waiting).
    pub fn clear_injections(&self) {
        let mut state = self.state();
        state.errors.clear();
        state.hangs.clear();
    }

    /// Simulates the runtime restarting (containerd killed and started
    /// again): every sandbox and container keeps its state, as containerd's
    /// do across a restart, but each call waiting in a delay or a hang at
    /// that moment fails with `Unavailable`: only the calls in flight are
    /// lost.
    pub fn restart(&self) {
        self.inner.restarts.send_modify(|n| *n += 1);
    }

    /// Takes every timestamp (creation, start, finish, events) from `clock`,
    /// Unix nanoseconds, instead of the system clock: a simulation on
    /// tokio's paused clock gives the fake the same virtual time the
    /// kubelet's backoffs read.
    pub fn set_wall_clock(&self, clock: impl Fn() -> i64 + Send + Sync + 'static) {
        *self
            .inner
            .clock
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(clock));
    }

    /// Every sandbox as an unfiltered `ListPodSandbox` would list it, read
    /// without a call: not recorded, never delayed or failed by an
    /// injection. For tests that check the runtime's state while faults
    /// are injected.
    pub fn inspect_sandboxes(&self) -> Vec<PodSandbox> {
        self.state()
            .sandboxes
            .values()
            .map(|sb| PodSandbox {
                state: sb.state as i32,
                ..sb.listed.clone()
            })
            .collect()
    }

    /// Every container as an unfiltered `ListContainers` would list it,
    /// read without a call, like [`FakeRuntime::inspect_sandboxes`].
    pub fn inspect_containers(&self) -> Vec<Container> {
        self.state()
            .containers
            .values()
            .map(|c| Container {
                state: c.state as i32,
                ..c.listed.clone()
            })
            .collect()
    }

    /// When served over a socket, `method` answers an empty (default) reply
    /// message, as a broken runtime might.
    pub fn inject_malformed_reply(&self, method: &str) {
        self.state().malformed.insert(method.to_owned());
    }

    fn is_malformed(&self, method: &str) -> bool {
        self.state().malformed.contains(method)
    }

    /// Sets how `ExecSync` answers (by default: exit code 0, no output).
    pub fn set_exec_handler(
        &self,
        handler: impl Fn(&str, &[String]) -> ExecSyncResponse + Send + Sync + 'static,
    ) {
        *self
            .inner
            .exec
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(handler));
    }

    /// Simulates a running container's process exiting by itself (a crash,
    /// an OOM kill with reason `OOMKilled`, a completed job): the container
    /// turns `EXITED` and a STOPPED event is published.
    pub fn exit_container(&self, container_id: &str, exit_code: i32, reason: &str) -> Result<()> {
        {
            let mut state = self.state();
            let c = state
                .containers
                .get_mut(container_id)
                .ok_or_else(|| not_found(Call::with_id("exit", container_id), "container"))?;
            if c.state != ContainerState::ContainerRunning {
                return Err(precondition(
                    Call::with_id("exit", container_id),
                    format!("container is {:?}, not running", c.state),
                ));
            }
            c.state = ContainerState::ContainerExited;
            c.finished_at = self.now();
            c.exit_code = exit_code;
            c.reason = reason.to_owned();
        }
        self.emit(container_id, ContainerEventType::ContainerStoppedEvent);
        Ok(())
    }

    /// Simulates a sandbox dying (its pause process or network gone).
    pub fn set_sandbox_not_ready(&self, pod_sandbox_id: &str) -> Result<()> {
        let mut state = self.state();
        let sb = state
            .sandboxes
            .get_mut(pod_sandbox_id)
            .ok_or_else(|| not_found(Call::with_id("set_not_ready", pod_sandbox_id), "sandbox"))?;
        sb.state = PodSandboxState::SandboxNotready;
        Ok(())
    }

    /// The resources last set on a container, by create or update.
    pub fn container_resources(&self, container_id: &str) -> Option<LinuxContainerResources> {
        self.state()
            .containers
            .get(container_id)
            .and_then(|c| c.resources.clone())
    }

    /// The config a container was created with (its env, mounts, command).
    pub fn container_config(&self, container_id: &str) -> Option<ContainerConfig> {
        self.state()
            .containers
            .get(container_id)
            .map(|c| c.config.clone())
    }

    fn stop_container_locked(state: &mut State, id: &str, now: i64) -> bool {
        match state.containers.get_mut(id) {
            Some(c) if c.state == ContainerState::ContainerRunning => {
                c.state = ContainerState::ContainerExited;
                c.finished_at = now;
                c.exit_code = 137;
                c.reason = "Error".into();
                true
            }
            Some(c) if c.state == ContainerState::ContainerCreated => {
                c.state = ContainerState::ContainerExited;
                c.finished_at = now;
                c.exit_code = 0;
                c.reason = "Created container was stopped".into();
                true
            }
            _ => false,
        }
    }

    /// Serves this runtime over a tonic server on the unix socket `path`
    /// until the returned [`FakeServer`] is dropped.
    pub async fn serve(&self, path: impl AsRef<Path>) -> std::io::Result<FakeServer> {
        let path = path.as_ref().to_path_buf();
        let listener = tokio::net::UnixListener::bind(&path)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let svc = server::Service(self.clone());
        let router = tonic::transport::Server::builder()
            .add_service(
                runtime_service_server::RuntimeServiceServer::new(svc.clone())
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(
                image_service_server::ImageServiceServer::new(svc)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            );
        let task = tokio::spawn(async move {
            let incoming = UnixListenerStream::new(listener);
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::warn!(error = %e, "fake CRI server stopped");
            }
        });
        Ok(FakeServer {
            path,
            stop: Some(stop),
            task,
        })
    }
}

/// A [`FakeRuntime`] served on a unix socket; stops serving when dropped.
#[derive(Debug)]
pub struct FakeServer {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// The endpoint to give a client: `unix://<path>`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn fnv64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn sandbox_status_of(id: &str, sb: &FakeSandbox) -> PodSandboxStatus {
    let host_network = sb
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|n| n.network() == NamespaceMode::Node);
    PodSandboxStatus {
        id: id.to_owned(),
        metadata: sb.config.metadata.clone(),
        state: sb.state as i32,
        created_at: sb.created_at,
        network: Some(PodSandboxNetworkStatus {
            ip: sb.ip.clone(),
            additional_ips: Vec::new(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(NamespaceOption {
                    network: if host_network {
                        NamespaceMode::Node as i32
                    } else {
                        NamespaceMode::Pod as i32
                    },
                    ..Default::default()
                }),
            }),
        }),
        labels: sb.config.labels.clone(),
        annotations: sb.config.annotations.clone(),
        runtime_handler: sb.runtime_handler.clone(),
    }
}

fn container_status_of(id: &str, c: &FakeContainer) -> ContainerStatus {
    ContainerStatus {
        id: id.to_owned(),
        metadata: c.config.metadata.clone(),
        state: c.state as i32,
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: c.config.image.clone(),
        image_ref: c.image_ref.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path: c.config.log_path.clone(),
        resources: c.resources.clone().map(|linux| ContainerResources {
            linux: Some(linux),
            windows: None,
        }),
        ..Default::default()
    }
}

#[async_trait]
impl RuntimeService for FakeRuntime {
    async fn version(&self) -> Result<VersionResponse> {
        self.enter("Version").await?;
        Ok(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: FAKE_RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: crate::RUNTIME_API_VERSION.into(),
        })
    }

    async fn status(&self, _verbose: bool) -> Result<StatusResponse> {
        self.enter("Status").await?;
        let ready = |kind: &str| RuntimeCondition {
            r#type: kind.into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        Ok(StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![ready("RuntimeReady"), ready("NetworkReady")],
            }),
            ..Default::default()
        })
    }

    async fn runtime_config(&self) -> Result<RuntimeConfigResponse> {
        self.enter("RuntimeConfig").await?;
        Ok(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: CgroupDriver::Cgroupfs as i32,
            }),
        })
    }

    async fn run_pod_sandbox(
        &self,
        config: PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        self.enter("RunPodSandbox").await?;
        let call = || Call::new("RunPodSandbox");
        let Some(meta) = config.metadata.clone() else {
            return Err(Error::InvalidArgument {
                call: call(),
                code: tonic::Code::InvalidArgument,
                message: "sandbox config must include metadata".into(),
            });
        };
        let id = {
            let mut state = self.state();
            let taken = state.sandboxes.values().any(|s| {
                s.config.metadata.as_ref().is_some_and(|m| {
                    m.name == meta.name
                        && m.namespace == meta.namespace
                        && m.uid == meta.uid
                        && m.attempt == meta.attempt
                })
            });
            if taken {
                return Err(Error::AlreadyExists {
                    call: call(),
                    message: format!(
                        "sandbox name {}_{}_{}_{} is reserved",
                        meta.name, meta.namespace, meta.uid, meta.attempt
                    ),
                });
            }
            let id = Self::new_id(&mut state);
            let host_network = config
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.namespace_options.as_ref())
                .is_some_and(|n| n.network() == NamespaceMode::Node);
            let ip = if host_network {
                String::new()
            } else {
                state.next_ip += 1;
                let n = state.next_ip;
                format!("10.88.{}.{}", (n >> 8) & 0xff, n & 0xff)
            };
            let created_at = self.now();
            let listed = PodSandbox {
                id: id.clone(),
                metadata: config.metadata.clone(),
                state: PodSandboxState::SandboxReady as i32,
                created_at,
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
                runtime_handler: runtime_handler.to_owned(),
            };
            state.sandboxes.insert(
                id.clone(),
                FakeSandbox {
                    listed,
                    config,
                    runtime_handler: runtime_handler.to_owned(),
                    state: PodSandboxState::SandboxReady,
                    created_at,
                    ip,
                },
            );
            id
        };
        self.emit(&id, ContainerEventType::ContainerCreatedEvent);
        self.emit(&id, ContainerEventType::ContainerStartedEvent);
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        self.enter("StopPodSandbox").await?;
        let now = self.now();
        let stopped = {
            let mut state = self.state();
            let Some(sb) = state.sandboxes.get_mut(pod_sandbox_id) else {
                return Err(not_found(
                    Call::with_id("StopPodSandbox", pod_sandbox_id),
                    "sandbox",
                ));
            };
            sb.state = PodSandboxState::SandboxNotready;
            let ids: Vec<String> = state
                .containers
                .iter()
                .filter(|(_, c)| c.sandbox_id == pod_sandbox_id)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter(|id| Self::stop_container_locked(&mut state, id, now))
                .collect::<Vec<_>>()
        };
        for id in stopped {
            self.emit(&id, ContainerEventType::ContainerStoppedEvent);
        }
        self.emit(pod_sandbox_id, ContainerEventType::ContainerStoppedEvent);
        Ok(())
    }

    async fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        self.enter("RemovePodSandbox").await?;
        let removed = {
            let mut state = self.state();
            if state.sandboxes.remove(pod_sandbox_id).is_none() {
                return Ok(());
            }
            let ids: Vec<String> = state
                .containers
                .iter()
                .filter(|(_, c)| c.sandbox_id == pod_sandbox_id)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                state.containers.remove(id);
            }
            ids
        };
        for id in removed {
            self.emit(&id, ContainerEventType::ContainerDeletedEvent);
        }
        self.emit(pod_sandbox_id, ContainerEventType::ContainerDeletedEvent);
        Ok(())
    }

    async fn pod_sandbox_status(
        &self,
        pod_sandbox_id: &str,
        _verbose: bool,
    ) -> Result<PodSandboxStatusResponse> {
        self.enter("PodSandboxStatus").await?;
        let state = self.state();
        let sb = state.sandboxes.get(pod_sandbox_id).ok_or_else(|| {
            not_found(Call::with_id("PodSandboxStatus", pod_sandbox_id), "sandbox")
        })?;
        Ok(PodSandboxStatusResponse {
            status: Some(sandbox_status_of(pod_sandbox_id, sb)),
            ..Default::default()
        })
    }

    async fn list_pod_sandbox(&self, filter: Option<PodSandboxFilter>) -> Result<Vec<PodSandbox>> {
        self.enter("ListPodSandbox").await?;
        let filter = filter.unwrap_or_default();
        let state = self.state();
        // Unfiltered, the size is known: no regrowth of a large list.
        let mut out = Vec::with_capacity(if filter == PodSandboxFilter::default() {
            state.sandboxes.len()
        } else {
            0
        });
        out.extend(
            state
                .sandboxes
                .iter()
                .filter(|(id, sb)| {
                    (filter.id.is_empty() || **id == filter.id)
                        && filter
                            .state
                            .as_ref()
                            .is_none_or(|s| s.state == sb.state as i32)
                        && labels_match(&sb.config.labels, &filter.label_selector)
                })
                .map(|(_, sb)| PodSandbox {
                    state: sb.state as i32,
                    ..sb.listed.clone()
                }),
        );
        Ok(out)
    }

    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: ContainerConfig,
        _sandbox_config: PodSandboxConfig,
    ) -> Result<String> {
        self.enter("CreateContainer").await?;
        let call = || Call::with_id("CreateContainer", pod_sandbox_id);
        let id = {
            let mut state = self.state();
            match state.sandboxes.get(pod_sandbox_id) {
                None => return Err(not_found(call(), "sandbox")),
                Some(sb) if sb.state != PodSandboxState::SandboxReady => {
                    return Err(precondition(call(), "sandbox is not ready".into()));
                }
                Some(_) => {}
            }
            let Some(meta) = config.metadata.clone() else {
                return Err(Error::InvalidArgument {
                    call: call(),
                    code: tonic::Code::InvalidArgument,
                    message: "container config must include metadata".into(),
                });
            };
            let image = config.image.as_ref().map(|i| i.image.clone());
            let image_ref = match image.as_deref().and_then(|i| find_image(&state.images, i)) {
                Some(found) => found.id.clone(),
                None => {
                    return Err(Error::NotFound {
                        call: call(),
                        message: format!("image {:?} not found", image.unwrap_or_default()),
                    });
                }
            };
            let taken = state.containers.values().any(|c| {
                c.sandbox_id == pod_sandbox_id
                    && c.config
                        .metadata
                        .as_ref()
                        .is_some_and(|m| m.name == meta.name && m.attempt == meta.attempt)
            });
            if taken {
                return Err(Error::AlreadyExists {
                    call: call(),
                    message: format!("container name {}_{} is reserved", meta.name, meta.attempt),
                });
            }
            let id = Self::new_id(&mut state);
            let resources = config.linux.as_ref().and_then(|l| l.resources.clone());
            let created_at = self.now();
            let listed = Container {
                id: id.clone(),
                pod_sandbox_id: pod_sandbox_id.to_owned(),
                metadata: config.metadata.clone(),
                image: config.image.clone(),
                image_ref: image_ref.clone(),
                state: ContainerState::ContainerCreated as i32,
                created_at,
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
                image_id: image_ref.clone(),
            };
            state.containers.insert(
                id.clone(),
                FakeContainer {
                    listed,
                    sandbox_id: pod_sandbox_id.to_owned(),
                    config,
                    image_ref,
                    state: ContainerState::ContainerCreated,
                    created_at,
                    started_at: 0,
                    finished_at: 0,
                    exit_code: 0,
                    reason: String::new(),
                    message: String::new(),
                    resources,
                },
            );
            id
        };
        self.emit(&id, ContainerEventType::ContainerCreatedEvent);
        Ok(id)
    }

    async fn start_container(&self, container_id: &str) -> Result<()> {
        self.enter("StartContainer").await?;
        {
            let mut state = self.state();
            let call = || Call::with_id("StartContainer", container_id);
            let c = state
                .containers
                .get_mut(container_id)
                .ok_or_else(|| not_found(call(), "container"))?;
            if c.state != ContainerState::ContainerCreated {
                return Err(precondition(
                    call(),
                    format!("container is in {:?} state", c.state),
                ));
            }
            c.state = ContainerState::ContainerRunning;
            c.started_at = self.now();
        }
        self.emit(container_id, ContainerEventType::ContainerStartedEvent);
        Ok(())
    }

    async fn stop_container(&self, container_id: &str, _timeout: Duration) -> Result<()> {
        self.enter("StopContainer").await?;
        let now = self.now();
        let stopped = {
            let mut state = self.state();
            if !state.containers.contains_key(container_id) {
                return Err(not_found(
                    Call::with_id("StopContainer", container_id),
                    "container",
                ));
            }
            Self::stop_container_locked(&mut state, container_id, now)
        };
        if stopped {
            self.emit(container_id, ContainerEventType::ContainerStoppedEvent);
        }
        Ok(())
    }

    async fn remove_container(&self, container_id: &str) -> Result<()> {
        self.enter("RemoveContainer").await?;
        let removed = self.state().containers.remove(container_id).is_some();
        if removed {
            self.emit(container_id, ContainerEventType::ContainerDeletedEvent);
        }
        Ok(())
    }

    async fn list_containers(&self, filter: Option<ContainerFilter>) -> Result<Vec<Container>> {
        self.enter("ListContainers").await?;
        let filter = filter.unwrap_or_default();
        let state = self.state();
        // Unfiltered, the size is known: no regrowth of a large list.
        let mut out = Vec::with_capacity(if filter == ContainerFilter::default() {
            state.containers.len()
        } else {
            0
        });
        out.extend(
            state
                .containers
                .iter()
                .filter(|(id, c)| {
                    (filter.id.is_empty() || **id == filter.id)
                        && (filter.pod_sandbox_id.is_empty()
                            || c.sandbox_id == filter.pod_sandbox_id)
                        && filter
                            .state
                            .as_ref()
                            .is_none_or(|s| s.state == c.state as i32)
                        && labels_match(&c.config.labels, &filter.label_selector)
                })
                .map(|(_, c)| Container {
                    state: c.state as i32,
                    ..c.listed.clone()
                }),
        );
        Ok(out)
    }

    async fn container_status(
        &self,
        container_id: &str,
        _verbose: bool,
    ) -> Result<ContainerStatusResponse> {
        self.enter("ContainerStatus").await?;
        let state = self.state();
        let c = state.containers.get(container_id).ok_or_else(|| {
            not_found(Call::with_id("ContainerStatus", container_id), "container")
        })?;
        Ok(ContainerStatusResponse {
            status: Some(container_status_of(container_id, c)),
            ..Default::default()
        })
    }

    async fn update_container_resources(
        &self,
        container_id: &str,
        linux: LinuxContainerResources,
    ) -> Result<()> {
        self.enter("UpdateContainerResources").await?;
        let mut state = self.state();
        let c = state.containers.get_mut(container_id).ok_or_else(|| {
            not_found(
                Call::with_id("UpdateContainerResources", container_id),
                "container",
            )
        })?;
        c.resources = Some(linux);
        Ok(())
    }

    async fn reopen_container_log(&self, container_id: &str) -> Result<()> {
        self.enter("ReopenContainerLog").await?;
        let state = self.state();
        let call = || Call::with_id("ReopenContainerLog", container_id);
        let c = state
            .containers
            .get(container_id)
            .ok_or_else(|| not_found(call(), "container"))?;
        if c.state != ContainerState::ContainerRunning {
            return Err(precondition(call(), "container is not running".into()));
        }
        Ok(())
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        _timeout: Duration,
    ) -> Result<ExecSyncResponse> {
        self.enter("ExecSync").await?;
        {
            let state = self.state();
            let call = || Call::with_id("ExecSync", container_id);
            let c = state
                .containers
                .get(container_id)
                .ok_or_else(|| not_found(call(), "container"))?;
            if c.state != ContainerState::ContainerRunning {
                return Err(precondition(call(), "container is not running".into()));
            }
        }
        let handler = self
            .inner
            .exec
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(match handler {
            Some(h) => h(container_id, &cmd),
            None => ExecSyncResponse::default(),
        })
    }

    async fn container_stats(&self, container_id: &str) -> Result<ContainerStats> {
        self.enter("ContainerStats").await?;
        let state = self.state();
        let c = state
            .containers
            .get(container_id)
            .ok_or_else(|| not_found(Call::with_id("ContainerStats", container_id), "container"))?;
        Ok(stats_of(container_id, c))
    }

    async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>> {
        self.enter("ListContainerStats").await?;
        let filter = filter.unwrap_or_default();
        let state = self.state();
        Ok(state
            .containers
            .iter()
            .filter(|(id, c)| {
                (filter.id.is_empty() || **id == filter.id)
                    && (filter.pod_sandbox_id.is_empty() || c.sandbox_id == filter.pod_sandbox_id)
                    && labels_match(&c.config.labels, &filter.label_selector)
            })
            .map(|(id, c)| stats_of(id, c))
            .collect())
    }

    async fn list_pod_sandbox_stats(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> Result<Vec<PodSandboxStats>> {
        self.enter("ListPodSandboxStats").await?;
        let filter = filter.unwrap_or_default();
        let state = self.state();
        Ok(state
            .sandboxes
            .iter()
            .filter(|(id, sb)| {
                (filter.id.is_empty() || **id == filter.id)
                    && labels_match(&sb.config.labels, &filter.label_selector)
            })
            .map(|(id, sb)| PodSandboxStats {
                attributes: Some(PodSandboxAttributes {
                    id: id.clone(),
                    metadata: sb.config.metadata.clone(),
                    labels: sb.config.labels.clone(),
                    annotations: sb.config.annotations.clone(),
                }),
                linux: Some(LinuxPodSandboxStats {
                    containers: state
                        .containers
                        .iter()
                        .filter(|(_, c)| c.sandbox_id == *id)
                        .map(|(cid, c)| stats_of(cid, c))
                        .collect(),
                    ..Default::default()
                }),
                windows: None,
            })
            .collect())
    }

    async fn get_container_events(&self) -> Result<ContainerEventStream> {
        self.enter("GetContainerEvents").await?;
        let stream = BroadcastStream::new(self.inner.events.subscribe()).filter_map(|item| {
            futures::future::ready(match item {
                Ok(event) => Some(Ok(event)),
                // A lagging reader lost events: say so, as a broken stream would.
                Err(lagged) => Some(Err(Error::Rpc {
                    call: Call::new("GetContainerEvents"),
                    code: tonic::Code::DataLoss,
                    message: lagged.to_string(),
                })),
            })
        });
        Ok(Box::pin(stream))
    }
}

/// An image by name or by ID, as containerd resolves either.
fn find_image<'a>(images: &'a BTreeMap<String, Image>, name_or_id: &str) -> Option<&'a Image> {
    images
        .get(name_or_id)
        .or_else(|| images.values().find(|i| i.id == name_or_id))
}

fn stats_of(id: &str, c: &FakeContainer) -> ContainerStats {
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: id.to_owned(),
            metadata: c.config.metadata.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        }),
        ..Default::default()
    }
}

#[async_trait]
impl ImageService for FakeRuntime {
    async fn list_images(&self, filter: Option<ImageFilter>) -> Result<Vec<Image>> {
        self.enter("ListImages").await?;
        let wanted = filter.and_then(|f| f.image).map(|i| i.image);
        Ok(self
            .state()
            .images
            .iter()
            .filter(|(name, _)| wanted.as_ref().is_none_or(|w| w == *name))
            .map(|(_, image)| image.clone())
            .collect())
    }

    async fn image_status(&self, image: ImageSpec, _verbose: bool) -> Result<Option<Image>> {
        self.enter("ImageStatus").await?;
        Ok(find_image(&self.state().images, &image.image).cloned())
    }

    async fn pull_image(
        &self,
        image: ImageSpec,
        auth: Option<AuthConfig>,
        _sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String> {
        self.enter("PullImage").await?;
        self.state().pulls.push((image.image.clone(), auth));
        self.add_image(&image.image);
        let id = self
            .state()
            .images
            .get(&image.image)
            .map(|i| i.id.clone())
            .unwrap_or_default();
        Ok(id)
    }

    async fn remove_image(&self, image: ImageSpec) -> Result<()> {
        self.enter("RemoveImage").await?;
        self.state().images.remove(&image.image);
        Ok(())
    }

    async fn image_fs_info(&self) -> Result<ImageFsInfoResponse> {
        self.enter("ImageFsInfo").await?;
        Ok(ImageFsInfoResponse::default())
    }
}

/// The tonic server side: delegates to the traits above.
mod server {
    use super::*;
    use tonic::{Request, Response, Status};

    #[derive(Clone)]
    pub(super) struct Service(pub(super) FakeRuntime);

    type Reply<T> = std::result::Result<Response<T>, Status>;

    impl Service {
        /// A reply, or an empty one when the method was set to misbehave.
        fn reply<T: Default>(&self, method: &str, result: Result<T>) -> Reply<T> {
            match result {
                Ok(_) if self.0.is_malformed(method) => Ok(Response::new(T::default())),
                Ok(v) => Ok(Response::new(v)),
                Err(e) => Err(e.to_status()),
            }
        }
    }

    fn unimplemented<T>(method: &str) -> Reply<T> {
        Err(Status::unimplemented(format!(
            "{method} is not implemented by the fake runtime"
        )))
    }

    fn secs(timeout: i64) -> Duration {
        Duration::from_secs(u64::try_from(timeout).unwrap_or(0))
    }

    #[tonic::async_trait]
    impl runtime_service_server::RuntimeService for Service {
        async fn version(&self, _r: Request<VersionRequest>) -> Reply<VersionResponse> {
            self.reply("Version", self.0.version().await)
        }

        async fn run_pod_sandbox(
            &self,
            r: Request<RunPodSandboxRequest>,
        ) -> Reply<RunPodSandboxResponse> {
            let r = r.into_inner();
            let res = self
                .0
                .run_pod_sandbox(r.config.unwrap_or_default(), &r.runtime_handler)
                .await
                .map(|pod_sandbox_id| RunPodSandboxResponse { pod_sandbox_id });
            self.reply("RunPodSandbox", res)
        }

        async fn stop_pod_sandbox(
            &self,
            r: Request<StopPodSandboxRequest>,
        ) -> Reply<StopPodSandboxResponse> {
            let res = self
                .0
                .stop_pod_sandbox(&r.into_inner().pod_sandbox_id)
                .await;
            self.reply("StopPodSandbox", res.map(|()| StopPodSandboxResponse {}))
        }

        async fn remove_pod_sandbox(
            &self,
            r: Request<RemovePodSandboxRequest>,
        ) -> Reply<RemovePodSandboxResponse> {
            let res = self
                .0
                .remove_pod_sandbox(&r.into_inner().pod_sandbox_id)
                .await;
            self.reply(
                "RemovePodSandbox",
                res.map(|()| RemovePodSandboxResponse {}),
            )
        }

        async fn pod_sandbox_status(
            &self,
            r: Request<PodSandboxStatusRequest>,
        ) -> Reply<PodSandboxStatusResponse> {
            let r = r.into_inner();
            let res = self
                .0
                .pod_sandbox_status(&r.pod_sandbox_id, r.verbose)
                .await;
            self.reply("PodSandboxStatus", res)
        }

        async fn list_pod_sandbox(
            &self,
            r: Request<ListPodSandboxRequest>,
        ) -> Reply<ListPodSandboxResponse> {
            let res = self.0.list_pod_sandbox(r.into_inner().filter).await;
            self.reply(
                "ListPodSandbox",
                res.map(|items| ListPodSandboxResponse { items }),
            )
        }

        async fn create_container(
            &self,
            r: Request<CreateContainerRequest>,
        ) -> Reply<CreateContainerResponse> {
            let r = r.into_inner();
            let res = self
                .0
                .create_container(
                    &r.pod_sandbox_id,
                    r.config.unwrap_or_default(),
                    r.sandbox_config.unwrap_or_default(),
                )
                .await
                .map(|container_id| CreateContainerResponse { container_id });
            self.reply("CreateContainer", res)
        }

        async fn start_container(
            &self,
            r: Request<StartContainerRequest>,
        ) -> Reply<StartContainerResponse> {
            let res = self.0.start_container(&r.into_inner().container_id).await;
            self.reply("StartContainer", res.map(|()| StartContainerResponse {}))
        }

        async fn stop_container(
            &self,
            r: Request<StopContainerRequest>,
        ) -> Reply<StopContainerResponse> {
            let r = r.into_inner();
            let res = self
                .0
                .stop_container(&r.container_id, secs(r.timeout))
                .await;
            self.reply("StopContainer", res.map(|()| StopContainerResponse {}))
        }

        async fn remove_container(
            &self,
            r: Request<RemoveContainerRequest>,
        ) -> Reply<RemoveContainerResponse> {
            let res = self.0.remove_container(&r.into_inner().container_id).await;
            self.reply("RemoveContainer", res.map(|()| RemoveContainerResponse {}))
        }

        async fn list_containers(
            &self,
            r: Request<ListContainersRequest>,
        ) -> Reply<ListContainersResponse> {
            let res = self.0.list_containers(r.into_inner().filter).await;
            self.reply(
                "ListContainers",
                res.map(|containers| ListContainersResponse { containers }),
            )
        }

        async fn container_status(
            &self,
            r: Request<ContainerStatusRequest>,
        ) -> Reply<ContainerStatusResponse> {
            let r = r.into_inner();
            let res = self.0.container_status(&r.container_id, r.verbose).await;
            self.reply("ContainerStatus", res)
        }

        async fn update_container_resources(
            &self,
            r: Request<UpdateContainerResourcesRequest>,
        ) -> Reply<UpdateContainerResourcesResponse> {
            let r = r.into_inner();
            let res = self
                .0
                .update_container_resources(&r.container_id, r.linux.unwrap_or_default())
                .await;
            self.reply(
                "UpdateContainerResources",
                res.map(|()| UpdateContainerResourcesResponse {}),
            )
        }

        async fn reopen_container_log(
            &self,
            r: Request<ReopenContainerLogRequest>,
        ) -> Reply<ReopenContainerLogResponse> {
            let res = self
                .0
                .reopen_container_log(&r.into_inner().container_id)
                .await;
            self.reply(
                "ReopenContainerLog",
                res.map(|()| ReopenContainerLogResponse {}),
            )
        }

        async fn exec_sync(&self, r: Request<ExecSyncRequest>) -> Reply<ExecSyncResponse> {
            let r = r.into_inner();
            let res = self
                .0
                .exec_sync(&r.container_id, r.cmd, secs(r.timeout))
                .await;
            self.reply("ExecSync", res)
        }

        async fn exec(&self, _r: Request<ExecRequest>) -> Reply<ExecResponse> {
            unimplemented("Exec")
        }

        async fn attach(&self, _r: Request<AttachRequest>) -> Reply<AttachResponse> {
            unimplemented("Attach")
        }

        async fn port_forward(
            &self,
            _r: Request<PortForwardRequest>,
        ) -> Reply<PortForwardResponse> {
            unimplemented("PortForward")
        }

        async fn container_stats(
            &self,
            r: Request<ContainerStatsRequest>,
        ) -> Reply<ContainerStatsResponse> {
            let res = self.0.container_stats(&r.into_inner().container_id).await;
            self.reply(
                "ContainerStats",
                res.map(|stats| ContainerStatsResponse { stats: Some(stats) }),
            )
        }

        async fn list_container_stats(
            &self,
            r: Request<ListContainerStatsRequest>,
        ) -> Reply<ListContainerStatsResponse> {
            let res = self.0.list_container_stats(r.into_inner().filter).await;
            self.reply(
                "ListContainerStats",
                res.map(|stats| ListContainerStatsResponse { stats }),
            )
        }

        async fn pod_sandbox_stats(
            &self,
            _r: Request<PodSandboxStatsRequest>,
        ) -> Reply<PodSandboxStatsResponse> {
            unimplemented("PodSandboxStats")
        }

        async fn list_pod_sandbox_stats(
            &self,
            r: Request<ListPodSandboxStatsRequest>,
        ) -> Reply<ListPodSandboxStatsResponse> {
            let res = self.0.list_pod_sandbox_stats(r.into_inner().filter).await;
            self.reply(
                "ListPodSandboxStats",
                res.map(|stats| ListPodSandboxStatsResponse { stats }),
            )
        }

        async fn update_runtime_config(
            &self,
            _r: Request<UpdateRuntimeConfigRequest>,
        ) -> Reply<UpdateRuntimeConfigResponse> {
            Ok(Response::new(UpdateRuntimeConfigResponse {}))
        }

        async fn status(&self, r: Request<StatusRequest>) -> Reply<StatusResponse> {
            let res = self.0.status(r.into_inner().verbose).await;
            self.reply("Status", res)
        }

        async fn checkpoint_container(
            &self,
            _r: Request<CheckpointContainerRequest>,
        ) -> Reply<CheckpointContainerResponse> {
            unimplemented("CheckpointContainer")
        }

        type GetContainerEventsStream = std::pin::Pin<
            Box<
                dyn futures::Stream<Item = std::result::Result<ContainerEventResponse, Status>>
                    + Send
                    + 'static,
            >,
        >;

        async fn get_container_events(
            &self,
            _r: Request<GetEventsRequest>,
        ) -> Reply<Self::GetContainerEventsStream> {
            let stream = self
                .0
                .get_container_events()
                .await
                .map_err(|e| e.to_status())?;
            let stream: Self::GetContainerEventsStream =
                Box::pin(stream.map(|item| item.map_err(|e| e.to_status())));
            Ok(Response::new(stream))
        }

        async fn list_metric_descriptors(
            &self,
            _r: Request<ListMetricDescriptorsRequest>,
        ) -> Reply<ListMetricDescriptorsResponse> {
            unimplemented("ListMetricDescriptors")
        }

        async fn list_pod_sandbox_metrics(
            &self,
            _r: Request<ListPodSandboxMetricsRequest>,
        ) -> Reply<ListPodSandboxMetricsResponse> {
            unimplemented("ListPodSandboxMetrics")
        }

        async fn runtime_config(
            &self,
            _r: Request<RuntimeConfigRequest>,
        ) -> Reply<RuntimeConfigResponse> {
            self.reply("RuntimeConfig", self.0.runtime_config().await)
        }
    }

    #[tonic::async_trait]
    impl image_service_server::ImageService for Service {
        async fn list_images(&self, r: Request<ListImagesRequest>) -> Reply<ListImagesResponse> {
            let res = self.0.list_images(r.into_inner().filter).await;
            self.reply(
                "ListImages",
                res.map(|images| ListImagesResponse { images }),
            )
        }

        async fn image_status(&self, r: Request<ImageStatusRequest>) -> Reply<ImageStatusResponse> {
            let r = r.into_inner();
            let res = self
                .0
                .image_status(r.image.unwrap_or_default(), r.verbose)
                .await
                .map(|image| ImageStatusResponse {
                    image,
                    ..Default::default()
                });
            self.reply("ImageStatus", res)
        }

        async fn pull_image(&self, r: Request<PullImageRequest>) -> Reply<PullImageResponse> {
            let r = r.into_inner();
            let res = self
                .0
                .pull_image(r.image.unwrap_or_default(), r.auth, r.sandbox_config)
                .await
                .map(|image_ref| PullImageResponse { image_ref });
            self.reply("PullImage", res)
        }

        async fn remove_image(&self, r: Request<RemoveImageRequest>) -> Reply<RemoveImageResponse> {
            let res = self
                .0
                .remove_image(r.into_inner().image.unwrap_or_default())
                .await;
            self.reply("RemoveImage", res.map(|()| RemoveImageResponse {}))
        }

        async fn image_fs_info(
            &self,
            _r: Request<api::ImageFsInfoRequest>,
        ) -> Reply<ImageFsInfoResponse> {
            self.reply("ImageFsInfo", self.0.image_fs_info().await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: "ns".into(),
                uid: format!("{name}-uid"),
                attempt: 0,
            }),
            ..Default::default()
        }
    }

    fn container(name: &str, image: &str) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hang_times_out_once_and_a_restart_fails_only_the_call_in_flight() {
        let rt = FakeRuntime::new();
        rt.inject_hang("ListPodSandbox", Duration::from_secs(120));
        assert_eq!(rt.pending_injections(), 1);
        assert_eq!(rt.pending_injections_of("ListPodSandbox"), 1);
        assert_eq!(rt.pending_injections_of("ListContainers"), 0);
        let start = tokio::time::Instant::now();
        let err = rt.list_pod_sandbox(None).await.expect_err("hung");
        assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(120));
        assert_eq!(rt.pending_injections(), 0);
        assert_eq!(rt.pending_injections_of("ListPodSandbox"), 0);
        rt.list_pod_sandbox(None).await.expect("one-shot");

        let id = rt.run_pod_sandbox(sandbox("a"), "").await.expect("run");
        rt.inject_hang("StopPodSandbox", Duration::from_secs(120));
        let stop = rt.stop_pod_sandbox(&id);
        let restart = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rt.restart();
        };
        let (stopped, ()) = tokio::join!(stop, restart);
        assert!(
            matches!(stopped, Err(Error::Unavailable { .. })),
            "{stopped:?}"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(121));
        // The restart lost nothing but that call: the sandbox is still ready.
        let listed = rt.list_pod_sandbox(None).await.expect("list");
        assert_eq!(listed[0].state, PodSandboxState::SandboxReady as i32);
    }

    #[tokio::test]
    async fn timestamps_come_from_the_wall_clock_set() {
        let rt = FakeRuntime::new();
        rt.set_wall_clock(|| 42_000);
        let id = rt.run_pod_sandbox(sandbox("a"), "").await.expect("run");
        let listed = rt.list_pod_sandbox(None).await.expect("list");
        assert_eq!(
            (listed[0].id.as_str(), listed[0].created_at),
            (id.as_str(), 42_000)
        );
    }

    #[tokio::test]
    async fn containers_move_through_their_states() {
        let rt = FakeRuntime::new();
        rt.add_image("img");
        let sb = rt.run_pod_sandbox(sandbox("p"), "").await.unwrap();
        let id = rt
            .create_container(&sb, container("c", "img"), sandbox("p"))
            .await
            .unwrap();
        let state = |rt: &FakeRuntime, id: &str| {
            let rt = rt.clone();
            let id = id.to_owned();
            async move {
                rt.container_status(&id, false)
                    .await
                    .unwrap()
                    .status
                    .unwrap()
            }
        };
        assert_eq!(
            state(&rt, &id).await.state(),
            ContainerState::ContainerCreated
        );
        rt.start_container(&id).await.unwrap();
        assert_eq!(
            state(&rt, &id).await.state(),
            ContainerState::ContainerRunning
        );
        // Starting twice is refused, as containerd does.
        assert!(rt.start_container(&id).await.is_err());
        rt.exit_container(&id, 1, "Error").unwrap();
        let s = state(&rt, &id).await;
        assert_eq!(s.state(), ContainerState::ContainerExited);
        assert_eq!((s.exit_code, s.reason.as_str()), (1, "Error"));
        assert!(s.finished_at >= s.started_at && s.started_at >= s.created_at);
    }

    #[tokio::test]
    async fn names_are_reserved_and_images_required() {
        let rt = FakeRuntime::new();
        rt.add_image("img");
        let sb = rt.run_pod_sandbox(sandbox("p"), "").await.unwrap();
        let err = rt.run_pod_sandbox(sandbox("p"), "").await.unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        rt.create_container(&sb, container("c", "img"), sandbox("p"))
            .await
            .unwrap();
        let err = rt
            .create_container(&sb, container("c", "img"), sandbox("p"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        let err = rt
            .create_container(&sb, container("d", "missing"), sandbox("p"))
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[tokio::test]
    async fn stopping_a_sandbox_stops_its_containers_and_removal_is_idempotent() {
        let rt = FakeRuntime::new();
        rt.add_image("img");
        let sb = rt.run_pod_sandbox(sandbox("p"), "").await.unwrap();
        let id = rt
            .create_container(&sb, container("c", "img"), sandbox("p"))
            .await
            .unwrap();
        rt.start_container(&id).await.unwrap();
        rt.stop_pod_sandbox(&sb).await.unwrap();
        let listed = rt.list_containers(None).await.unwrap();
        assert_eq!(listed[0].state(), ContainerState::ContainerExited);
        let status = rt.pod_sandbox_status(&sb, false).await.unwrap();
        assert_eq!(
            status.status.unwrap().state(),
            PodSandboxState::SandboxNotready
        );
        // Containers cannot be created in a sandbox that is not ready.
        assert!(
            rt.create_container(&sb, container("late", "img"), sandbox("p"))
                .await
                .is_err()
        );
        rt.remove_pod_sandbox(&sb).await.unwrap();
        rt.remove_pod_sandbox(&sb).await.unwrap();
        rt.remove_container(&id).await.unwrap();
        assert!(rt.list_containers(None).await.unwrap().is_empty());
        assert!(rt.stop_pod_sandbox(&sb).await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn filters_select_by_sandbox_state_and_label() {
        let rt = FakeRuntime::new();
        rt.add_image("img");
        let a = rt.run_pod_sandbox(sandbox("a"), "").await.unwrap();
        let b = rt.run_pod_sandbox(sandbox("b"), "").await.unwrap();
        let mut labelled = container("c", "img");
        labelled.labels.insert("k".into(), "v".into());
        let ca = rt
            .create_container(&a, labelled, sandbox("a"))
            .await
            .unwrap();
        rt.create_container(&b, container("c", "img"), sandbox("b"))
            .await
            .unwrap();
        rt.start_container(&ca).await.unwrap();
        let by_sandbox = rt
            .list_containers(Some(ContainerFilter {
                pod_sandbox_id: a.clone(),
                ..Default::default()
            }))
            .await
            .unwrap();
        assert_eq!(by_sandbox.len(), 1);
        let running = rt
            .list_containers(Some(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }))
            .await
            .unwrap();
        assert_eq!(running.iter().map(|c| &c.id).collect::<Vec<_>>(), [&ca]);
        let by_label = rt
            .list_containers(Some(ContainerFilter {
                label_selector: [("k".to_string(), "v".to_string())].into(),
                ..Default::default()
            }))
            .await
            .unwrap();
        assert_eq!(by_label.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn injected_delays_and_errors_apply_per_method() {
        let rt = FakeRuntime::new();
        rt.set_delay("Version", Duration::from_secs(3));
        let started = tokio::time::Instant::now();
        rt.version().await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(3));
        rt.inject_error(
            "Status",
            Error::Unavailable {
                call: Call::new("Status"),
                message: "down".into(),
            },
        );
        assert!(rt.status(false).await.is_err());
        assert!(rt.status(false).await.is_ok());
        assert_eq!(rt.calls(), ["Version", "Status", "Status"]);
    }
}
