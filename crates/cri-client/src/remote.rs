//! [`RemoteRuntime`]: the CRI over a unix socket, with tonic.
//!
//! Mirrors upstream's `staging/src/k8s.io/cri-client/pkg/remote_runtime.go`
//! and `remote_image.go`: dial with bounded retries, check the runtime serves
//! `runtime.v1`, give each call a deadline (`runtimeRequestTimeout`, 2
//! minutes; `StopContainer` and `ExecSync` get their own timeout on top),
//! accept messages up to 16 MiB, and verify replies before handing them on.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

use crate::api::{self, image_service_client::ImageServiceClient};
use crate::api::{runtime_service_client::RuntimeServiceClient, *};
use crate::{
    Call, ContainerEventStream, Error, ImageService, RUNTIME_API_VERSION, Result, RuntimeService,
};

/// Upstream's `runtimeRequestTimeout` default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long [`RemoteRuntimeBuilder::connect`] keeps dialling by default
/// (upstream waits `maxWaitForContainerRuntime`, 30 s, for the runtime).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Image pulls have no deadline upstream; we bound them generously so a
/// wedged registry cannot hold a pod worker forever.
pub const DEFAULT_IMAGE_PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Upstream's `maxMsgSize`: large `ListContainers` replies need it.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Receives the duration of every CRI call, for metrics such as upstream's
/// `kubelet_runtime_operations_duration_seconds` and
/// `kubelet_runtime_operations_errors_total`.
pub trait OperationObserver: Send + Sync + 'static {
    /// Called once per finished call. `operation` is the CRI method name in
    /// snake case as upstream's metrics label it (`list_containers`).
    fn observe(&self, operation: &'static str, elapsed: Duration, error: Option<&Error>);
}

/// Configures and connects a [`RemoteRuntime`].
#[derive(Clone)]
pub struct RemoteRuntimeBuilder {
    endpoint: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    image_pull_timeout: Duration,
    max_message_size: usize,
    observer: Option<Arc<dyn OperationObserver>>,
    check_api_version: bool,
}

impl RemoteRuntimeBuilder {
    /// How long to keep dialling a socket that is not there yet.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The deadline of ordinary calls (upstream `runtimeRequestTimeout`).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The deadline of `PullImage`.
    pub fn image_pull_timeout(mut self, timeout: Duration) -> Self {
        self.image_pull_timeout = timeout;
        self
    }

    /// The largest message sent or accepted, in bytes.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Reports every call's duration and outcome to `observer`.
    pub fn observer(mut self, observer: Arc<dyn OperationObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Whether [`connect`](Self::connect) calls `Version` and refuses a
    /// runtime that does not serve `runtime.v1` (default: yes).
    pub fn check_api_version(mut self, check: bool) -> Self {
        self.check_api_version = check;
        self
    }

    /// Dials the endpoint, retrying with backoff (100 ms doubling to 3 s, as
    /// upstream's dial options) until the connect timeout, then checks the
    /// API version. A runtime that takes the connection but cannot answer
    /// yet (restarting, or still loading its state) is retried the same way
    /// until the same deadline: upstream's kubelet exits there and leaves
    /// the restart to systemd; this one waits.
    pub async fn connect(self) -> Result<RemoteRuntime> {
        let uri = parse_endpoint(&self.endpoint)?;
        let endpoint = Endpoint::from_shared(uri).map_err(|e| Error::InvalidEndpoint {
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        })?;
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        // A runtime that is restarting accepts connections before it
        // answers (containerd's "server is not initialized yet") or drops
        // them: both are retried until the deadline, as the socket is.
        loop {
            let attempt = match endpoint.connect().await {
                Ok(channel) => {
                    let runtime = self.client(channel);
                    if !self.check_api_version {
                        return Ok(runtime);
                    }
                    match runtime.check_version().await {
                        Ok(()) => return Ok(runtime),
                        Err(e @ Error::UnsupportedApi { .. }) => return Err(e),
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => error_chain(&e),
            };
            let waited = started.elapsed();
            if waited + delay > self.connect_timeout {
                return Err(Error::Connect {
                    endpoint: self.endpoint,
                    waited,
                    reason: attempt,
                });
            }
            tracing::debug!(endpoint = %self.endpoint, error = %attempt, ?delay, "CRI runtime not reachable yet");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(3));
        }
    }

    fn client(&self, channel: Channel) -> RemoteRuntime {
        RemoteRuntime {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(self.max_message_size)
                .max_encoding_message_size(self.max_message_size),
            image: ImageServiceClient::new(channel)
                .max_decoding_message_size(self.max_message_size)
                .max_encoding_message_size(self.max_message_size),
            inner: Arc::new(Settings {
                endpoint: self.endpoint.clone(),
                request_timeout: self.request_timeout,
                image_pull_timeout: self.image_pull_timeout,
                observer: self.observer.clone(),
            }),
        }
    }
}

struct Settings {
    endpoint: String,
    request_timeout: Duration,
    image_pull_timeout: Duration,
    observer: Option<Arc<dyn OperationObserver>>,
}

/// A CRI runtime reached over a unix socket; implements [`RuntimeService`]
/// and [`ImageService`]. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct RemoteRuntime {
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
    inner: Arc<Settings>,
}

impl std::fmt::Debug for RemoteRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRuntime")
            .field("endpoint", &self.inner.endpoint)
            .field("request_timeout", &self.inner.request_timeout)
            .finish_non_exhaustive()
    }
}

