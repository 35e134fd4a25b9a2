//! A [`SummaryProvider`] reading the node itself: cgroup v1 memory
//! controller, `statvfs` of the node and image filesystems, and the PID
//! limits.
//!
//! Upstream gets these numbers from cadvisor through the summary API
//! (`pkg/kubelet/stats`, `pkg/kubelet/stats/pidlimit/pidlimit_linux.go`);
//! the formulas are the same:
//!
//! - working set = `memory.usage_in_bytes` − `total_inactive_file` (from
//!   `memory.stat`), floored at zero;
//! - node memory capacity = `MemTotal` of `/proc/meminfo`; available =
//!   capacity − the root cgroup's working set;
//! - the pods cgroup: capacity = its `memory.limit_in_bytes` (the node's
//!   capacity when unlimited), available = capacity − its working set;
//! - filesystems: `statvfs` `f_bavail × f_frsize` available,
//!   `f_blocks × f_frsize` capacity, `f_favail`/`f_files` inodes;
//! - PIDs: `min(pid_max, threads-max)` and the running count from
//!   `/proc/loadavg` (the kernel's number of threads, as `sysinfo.procs`).
//!
//! The result is the one stats model ([`kubelet_container::stats`]) in
//! upstream's places: the pods cgroup is the `pods` system container, the
//! image filesystem is `runtime.imageFs`. Per-pod memory and process
//! counts come from the pod cgroups under the pods cgroup (`pod<uid>`
//! directories, at any QoS level); cgroups know a pod only by UID, so
//! `podRef` carries just the UID, and the node name is left empty for the
//! caller to fill. Per-pod disk usage is not read here (upstream takes it
//! from the CRI's stats or cadvisor); disk ranking therefore sees "no
//! stats" for every pod unless another provider supplies them.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubelet_container::stats::{
    self, ContainerStats, FsStats, MemoryStats, NodeStats, PodReference, PodStats, ProcessStats,
    RlimitStats, RuntimeStats, SYSTEM_CONTAINER_PODS, Summary, SummaryProvider,
};

use crate::Error;
use crate::rank::DiskLayout;

/// Values of `memory.limit_in_bytes` at or above this mean "unlimited".
const UNLIMITED: u64 = 1 << 62;

/// Reads the node's stats from cgroup v1 and the filesystems.
#[derive(Debug, Clone)]
pub struct CgroupSummaryProvider {
    /// The cgroup v1 memory controller mount (`/sys/fs/cgroup/memory`).
    pub memory_root: PathBuf,
    /// The cgroup v1 pids controller mount (`/sys/fs/cgroup/pids`).
    pub pids_root: PathBuf,
    /// The pods cgroup, relative to the controller roots (`kubepods`).
    pub pods_cgroup: String,
    /// The kubelet's root directory (nodefs), `/var/lib/kubelet`.
    pub node_fs: PathBuf,
    /// The runtime's image directory (imagefs), e.g.
    /// `/var/lib/containerd`; `None` when it is the same as nodefs.
    pub image_fs: Option<PathBuf>,
    /// `/proc`.
    pub proc_root: PathBuf,
}

impl Default for CgroupSummaryProvider {
    fn default() -> Self {
        Self {
            memory_root: PathBuf::from("/sys/fs/cgroup/memory"),
            pids_root: PathBuf::from("/sys/fs/cgroup/pids"),
            pods_cgroup: "kubepods".into(),
            node_fs: PathBuf::from("/var/lib/kubelet"),
            image_fs: None,
            proc_root: PathBuf::from("/proc"),
        }
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn parse_u64(path: &Path, text: &str) -> Result<u64, Error> {
    text.trim().parse().map_err(|_| Error::Parse {
        path: path.to_owned(),
        reason: format!("not a number: {:?}", text.trim()),
    })
}

fn read_u64(path: &Path) -> Result<u64, Error> {
    parse_u64(path, &read(path)?)
}

/// `key value` lines (`memory.stat`, `/proc/meminfo` without the `kB`).
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let k = it.next()?.trim_end_matches(':');
        (k == key).then(|| it.next()?.parse().ok())?
    })
}

