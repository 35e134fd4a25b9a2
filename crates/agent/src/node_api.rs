//! The kubelet as the node API's host ([`kubelet_server::NodeApi`]):
//! upstream's `HostInterface` implementation on `*Kubelet`
//! (`pkg/kubelet/kubelet_getters.go`, `kubelet_pods.go`
//! `GetKubeletContainerLogs`, `pkg/kubelet/stats`).
//!
//! `/pods` reads the pod manager and the status manager (no runtime call);
//! `/containerLogs` finds the log through one runtime status call;
//! `/stats/summary` reads the node's cgroups and filesystems (the eviction
//! crate's [`CgroupSummaryProvider`], the same summary the eviction manager
//! reads, in the one model [`kubelet_container::stats`]) and adds the
//! node's name and CPU and the CRI's container stats.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kubelet_container::stats::{self as api, SummaryProvider};
use kubelet_cri_client::RuntimeService;
use kubelet_eviction::cgroup_summary::CgroupSummaryProvider;
use kubelet_kuberuntime::{ContainerState, PodStatus, RunningPod, Runtime};
use kubelet_podworkers::PodStatusCache;
use kubelet_server::{ContainerLog, LogLookup, NodeApi, RunOutcome, StreamLookup, StreamRequest};

use crate::Kubelet;

/// The node API host over a running [`Kubelet`].
pub struct KubeletNodeApi<C>
where
    C: PodStatusCache<Status = Arc<PodStatus>>,
{
    kubelet: Arc<Kubelet<C>>,
    runtime: Arc<dyn Runtime>,
    cri: Arc<dyn RuntimeService>,
    config: serde_json::Value,
    node_name: String,
    stats: CgroupSummaryProvider,
    started: SystemTime,
    /// The last reading of the node's CPU usage, for `usageNanoCores`.
    last_cpu: std::sync::Mutex<Option<(Instant, u64)>>,
    /// The PLEG, for the `pleg` check of `/healthz`.
    pleg: Option<Arc<dyn kubelet_pleg::PodLifecycleEventGenerator>>,
    /// The PLEG's pod cache, to find a session's container without a
    /// runtime round trip.
    pod_cache: Option<Arc<kubelet_container::PodCache>>,
}

impl<C> std::fmt::Debug for KubeletNodeApi<C>
where
    C: PodStatusCache<Status = Arc<PodStatus>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletNodeApi")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