impl RemoteRuntime {
    /// A builder for a client of the runtime at `endpoint`
    /// (`unix:///run/containerd/containerd.sock`, or a bare absolute path).
    pub fn builder(endpoint: impl Into<String>) -> RemoteRuntimeBuilder {
        RemoteRuntimeBuilder {
            endpoint: endpoint.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            image_pull_timeout: DEFAULT_IMAGE_PULL_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            observer: None,
            check_api_version: true,
        }
    }

    /// The endpoint this client was built for.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    async fn check_version(&self) -> Result<()> {
        match self.version().await {
            Ok(v) if v.runtime_api_version == RUNTIME_API_VERSION => Ok(()),
            Ok(v) => Err(Error::UnsupportedApi {
                endpoint: self.inner.endpoint.clone(),
                reason: format!(
                    "runtime {} {} reports API version {:?}",
                    v.runtime_name, v.runtime_version, v.runtime_api_version
                ),
            }),
            Err(Error::Unimplemented { message, .. }) => Err(Error::UnsupportedApi {
                endpoint: self.inner.endpoint.clone(),
                reason: message,
            }),
            Err(e) => Err(e),
        }
    }

    /// Runs one call: deadline, span, error mapping, observer.
    async fn run<T, F>(
        &self,
        operation: &'static str,
        call: impl FnOnce() -> Call,
        timeout: Option<Duration>,
        fut: F,
    ) -> Result<T>
    where
        F: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let call = call();
        let span = tracing::debug_span!(
            "cri",
            method = call.method,
            id = call.id.as_deref().unwrap_or_default()
        );
        async move {
            let started = Instant::now();
            let reply = match timeout {
                Some(limit) => match tokio::time::timeout(limit, fut).await {
                    Ok(reply) => reply,
                    Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                        "no reply within {limit:?}"
                    ))),
                },
                None => fut.await,
            };
            let result = reply
                .map(tonic::Response::into_inner)
                .map_err(|status| Error::from_status(call, status));
            let elapsed = started.elapsed();
            match &result {
                Ok(_) => tracing::debug!(?elapsed, "CRI call done"),
                Err(e) => tracing::debug!(?elapsed, error = %e, "CRI call failed"),
            }
            if let Some(observer) = &self.inner.observer {
                observer.observe(operation, elapsed, result.as_ref().err());
            }
            result
        }
        .instrument(span)
        .await
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.inner.request_timeout)
    }

    /// Upstream adds the operation's own timeout to the request timeout, so
    /// the runtime's SIGKILL or exec deadline fires before ours.
    fn timeout_plus(&self, extra: Duration) -> Option<Duration> {
        Some(self.inner.request_timeout + extra)
    }
}

