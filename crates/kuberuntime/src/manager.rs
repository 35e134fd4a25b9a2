//! [`RuntimeManager`]: SyncPod, KillPod, GetPodStatus and GetPods over any
//! CRI runtime.
//!
//! Mirrors upstream `kubeGenericRuntimeManager`
//! (`pkg/kubelet/kuberuntime/kuberuntime_manager.go`,
//! `kuberuntime_container.go`, `kuberuntime_sandbox.go`,
//! `pkg/kubelet/images/image_manager.go`).
//!
//! Events are recorded where upstream records them, with upstream's
//! reasons and wording (see [`RuntimeManager::with_event_recorder`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use k8s_openapi::api::core::v1::{Container, Lifecycle, LifecycleHandler, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubelet_container::events::{
    EventRecorder, EventType, NoopRecorder, container_ref, pod_desc, pod_ref, reason,
};
use kubelet_container::flowcontrol::{
    Backoff, TokenBucket, crash_loop_key, image_pull_key, system_time_from_unix_nanos,
};
use kubelet_container::podres::is_restartable_init;
use kubelet_cri_client::{ImageService, RuntimeService, api};

use crate::actions::{ProbeResults, compute_pod_actions_with_probes};
use crate::config::{ConfigOptions, container_config, pod_log_dir, pod_sandbox_config};
use crate::hash::HashContainer;
use crate::labels::{self, ContainerType, annotated_container_info, labeled_container_info};
use crate::lifecycle::{HandlerRunner, make_termination_message_mount, needs_pod_ip};
use crate::status::{ContainerStatus, PodStatus, RunningContainer, RunningPod, RunningSandbox};
use crate::termination_order::TerminationOrdering;
use crate::{Error, PodSyncResult, Runtime, RuntimeReader, pod_name};

/// Upstream `minimumGracePeriodInSeconds`.
pub const MINIMUM_GRACE_PERIOD: Duration = Duration::from_secs(2);

/// [`MINIMUM_GRACE_PERIOD`] in whole seconds, as upstream counts grace.
const MINIMUM_GRACE_PERIOD_SECONDS: i64 = 2;

/// Whether the pod has a sidecar (upstream `HasRestartableInitContainer`,
/// `pkg/kubelet/types/pod_update.go`).
fn has_restartable_init_container(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|v| v.iter().any(is_restartable_init))
}

/// A CRI runtime that serves both halves of the CRI.
pub trait CriRuntime: RuntimeService + ImageService {}
impl<T: RuntimeService + ImageService> CriRuntime for T {}

/// Drives a CRI runtime to run pods.
pub struct RuntimeManager {
    runtime: Arc<dyn CriRuntime>,
    opts: ConfigOptions,
    runtime_handler: String,
    crash_loop: Arc<Backoff>,
    image_pull: Arc<Backoff>,
    pull_slots: Arc<tokio::sync::Semaphore>,
    pull_limiter: Option<Arc<TokenBucket>>,
    hooks: HandlerRunner,
    probes: Option<Arc<dyn ProbeResults>>,
    keyring: Arc<crate::credentials::DockerKeyring>,
    pull_secrets: Option<Arc<dyn crate::credentials::PullSecrets>>,
    recorder: Arc<dyn EventRecorder>,
    dns: crate::dns::Configurer,
}

/// How images are pulled (upstream `serializeImagePulls`,
/// `maxParallelImagePulls`, `registryPullQPS`, `registryBurst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImagePullPolicy {
    /// At most this many pulls at once: 1 is upstream's default serial
    /// puller.
    pub max_parallel: usize,
    /// Pulls per second to registries; 0 for no limit.
    pub registry_qps: u32,
    /// Burst of pulls above the rate.
    pub registry_burst: u32,
}

impl Default for ImagePullPolicy {
    fn default() -> Self {
        Self {
            max_parallel: 1,
            registry_qps: 5,
            registry_burst: 10,
        }
    }
}

