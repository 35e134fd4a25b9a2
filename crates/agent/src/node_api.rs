//! The kubelet as the node API's host ([`kubelet_server::NodeApi`]):
//! upstream's `HostInterface` implementation on `*Kubelet`
//! (`pkg/kubelet/kubelet_getters.go`, `kubelet_pods.go`
//! `GetKubeletContainerLogs`, `pkg/kubelet/stats`).
//!
//! `/pods` reads the pod manager and the status manager (no runtime call);
//! `/containerLogs` finds the log through one runtime status call;
//! `/stats/summary` reads the node's cgroups and filesystems (the eviction
//! crate's [`CgroupSummaryProvider`]) and the CRI's container stats.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubelet_cri_client::RuntimeService;
use kubelet_eviction::cgroup_summary::CgroupSummaryProvider;
use kubelet_eviction::summary::SummaryProvider;
use kubelet_kuberuntime::{ContainerState, PodStatus, Runtime};
use kubelet_podworkers::PodStatusCache;
use kubelet_server::stats as api;
use kubelet_server::{ContainerLog, LogLookup, NodeApi};

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
        }
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
            time: wall(None),
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
}

fn time(t: SystemTime) -> Option<Time> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    crate::status::time_of(i64::try_from(d.as_nanos()).ok()?)
}

/// Converts a monotonic stats timestamp to wall-clock time.
fn wall(t: Option<Instant>) -> Option<Time> {
    let now = Instant::now();
    let at = match t {
        Some(t) if t <= now => SystemTime::now().checked_sub(now - t)?,
        _ => SystemTime::now(),
    };
    time(at)
}

fn fs(f: &kubelet_eviction::summary::FsStats) -> api::FsStats {
    api::FsStats {
        time: wall(f.time),
        available_bytes: f.available_bytes,
        capacity_bytes: f.capacity_bytes,
        used_bytes: f.used_bytes,
        inodes_free: f.inodes_free,
        inodes: f.inodes,
        inodes_used: f.inodes_used,
    }
}

fn memory(m: &kubelet_eviction::summary::MemoryStats) -> api::MemoryStats {
    api::MemoryStats {
        time: wall(m.time),
        available_bytes: m.available_bytes,
        usage_bytes: m.usage_bytes,
        working_set_bytes: m.working_set_bytes,
        ..Default::default()
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
        let known = p.spec.iter().any(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .any(|c| c.name == container)
        });
        if !known {
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

    async fn container_running(&self, container_id: &str) -> bool {
        match self.cri.container_status(container_id, false).await {
            Ok(s) => s.status.is_some_and(|st| {
                st.state == kubelet_cri_client::api::ContainerState::ContainerRunning as i32
            }),
            Err(_) => false,
        }
    }

    async fn stats_summary(&self) -> Result<api::Summary, kubelet_server::Error> {
        let node = self
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
        let pod_stats: HashMap<&str, &kubelet_eviction::summary::PodStats> =
            node.pods.iter().map(|p| (p.uid.as_str(), p)).collect();
        let running = self.runtime.get_pods(false).await.unwrap_or_default();
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
                        time: wall(None),
                        usage_nano_cores: cpu.usage_nano_cores.as_ref().map(|v| v.value),
                        usage_core_nano_seconds: v,
                    }
                });
                let mem = s.and_then(|s| s.memory.as_ref()).map(|m| api::MemoryStats {
                    time: wall(None),
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
                        time: wall(None),
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
            let ps = pod_stats.get(uid.as_str());
            pods.push(api::PodStats {
                pod_ref: api::PodReference {
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    uid: uid.clone(),
                },
                start_time: self.kubelet.statuses().get(&uid).and_then(|s| s.start_time),
                containers,
                cpu: Some(api::CpuStats {
                    time: wall(None),
                    usage_nano_cores: None,
                    usage_core_nano_seconds: Some(cpu_total),
                }),
                memory: ps
                    .and_then(|p| p.memory_working_set_bytes)
                    .map(|ws| api::MemoryStats {
                        time: wall(None),
                        working_set_bytes: Some(ws),
                        ..Default::default()
                    }),
                process_stats: ps.and_then(|p| p.process_count).map(|n| api::ProcessStats {
                    process_count: Some(n),
                }),
                ..Default::default()
            });
        }
        Ok(api::Summary {
            node: api::NodeStats {
                node_name: self.node_name.clone(),
                start_time: time(self.started),
                cpu: self.node_cpu(),
                memory: node.node.memory.as_ref().map(memory),
                fs: node.node.fs.as_ref().map(fs),
                runtime: Some(api::RuntimeStats {
                    image_fs: node.node.image_fs.as_ref().map(fs),
                    container_fs: node.node.container_fs.as_ref().map(fs),
                }),
                rlimit: node.node.rlimit.as_ref().map(|r| api::RlimitStats {
                    time: wall(r.time),
                    maxpid: r.max_pid.and_then(|v| i64::try_from(v).ok()),
                    curproc: r
                        .num_of_running_processes
                        .and_then(|v| i64::try_from(v).ok()),
                }),
                ..Default::default()
            },
            pods,
        })
    }
}