/// Accepts `unix:///path`, `unix:/path` and a bare absolute path.
fn parse_endpoint(endpoint: &str) -> Result<String> {
    let path = if let Some(rest) = endpoint.strip_prefix("unix://") {
        rest
    } else if let Some(rest) = endpoint.strip_prefix("unix:") {
        rest
    } else if endpoint.starts_with('/') {
        endpoint
    } else {
        return Err(Error::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason: "only unix sockets are supported (unix:///path/to/socket)".into(),
        });
    };
    if !path.starts_with('/') {
        return Err(Error::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason: "the socket path must be absolute".into(),
        });
    }
    Ok(format!("unix://{path}"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn require_id(call: &'static str, id: String, what: &str) -> Result<String> {
    if id.is_empty() {
        Err(Error::malformed(
            Call::new(call),
            format!("the reply has an empty {what}"),
        ))
    } else {
        Ok(id)
    }
}

/// Upstream's `verifySandboxStatus`.
fn verify_sandbox_status(id: &str, status: Option<&PodSandboxStatus>) -> Result<()> {
    let call = || Call::with_id("PodSandboxStatus", id);
    let status = status.ok_or_else(|| Error::malformed(call(), "the reply has no status"))?;
    if status.id.is_empty() {
        return Err(Error::malformed(call(), "status.id is not set"));
    }
    match &status.metadata {
        None => Err(Error::malformed(call(), "status.metadata is not set")),
        Some(m) if m.name.is_empty() || m.namespace.is_empty() || m.uid.is_empty() => Err(
            Error::malformed(call(), "status.metadata name, namespace or uid is empty"),
        ),
        Some(_) => Ok(()),
    }
}

/// Upstream's `verifyContainerStatus`.
fn verify_container_status(id: &str, status: Option<&ContainerStatus>) -> Result<()> {
    let call = || Call::with_id("ContainerStatus", id);
    let status = status.ok_or_else(|| Error::malformed(call(), "the reply has no status"))?;
    if status.id.is_empty() {
        return Err(Error::malformed(call(), "status.id is not set"));
    }
    match &status.metadata {
        Some(m) if !m.name.is_empty() => {}
        _ => return Err(Error::malformed(call(), "status.metadata.name is not set")),
    }
    match &status.image {
        Some(i) if !i.image.is_empty() => Ok(()),
        _ => Err(Error::malformed(call(), "status.image is not set")),
    }
}

#[async_trait]
impl RuntimeService for RemoteRuntime {
    async fn version(&self) -> Result<VersionResponse> {
        let mut c = self.runtime.clone();
        let req = VersionRequest {
            version: "0.1.0".into(),
        };
        self.run(
            "version",
            || Call::new("Version"),
            self.timeout(),
            c.version(req),
        )
        .await
    }

    async fn status(&self, verbose: bool) -> Result<StatusResponse> {
        let mut c = self.runtime.clone();
        let reply = self
            .run(
                "status",
                || Call::new("Status"),
                self.timeout(),
                c.status(StatusRequest { verbose }),
            )
            .await?;
        if reply.status.is_none() {
            return Err(Error::malformed(
                Call::new("Status"),
                "the reply has no status",
            ));
        }
        Ok(reply)
    }

    async fn runtime_config(&self) -> Result<RuntimeConfigResponse> {
        let mut c = self.runtime.clone();
        self.run(
            "runtime_config",
            || Call::new("RuntimeConfig"),
            self.timeout(),
            c.runtime_config(RuntimeConfigRequest {}),
        )
        .await
    }

    async fn run_pod_sandbox(
        &self,
        config: PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let mut c = self.runtime.clone();
        let req = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: runtime_handler.to_owned(),
        };
        let reply = self
            .run(
                "run_podsandbox",
                || Call::with_id("RunPodSandbox", name),
                self.timeout(),
                c.run_pod_sandbox(req),
            )
            .await?;
        require_id("RunPodSandbox", reply.pod_sandbox_id, "pod_sandbox_id")
    }

    async fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let req = StopPodSandboxRequest {
            pod_sandbox_id: pod_sandbox_id.to_owned(),
        };
        self.run(
            "stop_podsandbox",
            || Call::with_id("StopPodSandbox", pod_sandbox_id),
            self.timeout(),
            c.stop_pod_sandbox(req),
        )
        .await
        .map(drop)
    }

    async fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: pod_sandbox_id.to_owned(),
        };
        self.run(
            "remove_podsandbox",
            || Call::with_id("RemovePodSandbox", pod_sandbox_id),
            self.timeout(),
            c.remove_pod_sandbox(req),
        )
        .await
        .map(drop)
    }

    async fn pod_sandbox_status(
        &self,
        pod_sandbox_id: &str,
        verbose: bool,
    ) -> Result<PodSandboxStatusResponse> {
        let mut c = self.runtime.clone();
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: pod_sandbox_id.to_owned(),
            verbose,
        };
        let reply = self
            .run(
                "podsandbox_status",
                || Call::with_id("PodSandboxStatus", pod_sandbox_id),
                self.timeout(),
                c.pod_sandbox_status(req),
            )
            .await?;
        verify_sandbox_status(pod_sandbox_id, reply.status.as_ref())?;
        Ok(reply)
    }

    async fn list_pod_sandbox(&self, filter: Option<PodSandboxFilter>) -> Result<Vec<PodSandbox>> {
        let mut c = self.runtime.clone();
        let reply = self
            .run(
                "list_podsandbox",
                || Call::new("ListPodSandbox"),
                self.timeout(),
                c.list_pod_sandbox(ListPodSandboxRequest { filter }),
            )
            .await?;
        Ok(reply.items)
    }

    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String> {
        let mut c = self.runtime.clone();
        let req = CreateContainerRequest {
            pod_sandbox_id: pod_sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let reply = self
            .run(
                "create_container",
                || Call::with_id("CreateContainer", pod_sandbox_id),
                self.timeout(),
                c.create_container(req),
            )
            .await?;
        require_id("CreateContainer", reply.container_id, "container_id")
    }

    async fn start_container(&self, container_id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let req = StartContainerRequest {
            container_id: container_id.to_owned(),
        };
        self.run(
            "start_container",
            || Call::with_id("StartContainer", container_id),
            self.timeout(),
            c.start_container(req),
        )
        .await
        .map(drop)
    }

    async fn stop_container(&self, container_id: &str, timeout: Duration) -> Result<()> {
        let mut c = self.runtime.clone();
        let req = StopContainerRequest {
            container_id: container_id.to_owned(),
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        };
        self.run(
            "stop_container",
            || Call::with_id("StopContainer", container_id),
            self.timeout_plus(timeout),
            c.stop_container(req),
        )
        .await
        .map(drop)
    }

    async fn remove_container(&self, container_id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let req = RemoveContainerRequest {
            container_id: container_id.to_owned(),
        };
        self.run(
            "remove_container",
            || Call::with_id("RemoveContainer", container_id),
            self.timeout(),
            c.remove_container(req),
        )
        .await
        .map(drop)
    }

    async fn list_containers(&self, filter: Option<ContainerFilter>) -> Result<Vec<Container>> {
        let mut c = self.runtime.clone();
        let reply = self
            .run(
                "list_containers",
                || Call::new("ListContainers"),
                self.timeout(),
                c.list_containers(ListContainersRequest { filter }),
            )
            .await?;
        Ok(reply.containers)
    }

    async fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<ContainerStatusResponse> {
        let mut c = self.runtime.clone();
        let req = ContainerStatusRequest {
            container_id: container_id.to_owned(),
            verbose,
        };
        let reply = self
            .run(
                "container_status",
                || Call::with_id("ContainerStatus", container_id),
                self.timeout(),
                c.container_status(req),
            )
            .await?;
        verify_container_status(container_id, reply.status.as_ref())?;
        Ok(reply)
    }

    async fn update_container_resources(
        &self,
        container_id: &str,
        linux: LinuxContainerResources,
    ) -> Result<()> {
        let mut c = self.runtime.clone();
        let req = UpdateContainerResourcesRequest {
            container_id: container_id.to_owned(),
            linux: Some(linux),
            windows: None,
            annotations: Default::default(),
        };
        self.run(
            "update_container",
            || Call::with_id("UpdateContainerResources", container_id),
            self.timeout(),
            c.update_container_resources(req),
        )
        .await
        .map(drop)
    }

    async fn reopen_container_log(&self, container_id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let req = ReopenContainerLogRequest {
            container_id: container_id.to_owned(),
        };
        self.run(
            "reopen_container_log",
            || Call::with_id("ReopenContainerLog", container_id),
            self.timeout(),
            c.reopen_container_log(req),
        )
        .await
        .map(drop)
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecSyncResponse> {
        let mut c = self.runtime.clone();
        let req = ExecSyncRequest {
            container_id: container_id.to_owned(),
            cmd,
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        };
        // Upstream: no deadline of our own when the exec has none.
        let deadline = if timeout.is_zero() {
            None
        } else {
            self.timeout_plus(timeout)
        };
        self.run(
            "exec_sync",
            || Call::with_id("ExecSync", container_id),
            deadline,
            c.exec_sync(req),
        )
        .await
    }

    async fn exec(&self, request: api::ExecRequest) -> Result<String> {
        let mut c = self.runtime.clone();
        let id = request.container_id.clone();
        let reply = self
            .run(
                "exec",
                || Call::with_id("Exec", &id),
                self.timeout(),
                c.exec(request),
            )
            .await?;
        Ok(reply.url)
    }

    async fn attach(&self, request: api::AttachRequest) -> Result<String> {
        let mut c = self.runtime.clone();
        let id = request.container_id.clone();
        let reply = self
            .run(
                "attach",
                || Call::with_id("Attach", &id),
                self.timeout(),
                c.attach(request),
            )
            .await?;
        Ok(reply.url)
    }

    async fn port_forward(&self, request: api::PortForwardRequest) -> Result<String> {
        let mut c = self.runtime.clone();
        let id = request.pod_sandbox_id.clone();
        let reply = self
            .run(
                "port_forward",
                || Call::with_id("PortForward", &id),
                self.timeout(),
                c.port_forward(request),
            )
            .await?;
        Ok(reply.url)
    }

    async fn container_stats(&self, container_id: &str) -> Result<ContainerStats> {
        let mut c = self.runtime.clone();
        let req = ContainerStatsRequest {
            container_id: container_id.to_owned(),
        };
        let reply = self
            .run(
                "container_stats",
                || Call::with_id("ContainerStats", container_id),
                self.timeout(),
                c.container_stats(req),
            )
            .await?;
        reply.stats.ok_or_else(|| {
            Error::malformed(
                Call::with_id("ContainerStats", container_id),
                "the reply has no stats",
            )
        })
    }

    async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>> {
        let mut c = self.runtime.clone();
        let reply = self
            .run(
                "list_container_stats",
                || Call::new("ListContainerStats"),
                self.timeout(),
                c.list_container_stats(ListContainerStatsRequest { filter }),
            )
            .await?;
        Ok(reply.stats)
    }

    async fn list_pod_sandbox_stats(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> Result<Vec<PodSandboxStats>> {
        let mut c = self.runtime.clone();
        let reply = self
            .run(
                "list_podsandbox_stats",
                || Call::new("ListPodSandboxStats"),
                self.timeout(),
                c.list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter }),
            )
            .await?;
        Ok(reply.stats)
    }

    async fn get_container_events(&self) -> Result<ContainerEventStream> {
        // grpc-go servers (containerd) send a stream's headers only with its
        // first message, so awaiting the call here would block until the
        // first event. Like grpc-go's own client, hand back the stream at
        // once and let a task drive the call; errors, `Unimplemented` from
        // containerd 1.6 included, arrive as the stream's first item.
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_BUFFER);
        let this = self.clone();
        tokio::spawn(async move {
            let mut c = this.runtime.clone();
            let opened = tokio::select! {
                opened = this.run(
                    "get_container_events",
                    || Call::new("GetContainerEvents"),
                    None,
                    c.get_container_events(GetEventsRequest {}),
                ) => opened,
                () = tx.closed() => return,
            };
            let mut stream = match opened {
                Ok(stream) => stream,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            loop {
                let item = tokio::select! {
                    item = stream.message() => item,
                    () = tx.closed() => return,
                };
                let item = match item {
                    Ok(Some(event)) => Ok(event),
                    Ok(None) => return,
                    Err(status) => Err(Error::from_status(Call::new("GetContainerEvents"), status)),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream_from(rx)))
    }
}

/// Upstream's evented PLEG reads events as they come; this buffer only
/// absorbs bursts between reads.
const EVENT_BUFFER: usize = 1000;

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<ContainerEventResponse>>,
) -> impl futures::Stream<Item = Result<ContainerEventResponse>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[async_trait]
impl ImageService for RemoteRuntime {
    async fn list_images(&self, filter: Option<ImageFilter>) -> Result<Vec<Image>> {
        let mut c = self.image.clone();
        let reply = self
            .run(
                "list_images",
                || Call::new("ListImages"),
                self.timeout(),
                c.list_images(ListImagesRequest { filter }),
            )
            .await?;
        Ok(reply.images)
    }

    async fn image_status(&self, image: ImageSpec, verbose: bool) -> Result<Option<Image>> {
        let name = image.image.clone();
        let mut c = self.image.clone();
        let req = ImageStatusRequest {
            image: Some(image),
            verbose,
        };
        let reply = self
            .run(
                "image_status",
                || Call::with_id("ImageStatus", name.clone()),
                self.timeout(),
                c.image_status(req),
            )
            .await?;
        match reply.image {
            Some(found) if found.id.is_empty() => Err(Error::malformed(
                Call::with_id("ImageStatus", name),
                "the image's id is not set",
            )),
            other => Ok(other),
        }
    }

    async fn pull_image(
        &self,
        image: ImageSpec,
        auth: Option<AuthConfig>,
        sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String> {
        let name = image.image.clone();
        let mut c = self.image.clone();
        let req = PullImageRequest {
            image: Some(image),
            auth,
            sandbox_config,
        };
        let reply = self
            .run(
                "pull_image",
                || Call::with_id("PullImage", name.clone()),
                Some(self.inner.image_pull_timeout),
                c.pull_image(req),
            )
            .await?;
        if reply.image_ref.is_empty() {
            return Err(Error::malformed(
                Call::with_id("PullImage", name),
                "the reply has an empty image_ref",
            ));
        }
        Ok(reply.image_ref)
    }

    async fn remove_image(&self, image: ImageSpec) -> Result<()> {
        let name = image.image.clone();
        let mut c = self.image.clone();
        self.run(
            "remove_image",
            || Call::with_id("RemoveImage", name),
            self.timeout(),
            c.remove_image(RemoveImageRequest { image: Some(image) }),
        )
        .await
        .map(drop)
    }

    async fn image_fs_info(&self) -> Result<ImageFsInfoResponse> {
        let mut c = self.image.clone();
        self.run(
            "image_fs_info",
            || Call::new("ImageFsInfo"),
            self.timeout(),
            c.image_fs_info(api::ImageFsInfoRequest {}),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unix_sockets() {
        assert_eq!(
            parse_endpoint("unix:///run/containerd/containerd.sock").ok(),
            Some("unix:///run/containerd/containerd.sock".into())
        );
        assert_eq!(
            parse_endpoint("/run/x.sock").ok(),
            Some("unix:///run/x.sock".into())
        );
        assert!(matches!(
            parse_endpoint("tcp://127.0.0.1:1234"),
            Err(Error::InvalidEndpoint { .. })
        ));
        assert!(matches!(
            parse_endpoint("unix://relative.sock"),
            Err(Error::InvalidEndpoint { .. })
        ));
    }

    #[tokio::test]
    async fn connect_gives_up_at_the_deadline_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("absent.sock");
        let started = Instant::now();
        let err = RemoteRuntime::builder(format!("unix://{}", sock.display()))
            .connect_timeout(Duration::from_millis(500))
            .connect()
            .await
            .expect_err("nothing listens there");
        assert!(matches!(err, Error::Connect { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("absent.sock"), "{err}");
    }

    #[test]
    fn sandbox_status_without_metadata_is_malformed() {
        let status = PodSandboxStatus {
            id: "sb".into(),
            ..Default::default()
        };
        let err = verify_sandbox_status("sb", Some(&status)).expect_err("no metadata");
        assert!(matches!(err, Error::MalformedResponse { .. }), "{err}");
        assert!(verify_sandbox_status("sb", None).is_err());
    }
}