/// Usage and working set of a cgroup v1 memory directory (upstream cadvisor
/// `setMemoryStats`: working set = usage − `total_inactive_file`).
pub fn cgroup_memory(dir: &Path) -> Result<(u64, u64), Error> {
    let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
    let stat_path = dir.join("memory.stat");
    let stat = read(&stat_path)?;
    let inactive = stat_field(&stat, "total_inactive_file")
        .or_else(|| stat_field(&stat, "inactive_file"))
        .ok_or_else(|| Error::Parse {
            path: stat_path,
            reason: "no total_inactive_file".into(),
        })?;
    Ok((usage, usage.saturating_sub(inactive)))
}

/// `statvfs` of `path` as [`FsStats`] read at `time`.
pub fn fs_stats(path: &Path, time: Time) -> Result<FsStats, Error> {
    let s = rustix::fs::statvfs(path).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: e.into(),
    })?;
    let frsize = s.f_frsize.max(1);
    Ok(FsStats {
        time: Some(time),
        available_bytes: Some(s.f_bavail.saturating_mul(frsize)),
        capacity_bytes: Some(s.f_blocks.saturating_mul(frsize)),
        used_bytes: Some(s.f_blocks.saturating_sub(s.f_bfree).saturating_mul(frsize)),
        inodes_free: Some(s.f_favail),
        inodes: Some(s.f_files),
        inodes_used: Some(s.f_files.saturating_sub(s.f_ffree)),
    })
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn dev_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.dev())
}

impl CgroupSummaryProvider {
    /// Whether the image filesystem is a different device from nodefs
    /// (upstream `HasDedicatedImageFs`).
    pub fn disk_layout(&self) -> DiskLayout {
        let dedicated = self
            .image_fs
            .as_ref()
            .is_some_and(|i| dev_of(i).is_some() && dev_of(i) != dev_of(&self.node_fs));
        DiskLayout {
            dedicated_image_fs: dedicated,
            split_container_image_fs: false,
        }
    }

    fn mem_total(&self) -> Result<u64, Error> {
        let p = self.proc_root.join("meminfo");
        let text = read(&p)?;
        stat_field(&text, "MemTotal")
            .map(|kb| kb.saturating_mul(1024))
            .ok_or_else(|| Error::Parse {
                path: p,
                reason: "no MemTotal".into(),
            })
    }

    fn rlimit(&self, time: Time) -> Result<RlimitStats, Error> {
        let pid_max = read_u64(&self.proc_root.join("sys/kernel/pid_max"))?;
        let threads_max =
            read_u64(&self.proc_root.join("sys/kernel/threads-max")).unwrap_or(pid_max);
        let loadavg_path = self.proc_root.join("loadavg");
        let loadavg = read(&loadavg_path)?;
        let running = loadavg
            .split_whitespace()
            .nth(3)
            .and_then(|f| f.split_once('/'))
            .and_then(|(_, total)| total.parse().ok())
            .ok_or_else(|| Error::Parse {
                path: loadavg_path,
                reason: "no running/total field".into(),
            })?;
        Ok(RlimitStats {
            time: Some(time),
            max_pid: Some(saturating_i64(pid_max.min(threads_max))),
            num_of_running_processes: Some(saturating_i64(running)),
        })
    }