impl<C> KubeletNodeApi<C>
where
    C: PodStatusCache<Status = Arc<PodStatus>>,
{
    /// A host serving `kubelet`'s pods, logs through `runtime` and stats
    /// from `stats` and `cri`; `config` is served by `/configz`.
    pub fn new(
        kubelet: Arc<Kubelet<C>>,
        runtime: Arc<dyn Runtime>,
        cri: Arc<dyn RuntimeService>,
        config: serde_json::Value,
        node_name: impl Into<String>,
        stats: CgroupSummaryProvider,
    ) -> Self {
        Self {
            kubelet,
            runtime,
            cri,
            config,
            node_name: node_name.into(),
            stats,
            started: SystemTime::now(),
            last_cpu: std::sync::Mutex::new(None),
            pleg: None,
            pod_cache: None,
        }
    }

    /// Finds the containers of `/exec`, `/attach`, `/portForward` and
    /// `/run` in `cache` (the PLEG's) first, and asks the runtime only
    /// when the cache has no such running container or the runtime refuses
    /// the one it names (it may have just exited). Upstream lists the
    /// runtime's pods on every request (`findContainer`); the cache spares
    /// two CRI calls per session.
    pub fn with_pod_cache(mut self, cache: Arc<kubelet_container::PodCache>) -> Self {
        self.pod_cache = Some(cache);
        self
    }

    /// Serves the health of `pleg` as the `pleg` check of `/healthz`.
    pub fn with_pleg(mut self, pleg: Arc<dyn kubelet_pleg::PodLifecycleEventGenerator>) -> Self {
        self.pleg = Some(pleg);
        self
    }

    /// The node's CPU: cumulative usage from the root cgroup (v1
    /// `cpuacct.usage`, v2 `cpu.stat` `usage_usec`), and the rate since the
    /// previous reading (upstream: cadvisor's root container).
    fn node_cpu(&self) -> Option<api::CpuStats> {
        let root = std::path::Path::new("/sys/fs/cgroup");
        let total = std::fs::read_to_string(root.join("cpuacct/cpuacct.usage"))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .or_else(|| {
                let stat = std::fs::read_to_string(root.join("cpu.stat")).ok()?;
                stat.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|us| us * 1000)
            })?;
        let now = Instant::now();
        let mut last = self
            .last_cpu
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rate = last.and_then(|(t, prev)| {
            let dt = now.duration_since(t).as_nanos();
            (dt > 0 && total >= prev)
                .then(|| u64::try_from(u128::from(total - prev) * 1_000_000_000 / dt).ok())
                .flatten()
        });
        *last = Some((now, total));
        Some(api::CpuStats {
            time: Some(api::now()),
            usage_nano_cores: rate,
            usage_core_nano_seconds: Some(total),
        })
    }

    fn find_pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.kubelet.pods().into_iter().find(|p| {
            p.metadata.namespace.as_deref().unwrap_or("default") == namespace
                && p.metadata.name.as_deref() == Some(name)
        })
    }

    /// The runtime's view of pod `namespace/name` (upstream `findContainer`
    /// starts here): the pod must be known to the kubelet, have the UID
    /// the path names (if any), and be in the runtime.
    async fn running_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        fresh: bool,
    ) -> Result<RunningPod, PodMiss> {
        let p = self.find_pod(namespace, name).ok_or(PodMiss::NotFound)?;
        let pod_uid = p.metadata.uid.as_deref().unwrap_or_default();
        if uid.is_some_and(|u| u != pod_uid) {
            return Err(PodMiss::NotFound);
        }
        if !fresh
            && let Some(cache) = &self.pod_cache
            && let Ok(status) = cache.get(pod_uid)
        {
            return Ok(status.to_running_pod());
        }
        let pods = self
            .runtime
            .get_pods(false)
            .await
            .map_err(|e| PodMiss::Runtime(format!("cannot list the runtime's pods: {e}")))?;
        pods.into_iter()
            .find(|r| r.uid == pod_uid)
            .ok_or(PodMiss::NotFound)
    }
}

/// Why [`KubeletNodeApi::running_pod`] found no pod.
enum PodMiss {
    NotFound,
    Runtime(String),
}

/// The ID of the running container named `name`.
fn running_container_id(pod: &RunningPod, name: &str) -> Option<String> {
    pod.containers
        .iter()
        .find(|c| c.name == name && c.state == ContainerState::Running)
        .map(|c| c.id.clone())
}