impl std::fmt::Debug for RuntimeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeManager")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// The effective pull policy (upstream defaulting: `Always` for `:latest`
/// or untagged images, else `IfNotPresent`).
pub fn pull_policy(container: &Container) -> &str {
    if let Some(p) = container.image_pull_policy.as_deref() {
        return p;
    }
    let image = container.image.as_deref().unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or(image);
    let untagged = !last.contains(':') && !image.contains('@');
    if untagged || last.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

impl RuntimeManager {
    /// A manager of the pods on `runtime`.
    pub fn new(runtime: Arc<dyn CriRuntime>, opts: ConfigOptions) -> Self {
        let service: Arc<dyn RuntimeService> = runtime.clone();
        let dns = opts.dns_configurer(Arc::new(NoopRecorder));
        Self {
            hooks: HandlerRunner::new(service),
            runtime,
            opts,
            runtime_handler: String::new(),
            crash_loop: Arc::new(Backoff::crash_loop()),
            image_pull: Arc::new(Backoff::image_pull()),
            pull_slots: Arc::new(tokio::sync::Semaphore::new(1)),
            pull_limiter: Some(Arc::new(TokenBucket::registry_pulls())),
            probes: None,
            keyring: Arc::new(crate::credentials::DockerKeyring::new()),
            pull_secrets: None,
            recorder: Arc::new(NoopRecorder),
            dns,
        }
    }

    /// Records Kubernetes events through `recorder` (default: none), as
    /// upstream's runtime manager and image manager do
    /// (`kuberuntime_container.go`, `kuberuntime_manager.go`,
    /// `images/image_manager.go`), about the container (`fieldPath:
    /// spec.containers{name}`) or the pod:
    ///
    /// - images: `Pulling` (`Pulling image "x"`), `Pulled` (`Successfully
    ///   pulled image "x" in 1.2s (1.5s including waiting). Image size: N
    ///   bytes.`, or `Container image "x" already present on machine`),
    ///   Warning `Failed` (`Failed to pull image "x": <error>`), `BackOff`
    ///   (`Back-off pulling image "x"`), Warning `ErrImageNeverPull`,
    ///   Warning `InspectFailed`; then Warning `Failed` `Error:
    ///   ErrImagePull` / `Error: ImagePullBackOff` / ... as the container
    ///   cannot be created;
    /// - containers: `Created` (`Created container: app`), `Started`
    ///   (`Started container app`), Warning `Failed` (`Error: <runtime
    ///   message>`) when creating or starting fails, `Killing` (`Stopping
    ///   container app`, or why: `Container app failed liveness probe, will
    ///   be restarted`), Warning `BackOff` (`Back-off restarting failed
    ///   container app in pod web_default(<uid>)`), Warning
    ///   `FailedPostStartHook` / `FailedPreStopHook` (without the hook's
    ///   output, which may hold secrets);
    /// - the pod: `SandboxChanged`, Warning `FailedCreatePodSandBox`,
    ///   Warning `FailedPodSandBoxStatus`;
    /// - DNS ([`crate::dns`]): Warning `MissingClusterDNS` (on the node and
    ///   the pod) for a cluster-first pod without `clusterDNS`, Warning
    ///   `DNSConfigForming` when nameservers or search paths are trimmed.
    ///
    /// Container IDs in messages are replaced by the container's name, as
    /// upstream does, so that events of successive containers count
    /// together.
    pub fn with_event_recorder(mut self, recorder: Arc<dyn EventRecorder>) -> Self {
        self.dns = self.opts.dns_configurer(recorder.clone());
        self.recorder = recorder;
        self
    }

    /// The pods' DNS configurer (its events go to this manager's
    /// recorder): for the kubelet's one start-up
    /// [`check_limits_for_resolv_conf`](crate::dns::Configurer::check_limits_for_resolv_conf).
    pub fn dns(&self) -> &crate::dns::Configurer {
        &self.dns
    }

    /// Records an event about one of the pod's containers (upstream
    /// `recordContainerEvent`): the container's ID in the message becomes
    /// its name.
    fn container_event(
        &self,
        pod: &Pod,
        container_name: &str,
        container_id: &str,
        event_type: EventType,
        reason: &str,
        message: String,
    ) {
        let message = if container_id.is_empty() {
            message
        } else {
            message.replace(container_id, container_name)
        };
        self.recorder.event(
            &container_ref(pod, container_name),
            event_type,
            reason,
            message,
        );
    }

    /// Records an event about the pod.
    fn pod_event(&self, pod: &Pod, event_type: EventType, reason: &str, message: String) {
        self.recorder
            .event(&pod_ref(pod), event_type, reason, message);
    }

    /// Restarts running containers that failed their liveness or startup
    /// probe, as these results say (upstream: the liveness and startup
    /// managers handed to `NewKubeGenericRuntimeManager`).
    pub fn with_probe_results(mut self, probes: Arc<dyn ProbeResults>) -> Self {
        self.probes = Some(probes);
        self
    }

    /// Pulls images as `policy` says (default: one at a time, 5 QPS, burst 10).
    pub fn with_image_pull_policy(mut self, policy: ImagePullPolicy) -> Self {
        self.pull_slots = Arc::new(tokio::sync::Semaphore::new(policy.max_parallel.max(1)));
        self.pull_limiter = match TokenBucket::new(policy.registry_qps, policy.registry_burst) {
            Ok(bucket) if policy.registry_qps > 0 => Some(Arc::new(bucket)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "invalid registry pull rate; pulls are not rate limited");
                None
            }
        };
        self
    }

    /// Runs lifecycle hooks with this runner (default: one over the
    /// manager's runtime, `User-Agent: kube-lifecycle/<default version>`).
    pub fn with_handler_runner(mut self, hooks: HandlerRunner) -> Self {
        self.hooks = hooks;
        self
    }

    /// Sends `httpGet` lifecycle hooks through `http` (without it they fail:
    /// this crate has no HTTP client of its own; `kubelet-prober`'s
    /// `HttpProber` is the kubelet's).
    pub fn with_http_hooks(mut self, http: Arc<dyn kubelet_container::HttpHook>) -> Self {
        self.hooks = self.hooks.with_http(http);
        self
    }

    /// Uses these backoffs for crash loops and image pulls (defaults:
    /// upstream's 10 s doubling to 300 s for both).
    pub fn with_backoffs(mut self, crash_loop: Arc<Backoff>, image_pull: Arc<Backoff>) -> Self {
        self.crash_loop = crash_loop;
        self.image_pull = image_pull;
        self
    }

    /// Upstream `doBackOff`: a container that exited before restarts only
    /// once its backoff, counted from its last finish, has passed.
    fn do_backoff(
        &self,
        pod: &Pod,
        container: &Container,
        status: &PodStatus,
    ) -> Result<(), Error> {
        let Some(last) = status
            .container_statuses
            .iter()
            .find(|c| c.name == container.name && c.state == crate::status::ContainerState::Exited)
        else {
            return Ok(());
        };
        let key = crash_loop_key(
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.uid.as_deref().unwrap_or_default(),
            &container.name,
            &crate::hash::ContainerHash::of(container).hex(),
        );
        let finished = system_time_from_unix_nanos(last.finished_at);
        if self
            .crash_loop
            .is_in_backoff_since_system_time(&key, finished)
        {
            self.container_event(
                pod,
                &container.name,
                "",
                EventType::Warning,
                reason::BACK_OFF_START_CONTAINER,
                format!(
                    "Back-off restarting failed container {} in pod {}",
                    container.name,
                    pod_desc(pod)
                ),
            );
            return Err(Error::CrashLoopBackOff {
                pod: pod_name(pod),
                container: container.name.clone(),
                delay: self.crash_loop.get(&key),
            });
        }
        self.crash_loop.next_at_system_time(&key, finished);
        Ok(())
    }

    /// The config options in use.
    pub fn options(&self) -> &ConfigOptions {
        &self.opts
    }

    /// Makes sure the container's image is present, by its pull policy
    /// (upstream `EnsureImageExists`); returns the image reference to run.
    /// Records upstream's image events about the container.
    pub async fn ensure_image_exists(
        &self,
        pod: &Pod,
        container: &Container,
        sandbox: &api::PodSandboxConfig,
    ) -> Result<String, Error> {
        let image = container.image.clone().unwrap_or_default();
        let event = |event_type, reason, message: String| {
            self.container_event(pod, &container.name, "", event_type, reason, message)
        };
        if image.is_empty() {
            event(
                EventType::Warning,
                reason::FAILED_TO_INSPECT_IMAGE,
                format!(
                    "Failed to apply default image tag {image:?}: couldn't parse image name {image:?}: invalid reference format"
                ),
            );
            return Err(Error::InvalidPod {
                pod: pod_name(pod),
                reason: format!("container {:?} has no image", container.name),
            });
        }
        let spec = api::ImageSpec {
            image: image.clone(),
            ..Default::default()
        };
        let policy = pull_policy(container);
        if policy != "Always" {
            let present = match self.runtime.image_status(spec.clone(), false).await {
                Ok(present) => present,
                Err(source) => {
                    event(
                        EventType::Warning,
                        reason::FAILED_TO_INSPECT_IMAGE,
                        format!("Failed to inspect image {image:?}: {}", grpc_error(&source)),
                    );
                    return Err(Error::Runtime {
                        pod: pod_name(pod),
                        source,
                    });
                }
            };
            match (present, policy) {
                (Some(found), _) => {
                    event(
                        EventType::Normal,
                        reason::PULLED_IMAGE,
                        format!("Container image {image:?} already present on machine"),
                    );
                    return Ok(found.id);
                }
                (None, "Never") => {
                    event(
                        EventType::Warning,
                        reason::ERR_IMAGE_NEVER_PULL_POLICY,
                        format!(
                            "Container image {image:?} is not present with pull policy of Never"
                        ),
                    );
                    return Err(Error::ImageNeverPull {
                        pod: pod_name(pod),
                        image,
                    });
                }
                (None, _) => {}
            }
        }
        let key = image_pull_key(pod.metadata.uid.as_deref().unwrap_or_default(), &image);
        if self.image_pull.is_in_backoff_now(&key) {
            event(
                EventType::Normal,
                reason::BACK_OFF_PULL_IMAGE,
                format!("Back-off pulling image {image:?}"),
            );
            return Err(Error::ImagePullBackOff {
                pod: pod_name(pod),
                image,
            });
        }
        event(
            EventType::Normal,
            reason::PULLING_IMAGE,
            format!("Pulling image {image:?}"),
        );
        let waiting_since = tokio::time::Instant::now();
        // Upstream's throttledImageService refuses, rather than queues, a
        // pull over the registry rate.
        if self.pull_limiter.as_ref().is_some_and(|l| !l.try_acquire()) {
            event(
                EventType::Warning,
                reason::FAILED_TO_PULL_IMAGE,
                format!("Failed to pull image {image:?}: pull QPS exceeded"),
            );
            self.image_pull.next_now(&key);
            return Err(Error::ImagePullQpsExceeded {
                pod: pod_name(pod),
                image,
            });
        }
        // Serial or bounded-parallel pulls; the permit lives until the pull ends.
        let _slot = self.pull_slots.acquire().await.ok();
        let pull_started = tokio::time::Instant::now();
        // Upstream pullImage: the credentials matching the image, the pod's
        // pull secrets before the node's; each tried in turn; anonymous only
        // when none matches.
        let creds = self.pull_credentials(pod, &image).await;
        tracing::info!(pod = %pod_name(pod), %image, policy, credentials = creds.len(), "pulling image");
        let mut attempts = creds.into_iter().map(Some);
        let mut result = self
            .runtime
            .pull_image(
                spec.clone(),
                attempts.next().flatten(),
                Some(sandbox.clone()),
            )
            .await;
        for auth in attempts {
            if result.is_ok() {
                break;
            }
            result = self
                .runtime
                .pull_image(spec.clone(), auth, Some(sandbox.clone()))
                .await;
        }
        match result {
            Ok(image_ref) => {
                // Upstream's puller reads the size, best effort.
                let size = match self.runtime.image_status(spec, false).await {
                    Ok(Some(found)) => found.size,
                    _ => 0,
                };
                event(
                    EventType::Normal,
                    reason::PULLED_IMAGE,
                    format!(
                        "Successfully pulled image {image:?} in {} ({} including waiting). Image size: {size} bytes.",
                        go_duration(pull_started.elapsed()),
                        go_duration(waiting_since.elapsed()),
                    ),
                );
                self.image_pull.gc();
                Ok(image_ref)
            }
            Err(source) => {
                event(
                    EventType::Warning,
                    reason::FAILED_TO_PULL_IMAGE,
                    format!("Failed to pull image {image:?}: {}", grpc_error(&source)),
                );
                self.image_pull.next_now(&key);
                Err(Error::ImagePull {
                    pod: pod_name(pod),
                    image,
                    source,
                })
            }
        }
    }

    /// The credentials for `image`: the pod's `imagePullSecrets` (when a
    /// [`PullSecrets`](crate::credentials::PullSecrets) source is set), then
    /// the node's keyring. A secret that does not parse is logged and skipped.
    async fn pull_credentials(&self, pod: &Pod, image: &str) -> Vec<api::AuthConfig> {
        let mut keyring = crate::credentials::DockerKeyring::new();
        let names: Vec<String> = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
            .map(|r| r.name.clone())
            .filter(|n| !n.is_empty())
            .collect();
        if let (Some(secrets), false) = (&self.pull_secrets, names.is_empty()) {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            for (origin, data) in secrets.docker_configs(ns, &names).await {
                if let Err(e) = keyring.add_config(&origin, &data) {
                    tracing::warn!(pod = %pod_name(pod), error = %e, "unusable image pull secret");
                }
            }
        }
        let mut creds = keyring.lookup(image);
        creds.extend(self.keyring.lookup(image));
        creds
    }

    /// Pulls with the node's credentials (upstream: the docker config in
    /// `--root-dir` or `~/.docker`).
    pub fn with_keyring(mut self, keyring: crate::credentials::DockerKeyring) -> Self {
        self.keyring = Arc::new(keyring);
        self
    }

    /// Reads pods' `imagePullSecrets` from `secrets`.
    pub fn with_pull_secrets(mut self, secrets: Arc<dyn crate::credentials::PullSecrets>) -> Self {
        self.pull_secrets = Some(secrets);
        self
    }

    /// Creates and starts one container, then runs its `postStart` hook
    /// (upstream `startContainer`, `kuberuntime_container.go`). A failed hook
    /// kills the container (message `FailedPostStartHook`, its `preStop`
    /// hook included) and fails the start with [`Error::PostStartHook`].
    #[allow(clippy::too_many_arguments)]
    async fn start_container(
        &self,
        pod: &Pod,
        container: &Container,
        container_type: ContainerType,
        sandbox_id: &str,
        sandbox: &api::PodSandboxConfig,
        status: &PodStatus,
        pod_ips: &[String],
        volumes: &crate::config::PodVolumes,
    ) -> Result<String, Error> {
        self.start_container_spec(
            pod,
            container,
            container_type,
            None,
            sandbox_id,
            sandbox,
            status,
            pod_ips,
            volumes,
        )
        .await
    }

    /// [`Self::start_container`] of a regular, init or (with `ephemeral`)
    /// ephemeral container (upstream `startSpec`): an ephemeral one is
    /// checked first and joins its target's PID namespace (see
    /// [`crate::ephemeral`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start_container_spec(
        &self,
        pod: &Pod,
        container: &Container,
        container_type: ContainerType,
        ephemeral: Option<crate::ephemeral::EphemeralSpec<'_>>,
        sandbox_id: &str,
        sandbox: &api::PodSandboxConfig,
        status: &PodStatus,
        pod_ips: &[String],
        volumes: &crate::config::PodVolumes,
    ) -> Result<String, Error> {
        self.do_backoff(pod, container, status)?;
        // Upstream startContainer: every failure to get the container
        // created is a Warning `Failed` event "Error: <message>".
        let failed = |message: String| {
            self.container_event(
                pod,
                &container.name,
                "",
                EventType::Warning,
                reason::FAILED_TO_CREATE_CONTAINER,
                format!("Error: {message}"),
            )
        };
        if let Some(e) = ephemeral
            && let Err(e) = crate::ephemeral::validate(pod, e.index, e.container)
        {
            if let Some(message) = config_error_message(&e) {
                failed(message);
            }
            return Err(e);
        }
        let image_ref = match self.ensure_image_exists(pod, container, sandbox).await {
            Ok(r) => r,
            Err(e) => {
                failed(image_error_name(&e));
                return Err(e);
            }
        };
        match self
            .create_and_start(
                pod,
                container,
                container_type,
                sandbox_id,
                sandbox,
                status,
                pod_ips,
                volumes,
                &image_ref,
                ephemeral,
            )
            .await
        {
            Ok(id) => Ok(id),
            Err(e) => {
                if let Some(message) = config_error_message(&e) {
                    failed(message);
                }
                Err(e)
            }
        }
    }

    /// The rest of [`Self::start_container`], once the image is there:
    /// create, start, `postStart`.
    #[allow(clippy::too_many_arguments)]
    async fn create_and_start(
        &self,
        pod: &Pod,
        container: &Container,
        container_type: ContainerType,
        sandbox_id: &str,
        sandbox: &api::PodSandboxConfig,
        status: &PodStatus,
        pod_ips: &[String],
        volumes: &crate::config::PodVolumes,
        image_ref: &str,
        ephemeral: Option<crate::ephemeral::EphemeralSpec<'_>>,
    ) -> Result<String, Error> {
        // Upstream startContainer: the target is resolved once the image is
        // there.
        let target = match ephemeral {
            Some(e) => crate::ephemeral::target_container_id(pod, e.container, status)?,
            None => None,
        };
        let restart_count = status
            .find_container_status_by_name(&container.name)
            .map(|s| s.restart_count + 1)
            .unwrap_or(0);
        let log_dir = pod_log_dir(&self.opts.pod_logs_dir, pod).join(&container.name);
        std::fs::create_dir_all(&log_dir).map_err(|e| Error::Io {
            path: log_dir.clone(),
            source: e,
        })?;
        if let Some(hosts) = &volumes.etc_hosts
            && crate::hosts::should_mount_hosts_file(pod, container, pod_ips)
        {
            crate::hosts::ensure_hosts_file(hosts, pod, pod_ips, &self.opts.cluster_domain)?;
        }
        let mut config = container_config(
            pod,
            container,
            container_type,
            restart_count,
            image_ref,
            pod_ips,
            volumes,
            &self.opts,
        )?;
        if let Some(target) = &target {
            crate::ephemeral::set_pid_target(&mut config, target);
        }
        // Upstream makeMounts: the termination-message file, last.
        if let Some(mount) = volumes
            .pod_dir
            .as_deref()
            .and_then(|dir| make_termination_message_mount(dir, container))
        {
            config.mounts.push(mount);
        }
        let id = match self
            .runtime
            .create_container(sandbox_id, config, sandbox.clone())
            .await
        {
            Ok(id) => id,
            Err(source) => {
                self.container_event(
                    pod,
                    &container.name,
                    "",
                    EventType::Warning,
                    reason::FAILED_TO_CREATE_CONTAINER,
                    format!("Error: {}", source.to_status().message()),
                );
                return Err(Error::CreateContainer {
                    pod: pod_name(pod),
                    container: container.name.clone(),
                    source,
                });
            }
        };
        self.container_event(
            pod,
            &container.name,
            &id,
            EventType::Normal,
            reason::CREATED_CONTAINER,
            format!("Created container: {}", container.name),
        );
        if let Err(source) = self.runtime.start_container(&id).await {
            self.container_event(
                pod,
                &container.name,
                &id,
                EventType::Warning,
                reason::FAILED_TO_START_CONTAINER,
                format!("Error: {}", source.to_status().message()),
            );
            return Err(Error::StartContainer {
                pod: pod_name(pod),
                container: container.name.clone(),
                source,
            });
        }
        self.container_event(
            pod,
            &container.name,
            &id,
            EventType::Normal,
            reason::STARTED_CONTAINER,
            format!("Started container {}", container.name),
        );
        tracing::info!(pod = %pod_name(pod), container = %container.name, id = %id, restart_count, "container started");
        // The CPU manager's reconcile loop tracks started containers.
        self.opts
            .container_manager
            .add_container(pod, container, &id);
        if let Some(hook) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            && let Err(source) = self
                .hooks
                .run(&id, pod, container, hook, pod_ips, None)
                .await
        {
            tracing::error!(pod = %pod_name(pod), container = %container.name, id = %id, error = %source, "Failed to execute PostStartHook");
            // Not the hook's output: it may hold secrets.
            self.container_event(
                pod,
                &container.name,
                &id,
                EventType::Warning,
                reason::FAILED_POST_START_HOOK,
                "PostStartHook failed".into(),
            );
            let running = RunningContainer {
                id: id.clone(),
                name: container.name.clone(),
                state: crate::status::ContainerState::Running,
                created_at: 0,
                hash: None,
                pod_termination_grace_period: None,
            };
            if let Err(e) = self
                .kill_container(
                    Some(pod),
                    &running,
                    None,
                    crate::lifecycle::FAILED_POST_START_HOOK,
                )
                .await
            {
                tracing::error!(pod = %pod_name(pod), container = %container.name, id = %id, error = %e, "Failed to kill container");
            }
            return Err(Error::PostStartHook {
                pod: pod_name(pod),
                container: container.name.clone(),
                source: Box::new(source),
            });
        }
        Ok(id)
    }

    /// The pod's IPs now, for an HTTP hook without a host (upstream
    /// `runHTTPHandler` asks for the pod status).
    async fn current_pod_ips(&self, pod: &Pod) -> Vec<String> {
        let m = &pod.metadata;
        match self
            .get_pod_status(
                m.uid.as_deref().unwrap_or_default(),
                m.name.as_deref().unwrap_or_default(),
                m.namespace.as_deref().unwrap_or("default"),
            )
            .await
        {
            Ok(status) => status.ips,
            Err(e) => {
                tracing::error!(pod = %pod_name(pod), error = %e, "Unable to get pod info, event handlers may be invalid.");
                Vec::new()
            }
        }
    }

    /// Runs the container's preStop hook, waiting for it at most `grace`
    /// seconds; returns the whole seconds it took (upstream
    /// `executePreStopHook`). A failure is logged, never fatal.
    async fn execute_pre_stop_hook(
        &self,
        pod: &Pod,
        spec: &Container,
        container: &RunningContainer,
        handler: &LifecycleHandler,
        grace: i64,
    ) -> i64 {
        tracing::debug!(pod = %pod_name(pod), container = %container.name, id = %container.id, "running preStop hook");
        let limit = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        let started = tokio::time::Instant::now();
        let hook = async {
            let ips = if needs_pod_ip(handler) {
                self.current_pod_ips(pod).await
            } else {
                Vec::new()
            };
            self.hooks
                .run(&container.id, pod, spec, handler, &ips, Some(limit))
                .await
        };
        match tokio::time::timeout(limit, hook).await {
            Ok(Ok(())) => {
                tracing::debug!(pod = %pod_name(pod), container = %container.name, "preStop hook completed")
            }
            Ok(Err(e)) => {
                tracing::warn!(pod = %pod_name(pod), container = %container.name, id = %container.id, error = %e, "PreStop hook failed");
                // Not the hook's output: it may hold secrets.
                self.container_event(
                    pod,
                    &spec.name,
                    &container.id,
                    EventType::Warning,
                    reason::FAILED_PRE_STOP_HOOK,
                    "PreStopHook failed".into(),
                );
            }
            Err(_) => {
                tracing::info!(pod = %pod_name(pod), container = %container.name, grace, "PreStop hook not completed in grace period")
            }
        }
        i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX)
    }

    /// The pod and container specs a container was created from, rebuilt
    /// from its labels and annotations, for killing it when its pod is
    /// gone (upstream `restoreSpecsFromContainerLabels`): names, grace
    /// periods, ports, termination-message path and preStop handler. `None`
    /// when the container no longer exists.
    async fn restore_specs_from_container_labels(
        &self,
        container: &RunningContainer,
    ) -> Result<Option<(Pod, Container)>, Error> {
        let status = match self.runtime.container_status(&container.id, false).await {
            Ok(reply) => reply.status,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(source) => {
                return Err(Error::KillContainer {
                    container: container.name.clone(),
                    id: container.id.clone(),
                    source,
                });
            }
        };
        let Some(status) = status else {
            return Err(Error::KillContainer {
                container: container.name.clone(),
                id: container.id.clone(),
                source: kubelet_cri_client::Error::malformed(
                    kubelet_cri_client::Call::with_id("ContainerStatus", &container.id),
                    "the reply has no status",
                ),
            });
        };
        let l = labeled_container_info(&status.labels);
        let a = annotated_container_info(&status.annotations);
        let pod = Pod {
            metadata: ObjectMeta {
                uid: Some(l.pod_uid),
                name: Some(l.pod_name),
                namespace: Some(l.pod_namespace),
                deletion_grace_period_seconds: a.pod_deletion_grace_period,
                ..Default::default()
            },
            spec: Some(PodSpec {
                termination_grace_period_seconds: a.pod_termination_grace_period,
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = Container {
            name: if l.container_name.is_empty() {
                container.name.clone()
            } else {
                l.container_name
            },
            ports: Some(a.ports).filter(|p| !p.is_empty()),
            termination_message_path: Some(a.termination_message_path),
            lifecycle: a.pre_stop_handler.map(|h| Lifecycle {
                pre_stop: Some(h),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(Some((pod, spec)))
    }

    /// Stops one container (upstream `killContainer`,
    /// `kuberuntime_container.go`): the grace period is the pod's deletion
    /// grace period, else its `terminationGracePeriodSeconds`, else 2 s
    /// (`setTerminationGracePeriod`), and `grace_override` replaces it; a
    /// running container's preStop hook runs first, for at most that long;
    /// then StopContainer gets what is left in whole seconds, at least 2, so
    /// SIGTERM follows the hook and SIGKILL the grace period. With `pod`
    /// `None` the specs are rebuilt from the container's annotations. A
    /// `Killing` event says `message`, or `Stopping container <name>` when
    /// it is empty.
    pub async fn kill_container(
        &self,
        pod: Option<&Pod>,
        container: &RunningContainer,
        grace_override: Option<i64>,
        message: &str,
    ) -> Result<(), Error> {
        self.kill_container_ordered(pod, container, grace_override, message, None)
            .await
    }

    /// [`Self::kill_container`] within a pod's termination `ordering`
    /// (upstream `killContainer`'s `ordering`): after the preStop hook the
    /// container waits for its turn, at most its remaining grace period,
    /// which the wait shortens (in whole seconds, as upstream truncates).
    async fn kill_container_ordered(
        &self,
        pod: Option<&Pod>,
        container: &RunningContainer,
        grace_override: Option<i64>,
        message: &str,
        ordering: Option<&TerminationOrdering>,
    ) -> Result<(), Error> {
        let restored = match pod {
            Some(_) => None,
            None => match self.restore_specs_from_container_labels(container).await? {
                Some(r) => Some(r),
                // Gone already: nothing to stop.
                None => return Ok(()),
            },
        };
        let (pod, spec) = match (pod, &restored) {
            (Some(p), _) => (
                p,
                crate::config::all_containers(p).find(|c| c.name == container.name),
            ),
            (None, Some((p, c))) => (p, Some(c)),
            (None, None) => return Ok(()),
        };
        let mut grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(MINIMUM_GRACE_PERIOD_SECONDS);
        if let Some(o) = grace_override {
            grace = o;
        }
        tracing::info!(pod = %pod_name(pod), container = %container.name, id = %container.id, grace, message, "killing container");
        let message = if message.is_empty() {
            format!("Stopping container {}", container.name)
        } else {
            message.to_owned()
        };
        self.container_event(
            pod,
            &container.name,
            &container.id,
            EventType::Normal,
            reason::KILLING_CONTAINER,
            message,
        );
        if let Some(spec) = spec
            && let Some(handler) = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
            && grace > 0
            && container.state == crate::status::ContainerState::Running
        {
            grace -= self
                .execute_pre_stop_hook(pod, spec, container, handler, grace)
                .await;
        }
        if let Some(o) = ordering
            && grace > 0
        {
            let waited = o.wait_for_turn(&container.name, grace).await;
            grace -= i64::try_from(waited.as_secs()).unwrap_or(grace);
        }
        // Always a minimal shutdown window, to avoid needless SIGKILLs.
        let grace = grace.max(MINIMUM_GRACE_PERIOD_SECONDS);
        let timeout = Duration::from_secs(u64::try_from(grace).unwrap_or(2));
        match self.runtime.stop_container(&container.id, timeout).await {
            Ok(()) => {
                if let Some(o) = ordering {
                    o.container_terminated(&container.name);
                }
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(source) => Err(Error::KillContainer {
                container: container.name.clone(),
                id: container.id.clone(),
                source,
            }),
        }
    }

    /// One container garbage collection pass (see [`crate::gc`]).
    pub async fn garbage_collect(
        &self,
        policy: crate::gc::GcPolicy,
        all_sources_ready: bool,
        evict_terminated_pods: bool,
        pods: &dyn crate::gc::PodStateProvider,
    ) -> Result<crate::gc::GcResult, Error> {
        crate::gc::garbage_collect(
            self.runtime.as_ref(),
            &self.opts.pod_logs_dir,
            policy,
            all_sources_ready,
            evict_terminated_pods,
            pods,
        )
        .await
        .map_err(|source| Error::Runtime {
            pod: "*".into(),
            source,
        })
    }
}

impl RuntimeManager {
    /// Every pod in the runtime, grouped by the pod UID label (upstream
    /// `GetPods`); [`RuntimeReader::get_pods`] with this crate's error.
    pub async fn running_pods(&self, all: bool) -> Result<Vec<RunningPod>, Error> {
        let wrap = |source| Error::Runtime {
            pod: "*".into(),
            source,
        };
        let sandboxes = self.runtime.list_pod_sandbox(None).await.map_err(wrap)?;
        let containers = self.runtime.list_containers(None).await.map_err(wrap)?;
        // Pods in the order first seen, with an index by UID: the listed
        // objects are owned, so their strings are moved rather than copied,
        // and only the labels a pod or container needs are read. Both are
        // sized up front, before the listed objects start to be freed.
        let mut pods: Vec<RunningPod> = Vec::with_capacity(sandboxes.len());
        let mut index: HashMap<String, usize> = HashMap::with_capacity(sandboxes.len());
        for mut s in sandboxes {
            let ready = s.state() == api::PodSandboxState::SandboxReady;
            if !all && !ready {
                continue;
            }
            let meta = s.metadata.take().unwrap_or_default();
            let uid = match s.labels.remove(labels::POD_UID) {
                Some(uid) if !uid.is_empty() => uid,
                _ => meta.uid,
            };
            let sandbox = RunningSandbox {
                id: s.id,
                ready,
                created_at: s.created_at,
            };
            match index.get(&uid) {
                Some(&i) => pods[i].sandboxes.push(sandbox),
                None => {
                    index.insert(uid.clone(), pods.len());
                    pods.push(RunningPod {
                        uid,
                        name: meta.name,
                        namespace: meta.namespace,
                        sandboxes: vec![sandbox],
                        containers: Vec::new(),
                    });
                }
            }
        }
        for mut c in containers {
            let state = crate::status::ContainerState::from(c.state());
            if !all && state != crate::status::ContainerState::Running {
                continue;
            }
            let Some(uid) = c.labels.get(labels::POD_UID).filter(|uid| !uid.is_empty()) else {
                continue;
            };
            let i = match index.get(uid) {
                Some(&i) => i,
                None => {
                    let uid = uid.clone();
                    let i = pods.len();
                    index.insert(uid.clone(), i);
                    pods.push(RunningPod {
                        uid,
                        name: c.labels.remove(labels::POD_NAME).unwrap_or_default(),
                        namespace: c.labels.remove(labels::POD_NAMESPACE).unwrap_or_default(),
                        ..Default::default()
                    });
                    i
                }
            };
            let name = match c.metadata.take() {
                Some(m) => m.name,
                None => c.labels.remove(labels::CONTAINER_NAME).unwrap_or_default(),
            };
            pods[i].containers.push(RunningContainer {
                hash: labels::annotated_container_hash(&c.annotations),
                pod_termination_grace_period: labels::annotated_pod_termination_grace_period(
                    &c.annotations,
                ),
                id: c.id,
                name,
                state,
                created_at: c.created_at,
            });
        }
        // By UID, as before; the UIDs are unique.
        pods.sort_unstable_by(|a, b| a.uid.cmp(&b.uid));
        for p in &mut pods {
            p.sandboxes.sort_by_key(|x| std::cmp::Reverse(x.created_at));
            p.containers
                .sort_by_key(|x| std::cmp::Reverse(x.created_at));
        }
        Ok(pods)
    }

    /// One pod's runtime status (upstream `GetPodStatus`);
    /// [`RuntimeReader::get_pod_status`] with this crate's error.
    pub async fn pod_status(
        &self,
        uid: &str,
        name: &str,
        namespace: &str,
    ) -> Result<PodStatus, Error> {
        let wrap = |source| Error::Runtime {
            pod: format!("{namespace}/{name}"),
            source,
        };
        let selector: HashMap<String, String> =
            HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]);
        let mut sandboxes = self
            .runtime
            .list_pod_sandbox(Some(api::PodSandboxFilter {
                label_selector: selector.clone(),
                ..Default::default()
            }))
            .await
            .map_err(wrap)?;
        sandboxes.sort_by_key(|x| std::cmp::Reverse(x.created_at));
        let mut status = PodStatus {
            uid: uid.into(),
            name: name.into(),
            namespace: namespace.into(),
            ..Default::default()
        };
        for (i, s) in sandboxes.iter().enumerate() {
            match self.runtime.pod_sandbox_status(&s.id, false).await {
                Ok(reply) => {
                    if let Some(st) = reply.status {
                        // Upstream takes the IPs of the newest sandbox, if ready.
                        if i == 0
                            && st.state() == api::PodSandboxState::SandboxReady
                            && let Some(net) = &st.network
                        {
                            status.ips = std::iter::once(net.ip.clone())
                                .chain(net.additional_ips.iter().map(|p| p.ip.clone()))
                                .filter(|ip| !ip.is_empty())
                                .collect();
                        }
                        status.sandbox_statuses.push(st);
                    }
                }
                // Removed between the list and the status: skip it.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(wrap(e)),
            }
        }
        let containers = self
            .runtime
            .list_containers(Some(api::ContainerFilter {
                label_selector: selector,
                ..Default::default()
            }))
            .await
            .map_err(wrap)?;
        for c in containers {
            match self.runtime.container_status(&c.id, false).await {
                Ok(reply) => {
                    if let Some(st) = reply.status {
                        status
                            .container_statuses
                            .push(crate::status::container_status_from_cri(&st));
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(wrap(e)),
            }
        }
        status
            .container_statuses
            .sort_by_key(|x| std::cmp::Reverse(x.created_at));
        Ok(status)
    }
}

/// A CRI error as upstream's messages print a gRPC error: `rpc error: code
/// = NotFound desc = <the runtime's message>` (local errors as they are).
fn grpc_error(e: &kubelet_cri_client::Error) -> String {
    if e.call().is_some() {
        format!(
            "rpc error: code = {:?} desc = {}",
            e.code(),
            e.to_status().message()
        )
    } else {
        e.to_string()
    }
}

/// Upstream's name of an image error, the message of its `Failed` event
/// `Error: <name>` (`images.ErrImagePull`, `ErrImagePullBackOff`, ...).
fn image_error_name(e: &Error) -> String {
    match e {
        Error::ImagePull { .. } | Error::ImagePullQpsExceeded { .. } => "ErrImagePull".into(),
        Error::ImagePullBackOff { .. } => "ImagePullBackOff".into(),
        Error::ImageNeverPull { .. } => "ErrImageNeverPull".into(),
        Error::Runtime { .. } => "ImageInspectError".into(),
        Error::InvalidPod { .. } => "InvalidImageName".into(),
        other => other.to_string(),
    }
}

/// The message of the `Failed` event of a container whose config could not
/// be made (upstream `ErrCreateContainerConfig`); `None` for the errors
/// that record their own events.
fn config_error_message(e: &Error) -> Option<String> {
    match e {
        Error::CreateContainer { .. }
        | Error::StartContainer { .. }
        | Error::PostStartHook { .. } => None,
        // Upstream records the message alone: `Error: secret "x" not found`.
        Error::CreateContainerConfig { source, .. } => Some(source.to_string()),
        Error::EphemeralContainerConfig { message, .. } => Some(message.clone()),
        other => Some(other.to_string()),
    }
}

/// A duration as Go prints a `time.Duration` truncated to milliseconds
/// (`523ms`, `1.2s`, `1m30.5s`, `0s`), as upstream's `Pulled` event does.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (sec, frac) = (rest / 1000, rest % 1000);
    let mut secs = sec.to_string();
    if frac > 0 {
        let f = format!("{frac:03}");
        secs.push('.');
        secs.push_str(f.trim_end_matches('0'));
    }
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

#[async_trait]
impl RuntimeReader for RuntimeManager {
    async fn get_pods(&self, all: bool) -> Result<Vec<RunningPod>, kubelet_container::Error> {
        self.running_pods(all)
            .await
            .map_err(|e| kubelet_container::Error::runtime("*", e))
    }

    async fn get_pod_status(
        &self,
        uid: &str,
        name: &str,
        namespace: &str,
    ) -> Result<PodStatus, kubelet_container::Error> {
        self.pod_status(uid, name, namespace)
            .await
            .map_err(|e| kubelet_container::Error::runtime(format!("{namespace}/{name}"), e))
    }

    fn container_status_from_cri(&self, status: &api::ContainerStatus) -> ContainerStatus {
        crate::status::container_status_from_cri(status)
    }
}

#[async_trait]
impl Runtime for RuntimeManager {
    async fn sync_pod(
        &self,
        pod: &Pod,
        status: &PodStatus,
        volumes: &crate::config::PodVolumes,
    ) -> PodSyncResult {
        let mut result = PodSyncResult::default();
        let actions = compute_pod_actions_with_probes(pod, status, self.probes.as_deref());
        tracing::debug!(pod = %pod_name(pod), ?actions, "computed pod actions");
        if actions.create_sandbox && actions.sandbox_id.as_deref().is_some_and(|s| !s.is_empty()) {
            self.pod_event(
                pod,
                EventType::Normal,
                reason::SANDBOX_CHANGED,
                "Pod sandbox changed, it will be killed and re-created.".into(),
            );
        }

        // Step 2: kill the pod, or the containers that must not run.
        if actions.kill_pod {
            let running = status.to_running_pod();
            if let Err(e) = self.kill_pod(Some(pod), &running, None).await {
                result.errors.push(e);
                return result;
            }
            result.killed_pod = true;
            if actions.create_sandbox {
                // Upstream purges init containers so the sequence restarts.
                for c in status
                    .container_statuses
                    .iter()
                    .filter(|c| c.container_type == ContainerType::Init)
                {
                    if let Err(e) = self.runtime.remove_container(&c.id).await {
                        tracing::warn!(container = %c.name, error = %e, "cannot purge init container");
                    }
                }
            }
        } else {
            for k in &actions.containers_to_kill {
                let running = status.container_statuses.iter().find(|c| c.id == k.id);
                if let Some(c) = running.map(RunningContainer::from) {
                    // Upstream `setTerminationGracePeriod`: a deletion's
                    // grace period first, then the failed probe's own.
                    let grace = k
                        .probe_grace_period
                        .filter(|_| pod.metadata.deletion_grace_period_seconds.is_none());
                    if let Err(e) = self.kill_container(Some(pod), &c, grace, &k.message).await {
                        result.errors.push(e);
                        return result;
                    }
                    result.killed_containers.push(k.name.clone());
                }
            }
        }

        // Step 4: create the sandbox.
        let mut sandbox_id = actions.sandbox_id.clone().unwrap_or_default();
        let mut pod_ips = status.ips.clone();
        let sandbox_failed = |message: String| {
            self.pod_event(
                pod,
                EventType::Warning,
                reason::FAILED_CREATE_POD_SAND_BOX,
                format!("Failed to create pod sandbox: {message}"),
            )
        };
        let sandbox_config = match pod_sandbox_config(pod, actions.attempt, &self.opts, &self.dns) {
            Ok(c) => c,
            Err(e) => {
                if actions.create_sandbox {
                    sandbox_failed(e.to_string());
                }
                result.errors.push(e);
                return result;
            }
        };
        if actions.create_sandbox {
            let log_dir = PathBuf::from(&sandbox_config.log_directory);
            if let Err(e) = std::fs::create_dir_all(&log_dir) {
                let e = Error::Io {
                    path: log_dir,
                    source: e,
                };
                sandbox_failed(e.to_string());
                result.errors.push(e);
                return result;
            }
            match self
                .runtime
                .run_pod_sandbox(sandbox_config.clone(), &self.runtime_handler)
                .await
            {
                Ok(id) => sandbox_id = id,
                Err(source) => {
                    sandbox_failed(grpc_error(&source));
                    result.errors.push(Error::CreateSandbox {
                        pod: pod_name(pod),
                        source,
                    });
                    return result;
                }
            }
            result.created_sandbox = Some(sandbox_id.clone());
            match self.runtime.pod_sandbox_status(&sandbox_id, false).await {
                Ok(reply) => {
                    pod_ips = reply
                        .status
                        .and_then(|s| s.network)
                        .map(|n| vec![n.ip])
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|ip| !ip.is_empty())
                        .collect();
                }
                Err(source) => {
                    self.pod_event(
                        pod,
                        EventType::Warning,
                        reason::FAILED_STATUS_POD_SAND_BOX,
                        format!("Unable to get pod sandbox status: {}", grpc_error(&source)),
                    );
                    result.errors.push(Error::Runtime {
                        pod: pod_name(pod),
                        source,
                    });
                    return result;
                }
            }
        }
        if sandbox_id.is_empty() {
            return result;
        }

        // Step 5: ephemeral containers, before init containers (upstream:
        // so that they run even when an init container cannot start).
        for &i in &actions.ephemeral_containers_to_start {
            let started = self
                .start_ephemeral_container(
                    pod,
                    i,
                    &sandbox_id,
                    &sandbox_config,
                    status,
                    &pod_ips,
                    volumes,
                )
                .await;
            match started {
                Some(Ok(name)) => result.started_containers.push(name),
                Some(Err(e)) => result.errors.push(e),
                None => {}
            }
        }

        let spec = pod.spec.as_ref();
        // Step 6: init containers in order; a regular one failing to start
        // ends the sync, a sidecar failing to start does not.
        for &i in &actions.init_containers_to_start {
            let Some(c) = spec
                .and_then(|s| s.init_containers.as_ref())
                .and_then(|v| v.get(i))
            else {
                return result;
            };
            match self
                .start_container(
                    pod,
                    c,
                    ContainerType::Init,
                    &sandbox_id,
                    &sandbox_config,
                    status,
                    &pod_ips,
                    volumes,
                )
                .await
            {
                Ok(_) => result.started_containers.push(c.name.clone()),
                Err(e) => {
                    result.errors.push(e);
                    if !is_restartable_init(c) {
                        return result;
                    }
                }
            }
        }

        // Step 9: app containers; one failing does not stop the others.
        for &i in &actions.containers_to_start {
            let Some(c) = spec.and_then(|s| s.containers.get(i)) else {
                continue;
            };
            match self
                .start_container(
                    pod,
                    c,
                    ContainerType::Regular,
                    &sandbox_id,
                    &sandbox_config,
                    status,
                    &pod_ips,
                    volumes,
                )
                .await
            {
                Ok(_) => result.started_containers.push(c.name.clone()),
                Err(e) => result.errors.push(e),
            }
        }
        result
    }

    async fn kill_pod(
        &self,
        pod: Option<&Pod>,
        running: &RunningPod,
        grace_override: Option<i64>,
    ) -> Result<(), Error> {
        // Upstream killPodWithSyncResult: all containers in parallel, then
        // every sandbox; with sidecars, in their termination order
        // (killContainersWithSyncResult).
        let to_kill: Vec<&RunningContainer> = running
            .containers
            .iter()
            .filter(|c| {
                c.state == crate::status::ContainerState::Running
                    || c.state == crate::status::ContainerState::Unknown
                    || c.state == crate::status::ContainerState::Created
            })
            .collect();
        let ordering = pod
            .filter(|p| has_restartable_init_container(p))
            .map(|p| TerminationOrdering::new(p, to_kill.iter().map(|c| c.name.as_str())));
        let kills = to_kill
            .iter()
            .map(|c| self.kill_container_ordered(pod, c, grace_override, "", ordering.as_ref()));
        let mut first_error = None;
        for r in join_all(kills).await {
            if let Err(e) = r {
                tracing::warn!(pod = %running.name, error = %e, "kill container failed");
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for s in &running.sandboxes {
            match self.runtime.stop_pod_sandbox(&s.id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(source) => {
                    return Err(Error::KillPod {
                        pod: format!("{}/{}", running.namespace, running.name),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    async fn remove_pod(&self, running: &RunningPod) -> Result<(), Error> {
        for s in &running.sandboxes {
            match self.runtime.remove_pod_sandbox(&s.id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(source) => {
                    return Err(Error::KillPod {
                        pod: format!("{}/{}", running.namespace, running.name),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_prints_them() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_micros(900)), "0s");
        assert_eq!(go_duration(ms(523)), "523ms");
        assert_eq!(go_duration(ms(1200)), "1.2s");
        assert_eq!(go_duration(ms(1234)), "1.234s");
        assert_eq!(go_duration(ms(60_000)), "1m0s");
        assert_eq!(go_duration(ms(90_500)), "1m30.5s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
        assert_eq!(go_duration(ms(3_723_050)), "1h2m3.05s");
    }

    #[test]
    fn grpc_errors_print_as_upstream_sees_them() {
        let e = kubelet_cri_client::Error::NotFound {
            call: kubelet_cri_client::Call::with_id("PullImage", "x"),
            message: "pull access denied".into(),
        };
        assert_eq!(
            grpc_error(&e),
            "rpc error: code = NotFound desc = pull access denied"
        );
    }
}