    fn pod_dirs(&self) -> Vec<(String, String)> {
        // (uid, relative path) of every pod<uid> cgroup at any QoS level
        let mut out = Vec::new();
        let base = self.memory_root.join(&self.pods_cgroup);
        let mut stack = vec![(base, self.pods_cgroup.clone(), 0)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                let child_rel = format!("{rel}/{name}");
                if let Some(uid) = name.strip_prefix("pod") {
                    out.push((uid.replace('_', "-"), child_rel));
                } else if depth == 0 && (name == "burstable" || name == "besteffort") {
                    stack.push((e.path(), child_rel, depth + 1));
                }
            }
        }
        out
    }

    /// Reads everything once.
    pub fn read_summary(&self) -> Result<Summary, Error> {
        let now = stats::now();
        let capacity = self.mem_total()?;
        let (usage, ws) = cgroup_memory(&self.memory_root)?;
        let memory = MemoryStats {
            time: Some(now.clone()),
            available_bytes: Some(capacity.saturating_sub(ws)),
            usage_bytes: Some(usage),
            working_set_bytes: Some(ws),
            ..MemoryStats::default()
        };
        let pods_dir = self.memory_root.join(&self.pods_cgroup);
        let pods_memory = match cgroup_memory(&pods_dir) {
            Ok((usage, ws)) => {
                let limit = read_u64(&pods_dir.join("memory.limit_in_bytes")).unwrap_or(u64::MAX);
                let cap = if limit >= UNLIMITED {
                    capacity
                } else {
                    limit.min(capacity)
                };
                Some(MemoryStats {
                    time: Some(now.clone()),
                    available_bytes: Some(cap.saturating_sub(ws)),
                    usage_bytes: Some(usage),
                    working_set_bytes: Some(ws),
                    ..MemoryStats::default()
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "no pods cgroup stats");
                None
            }
        };
        let fs = fs_stats(&self.node_fs, now.clone()).ok();
        let image_fs = match &self.image_fs {
            Some(p) => fs_stats(p, now.clone()).ok(),
            None => fs.clone(),
        };
        let rlimit = self.rlimit(now.clone()).ok();
        let pods = self
            .pod_dirs()
            .into_iter()
            .map(|(uid, rel)| {
                let ws = cgroup_memory(&self.memory_root.join(&rel))
                    .ok()
                    .map(|(_, ws)| ws);
                let procs = read_u64(&self.pids_root.join(&rel).join("pids.current")).ok();
                PodStats {
                    pod_ref: PodReference {
                        uid,
                        ..PodReference::default()
                    },
                    memory: ws.map(|ws| MemoryStats {
                        time: Some(now.clone()),
                        working_set_bytes: Some(ws),
                        ..MemoryStats::default()
                    }),
                    process_stats: procs.map(|n| ProcessStats {
                        process_count: Some(n),
                    }),
                    ..PodStats::default()
                }
            })
            .collect();
        Ok(Summary {
            node: NodeStats {
                system_containers: pods_memory
                    .map(|m| ContainerStats {
                        name: SYSTEM_CONTAINER_PODS.into(),
                        memory: Some(m),
                        ..ContainerStats::default()
                    })
                    .into_iter()
                    .collect(),
                memory: Some(memory),
                fs,
                runtime: Some(RuntimeStats {
                    image_fs,
                    container_fs: None,
                }),
                rlimit,
                ..NodeStats::default()
            },
            pods,
        })
    }
}