impl<C> KubeletNodeApi<C>
where
    C: PodStatusCache<Status = Arc<PodStatus>> + Send + Sync + 'static,
{
    /// One attempt of `stream_url`: the pod and container from the cache,
    /// or with `fresh` from the runtime, then the CRI's streaming call.
    async fn stream_url_once(&self, request: &StreamRequest, fresh: bool) -> StreamLookup {
        use kubelet_cri_client::api;
        let (namespace, name, uid) = match request {
            StreamRequest::Exec {
                namespace,
                pod,
                uid,
                ..
            }
            | StreamRequest::Attach {
                namespace,
                pod,
                uid,
                ..
            }
            | StreamRequest::PortForward {
                namespace,
                pod,
                uid,
                ..
            } => (namespace, pod, uid),
        };
        let running = match self
            .running_pod(namespace, name, uid.as_deref(), fresh)
            .await
        {
            Ok(r) => r,
            Err(PodMiss::NotFound) => return StreamLookup::PodNotFound,
            Err(PodMiss::Runtime(e)) => return StreamLookup::Failed(e),
        };
        let container_id = |container: &str| running_container_id(&running, container);
        let url = match request {
            StreamRequest::Exec {
                container,
                command,
                options,
                ..
            } => {
                let Some(id) = container_id(container) else {
                    return StreamLookup::ContainerNotFound;
                };
                self.cri
                    .exec(api::ExecRequest {
                        container_id: id,
                        cmd: command.clone(),
                        tty: options.tty,
                        stdin: options.stdin,
                        stdout: options.stdout,
                        stderr: options.stderr,
                    })
                    .await
            }
            StreamRequest::Attach {
                container, options, ..
            } => {
                let Some(id) = container_id(container) else {
                    return StreamLookup::ContainerNotFound;
                };
                self.cri
                    .attach(api::AttachRequest {
                        container_id: id,
                        stdin: options.stdin,
                        tty: options.tty,
                        stdout: options.stdout,
                        stderr: options.stderr,
                    })
                    .await
            }
            StreamRequest::PortForward { ports, .. } => {
                let Some(sandbox) = running.sandboxes.iter().find(|s| s.ready) else {
                    return StreamLookup::PodNotFound;
                };
                // Upstream `GetPortForward` (`kuberuntime_sandbox.go`): the
                // ports of a WebSocket session go to the runtime.
                self.cri
                    .port_forward(api::PortForwardRequest {
                        pod_sandbox_id: sandbox.id.clone(),
                        port: ports.clone(),
                    })
                    .await
            }
        };
        match url {
            Ok(url) => StreamLookup::Url(url),
            Err(e) => StreamLookup::Failed(e.to_string()),
        }
    }

    /// One attempt of `run_in_container`; `Err` is a failure before the
    /// command ran (no such container, or the runtime refused), worth one
    /// more attempt with a fresh view of the runtime.
    async fn run_once(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
        container: &str,
        command: &[String],
        fresh: bool,
    ) -> Result<RunOutcome, RunOutcome> {
        let id = match self.running_pod(namespace, pod, uid, fresh).await {
            Ok(running) => running_container_id(&running, container),
            Err(PodMiss::NotFound) => return Err(RunOutcome::PodNotFound),
            Err(PodMiss::Runtime(e)) => return Err(RunOutcome::Failed(e)),
        };
        let Some(id) = id else {
            return Err(RunOutcome::Failed(format!(
                "container not found ({container:?})"
            )));
        };
        match self
            .cri
            .exec_sync(&id, command.to_vec(), std::time::Duration::ZERO)
            .await
        {
            Ok(reply) => {
                let mut output = reply.stdout;
                output.extend_from_slice(&reply.stderr);
                Ok(if reply.exit_code == 0 {
                    RunOutcome::Output(output)
                } else {
                    RunOutcome::Failed(format!(
                        "command '{}' exited with {}: {}",
                        command.join(" "),
                        reply.exit_code,
                        String::from_utf8_lossy(&output)
                    ))
                })
            }
            Err(e) => Err(RunOutcome::Failed(e.to_string())),
        }
    }
}

#[async_trait]
impl<C> NodeApi for KubeletNodeApi<C>
where
    C: PodStatusCache<Status = Arc<PodStatus>> + Send + Sync + 'static,
{
    async fn pods(&self) -> Vec<Pod> {
        let statuses = self.kubelet.statuses();
        let mut pods: Vec<Pod> = self
            .kubelet
            .pods()
            .into_iter()
            .map(|p| {
                let mut pod = Pod::clone(&p);
                if let Some(s) = statuses.get(p.metadata.uid.as_deref().unwrap_or_default()) {
                    pod.status = Some(s);
                }
                pod
            })
            .collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        pods
    }

    fn sync_loop_last_entered(&self) -> Option<Instant> {
        self.kubelet.sync_loop_last_entered()
    }

    fn pleg_healthy(&self) -> Result<(), String> {
        self.pleg.as_ref().map_or(Ok(()), |p| p.healthy())
    }

    async fn kubelet_config(&self) -> serde_json::Value {
        self.config.clone()
    }

    async fn container_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> LogLookup {
        let Some(p) = self.find_pod(namespace, pod) else {
            return LogLookup::PodNotFound;
        };
        if !has_container(&p, container) {
            return LogLookup::ContainerNotFound;
        }
        let uid = p.metadata.uid.as_deref().unwrap_or_default();
        let status = match self.runtime.get_pod_status(uid, pod, namespace).await {
            Ok(s) => s,
            Err(e) => return LogLookup::Unavailable(format!("cannot read the pod's status: {e}")),
        };
        // Newest first, as upstream's `getContainerStatus` list.
        let mut instances: Vec<_> = status
            .container_statuses
            .iter()
            .filter(|c| c.name == container)
            .collect();
        instances.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        let chosen = if previous {
            instances.get(1)
        } else {
            instances.first()
        };
        let Some(c) = chosen else {
            return LogLookup::Unavailable(if previous {
                format!("previous terminated container {container:?} in pod {pod:?} not found")
            } else {
                format!("container {container:?} in pod {pod:?} is waiting to start")
            });
        };
        match self.cri.container_status(&c.id, false).await {
            Ok(s) => {
                let path = s
                    .status
                    .as_ref()
                    .map(|st| PathBuf::from(&st.log_path))
                    .filter(|p| !p.as_os_str().is_empty());
                match path {
                    Some(path) => LogLookup::Found(ContainerLog {
                        path,
                        container_id: (c.state == ContainerState::Running).then(|| c.id.clone()),
                    }),
                    None => {
                        LogLookup::Unavailable(format!("container {container:?} has no log file"))
                    }
                }
            }
            Err(e) => LogLookup::Unavailable(format!("cannot read the container's status: {e}")),
        }
    }

    /// Upstream `GetExec`, `GetAttach` (`findContainer`: a running
    /// container of the pod, found by name and, when the path has it, UID)
    /// and `GetPortForward` (the pod's ready sandbox), then the CRI's
    /// `Exec`, `Attach` or `PortForward`.
    async fn stream_url(&self, request: &StreamRequest) -> StreamLookup {
        match self.stream_url_once(request, false).await {
            StreamLookup::Url(url) => StreamLookup::Url(url),
            // From the cache, a miss or a refusal may be staleness.
            _ if self.pod_cache.is_some() => self.stream_url_once(request, true).await,
            other => other,
        }
    }

    /// Upstream `RunInContainer` (`pkg/kubelet/kubelet_pods.go`): the
    /// running container found as for `GetExec`, then the CRI's `ExecSync`
    /// without a timeout; stdout then stderr, as upstream's
    /// `kubeGenericRuntimeManager.RunInContainer`. A non-zero exit is an
    /// error carrying the output, as upstream's `CodeExitError`.
    async fn run_in_container(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
        container: &str,
        command: &[String],
    ) -> RunOutcome {
        match self
            .run_once(namespace, pod, uid, container, command, false)
            .await
        {
            Ok(outcome) => outcome,
            Err(_) if self.pod_cache.is_some() => self
                .run_once(namespace, pod, uid, container, command, true)
                .await
                .unwrap_or_else(|e| e),
            Err(e) => e,
        }
    }

    async fn container_running(&self, container_id: &str) -> bool {
        match self.cri.container_status(container_id, false).await {
            Ok(s) => s.status.is_some_and(|st| {
                st.state == kubelet_cri_client::api::ContainerState::ContainerRunning as i32
            }),
            Err(_) => false,
        }
    }

    async fn stats_summary(&self) -> Result<api::Summary, kubelet_server::Error> {
        let api::Summary {
            node: mut node_stats,
            pods: cgroup_pods,
        } = self
            .stats
            .get(true)
            .await
            .map_err(|e| kubelet_server::Error::Host(e.to_string()))?;
        // The CRI's per-container CPU and memory; a failure leaves them out.
        let cri_stats = self
            .cri
            .list_container_stats(None)
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "stats summary: no container stats from the CRI");
                Vec::new()
            });
        let by_id: HashMap<&str, &kubelet_cri_client::api::ContainerStats> = cri_stats
            .iter()
            .filter_map(|s| Some((s.attributes.as_ref()?.id.as_str(), s)))
            .collect();
        // The pod cgroups' memory and process counts, by UID.
        let mut cgroup_pods: HashMap<String, api::PodStats> = cgroup_pods
            .into_iter()
            .map(|p| (p.pod_ref.uid.clone(), p))
            .collect();
        let running = self.runtime.get_pods(false).await.unwrap_or_default();
        let now = api::now();
        let mut pods = Vec::new();
        for pod in self.kubelet.pods() {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let Some(rp) = running.iter().find(|r| r.uid == uid) else {
                continue;
            };
            let mut containers = Vec::new();
            let mut cpu_total = 0u64;
            for c in &rp.containers {
                let s = by_id.get(c.id.as_str());
                let cpu = s.and_then(|s| s.cpu.as_ref()).map(|cpu| {
                    let v = cpu.usage_core_nano_seconds.as_ref().map(|v| v.value);
                    cpu_total += v.unwrap_or(0);
                    api::CpuStats {
                        time: Some(now.clone()),
                        usage_nano_cores: cpu.usage_nano_cores.as_ref().map(|v| v.value),
                        usage_core_nano_seconds: v,
                    }
                });
                let mem = s.and_then(|s| s.memory.as_ref()).map(|m| api::MemoryStats {
                    time: Some(now.clone()),
                    working_set_bytes: m.working_set_bytes.as_ref().map(|v| v.value),
                    usage_bytes: m.usage_bytes.as_ref().map(|v| v.value),
                    rss_bytes: m.rss_bytes.as_ref().map(|v| v.value),
                    page_faults: m.page_faults.as_ref().map(|v| v.value),
                    major_page_faults: m.major_page_faults.as_ref().map(|v| v.value),
                    ..Default::default()
                });
                let rootfs = s
                    .and_then(|s| s.writable_layer.as_ref())
                    .map(|w| api::FsStats {
                        time: Some(now.clone()),
                        used_bytes: w.used_bytes.as_ref().map(|v| v.value),
                        inodes_used: w.inodes_used.as_ref().map(|v| v.value),
                        ..Default::default()
                    });
                containers.push(api::ContainerStats {
                    name: c.name.clone(),
                    start_time: crate::status::time_of(c.created_at),
                    cpu,
                    memory: mem,
                    rootfs,
                    logs: None,
                });
            }
            let cgroup = cgroup_pods.remove(&uid);
            pods.push(api::PodStats {
                pod_ref: api::PodReference {
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    uid: uid.clone(),
                },
                start_time: self.kubelet.statuses().get(&uid).and_then(|s| s.start_time),
                containers,
                cpu: Some(api::CpuStats {
                    time: Some(now.clone()),
                    usage_nano_cores: None,
                    usage_core_nano_seconds: Some(cpu_total),
                }),
                memory: cgroup.as_ref().and_then(|p| p.memory.clone()),
                process_stats: cgroup.and_then(|p| p.process_stats),
                ..Default::default()
            });
        }
        node_stats.node_name.clone_from(&self.node_name);
        node_stats.start_time = api::from_system_time(self.started);
        node_stats.cpu = self.node_cpu();
        Ok(api::Summary {
            node: node_stats,
            pods,
        })
    }
}

/// Whether `pod` has an app, init or ephemeral container named `name`
/// (upstream `validateContainerLogStatus` in `pkg/kubelet/kubelet_pods.go`
/// looks the name up among all three kinds' statuses).
fn has_container(pod: &Pod, name: &str) -> bool {
    pod.spec.iter().any(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == name)
            || s.ephemeral_containers
                .iter()
                .flatten()
                .any(|c| c.name == name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checked by the [NodeConformance] specs of
    /// `common/node/ephemeral_containers.go`, which read an ephemeral
    /// container's log.
    #[test]
    fn logs_are_served_for_ephemeral_containers_too() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {
                "containers": [{"name": "app"}],
                "initContainers": [{"name": "init"}],
                "ephemeralContainers": [{"name": "debugger"}]
            }
        }))
        .expect("pod");
        for name in ["app", "init", "debugger"] {
            assert!(has_container(&pod, name), "{name}");
        }
        assert!(!has_container(&pod, "other"));
    }
}