#[async_trait]
impl SummaryProvider for CgroupSummaryProvider {
    async fn get(&self, _update_stats: bool) -> Result<Summary, kubelet_container::Error> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_summary())
            .await
            .map_err(|e| kubelet_container::Error::stats(format!("stats task failed: {e}")))?
            .map_err(kubelet_container::Error::stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        if let Some(parent) = dir.join(name).parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(dir.join(name), text).expect("write");
    }

    #[test]
    fn fake_tree_gives_upstream_formulas() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        let mem = root.join("memory");
        let pids = root.join("pids");
        let proc_ = root.join("proc");
        write(
            &proc_,
            "meminfo",
            "MemTotal:       4194304 kB\nMemFree: 1 kB\n",
        );
        write(&proc_, "sys/kernel/pid_max", "32768\n");
        write(&proc_, "sys/kernel/threads-max", "20000\n");
        write(&proc_, "loadavg", "0.00 0.01 0.05 2/345 999\n");
        write(&mem, "memory.usage_in_bytes", "3221225472\n");
        write(
            &mem,
            "memory.stat",
            "cache 5\ntotal_inactive_file 1073741824\n",
        );
        write(&mem, "kubepods/memory.usage_in_bytes", "1073741824\n");
        write(
            &mem,
            "kubepods/memory.stat",
            "total_inactive_file 536870912\n",
        );
        write(&mem, "kubepods/memory.limit_in_bytes", "2147483648\n");
        write(
            &mem,
            "kubepods/burstable/pod1234_5678/memory.usage_in_bytes",
            "300\n",
        );
        write(
            &mem,
            "kubepods/burstable/pod1234_5678/memory.stat",
            "total_inactive_file 100\n",
        );
        write(&mem, "kubepods/podabcd/memory.usage_in_bytes", "50\n");
        write(
            &mem,
            "kubepods/podabcd/memory.stat",
            "total_inactive_file 80\n",
        );
        write(&pids, "kubepods/podabcd/pids.current", "7\n");
        let p = CgroupSummaryProvider {
            memory_root: mem,
            pids_root: pids,
            pods_cgroup: "kubepods".into(),
            node_fs: root.to_owned(),
            image_fs: None,
            proc_root: proc_,
        };
        let s = p.read_summary().expect("summary");
        let m = s.node.memory.clone().expect("memory");
        assert_eq!(m.working_set_bytes, Some(2 << 30), "usage - inactive_file");
        assert_eq!(m.available_bytes, Some(2 << 30), "4Gi - 2Gi");
        let pm = s
            .node
            .system_container(SYSTEM_CONTAINER_PODS)
            .and_then(|c| c.memory.clone())
            .expect("pods");
        assert_eq!(pm.working_set_bytes, Some(512 << 20));
        assert_eq!(
            pm.available_bytes,
            Some((2 << 30) - (512 << 20)),
            "limit - ws"
        );
        let r = s.node.rlimit.clone().expect("rlimit");
        assert_eq!(r.max_pid, Some(20000));
        assert_eq!(r.num_of_running_processes, Some(345));
        let fs = s.node.fs.clone().expect("fs");
        assert!(fs.capacity_bytes.unwrap_or(0) > 0);
        assert_eq!(s.node.image_fs(), Some(&fs), "same fs");
        assert!(m.time.is_some() && m.time == fs.time, "one reading time");
        let mut pods = s.pods.clone();
        pods.sort_by(|a, b| a.pod_ref.uid.cmp(&b.pod_ref.uid));
        assert_eq!(pods.len(), 2);
        assert_eq!(
            pods[0].pod_ref.uid, "1234-5678",
            "systemd-style underscores become dashes"
        );
        assert_eq!(pods[0].memory_working_set_bytes(), Some(200));
        assert_eq!(
            pods[1].memory_working_set_bytes(),
            Some(0),
            "floored at zero"
        );
        assert_eq!(pods[1].process_count(), Some(7));
        assert!(!p.disk_layout().dedicated_image_fs);
    }

    #[test]
    fn missing_files_are_errors_naming_the_path() {
        let p = CgroupSummaryProvider {
            proc_root: PathBuf::from("/nonexistent-proc"),
            ..Default::default()
        };
        let e = p.read_summary().expect_err("no meminfo");
        assert!(e.to_string().contains("/nonexistent-proc/meminfo"), "{e}");
    }

    #[tokio::test]
    async fn real_node_if_cgroup_v1() {
        let p = CgroupSummaryProvider::default();
        let Some(_) = kubelet_testbed::require("cgroup v1", kubelet_testbed::cgroup_v1("memory"))
        else {
            return;
        };
        let p = CgroupSummaryProvider {
            node_fs: PathBuf::from("/"),
            ..p
        };
        let s = p.get(true).await.expect("summary");
        let m = s.node.memory.expect("memory");
        assert!(m.working_set_bytes.unwrap_or(0) > 0);
        assert!(m.available_bytes.unwrap_or(0) > 0);
        assert!(
            s.node
                .rlimit
                .and_then(|r| r.num_of_running_processes)
                .unwrap_or(0)
                > 0
        );
        assert!(s.node.fs.and_then(|f| f.capacity_bytes).unwrap_or(0) > 0);
    }
}
