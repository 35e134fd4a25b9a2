//! Ranking pods for eviction (upstream `helpers.go`: `rankMemoryPressure`,
//! `rankPIDPressure`, `rankDiskPressureFunc`, `exceedMemoryRequests`,
//! `priority`, `memory`, `process`, `exceedDiskRequests`, `disk`,
//! `buildSignalToRankFunc`).
//!
//! Upstream sorts with a chain of comparators that re-derive each pod's
//! usage and requests on every comparison. We compute one key per pod, then
//! sort the keys: the same order, O(n) parsing instead of O(n log n).
//! Comparator semantics are kept exactly, including "pods without stats
//! first".

use std::cmp::Ordering;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::threshold::{Resource, Signal};
use kubelet_container::stats::{FsStats, PodStats};

/// Which filesystem stats count towards a pod's disk usage (upstream
/// `fsStatsType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsStatsType {
    /// Container writable layers.
    Root,
    /// Container logs.
    Logs,
    /// Local volumes (emptyDir, hostPath, ...).
    LocalVolumeSource,
    /// Images (counted upstream but not per pod in the summary; no-op).
    Images,
}

/// How the node's disks are laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskLayout {
    /// The image filesystem is a different device from the kubelet's.
    pub dedicated_image_fs: bool,
    /// Writable layers are on a different device from images
    /// (`KubeletSeparateDiskGC`).
    pub split_container_image_fs: bool,
}

/// The way pods are ranked for one signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RankFunc {
    /// Memory: over requests first, then priority, then usage above request.
    Memory,
    /// PIDs: priority, then process count.
    Pids,
    /// Disk: over requests first, then priority, then usage above request,
    /// measuring these stats and this resource.
    Disk(Vec<FsStatsType>, Resource),
}

/// The ranking for `signal` under `layout` (upstream
/// `buildSignalToRankFunc`).
pub fn rank_func(signal: Signal, layout: DiskLayout) -> RankFunc {
    use FsStatsType::*;
    let all = || vec![Images, Root, Logs, LocalVolumeSource];
    let (nodefs, imagefs, containerfs): (Vec<FsStatsType>, Vec<FsStatsType>, Vec<FsStatsType>) =
        match (layout.dedicated_image_fs, layout.split_container_image_fs) {
            (true, false) => (
                vec![Logs, LocalVolumeSource],
                vec![Root, Images],
                vec![Root, Images],
            ),
            (true, true) => (
                vec![Logs, LocalVolumeSource, Root],
                vec![Images],
                vec![Logs, LocalVolumeSource, Root],
            ),
            _ => (all(), all(), all()),
        };
    match signal {
        Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => RankFunc::Memory,
        Signal::PidAvailable => RankFunc::Pids,
        Signal::NodeFsAvailable => RankFunc::Disk(nodefs, Resource::EphemeralStorage),
        Signal::NodeFsInodesFree => RankFunc::Disk(nodefs, Resource::Inodes),
        Signal::ImageFsAvailable => RankFunc::Disk(imagefs, Resource::EphemeralStorage),
        Signal::ImageFsInodesFree => RankFunc::Disk(imagefs, Resource::Inodes),
        Signal::ContainerFsAvailable => RankFunc::Disk(containerfs, Resource::EphemeralStorage),
        Signal::ContainerFsInodesFree => RankFunc::Disk(containerfs, Resource::Inodes),
    }
}

/// The pod's priority, 0 when unset (upstream `corev1helpers.PodPriority`).
pub fn pod_priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn container_request(c: &Container, name: &str) -> i64 {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get(name))
        .and_then(|q| kubelet_container::quantity::value(&q.0).ok())
        .unwrap_or(0)
}

/// The pod's effective request of `name` in whole units (upstream
/// `GetResourceRequestQuantity` / `PodRequests`): the sum over containers
/// and restartable init (sidecar) containers, at least the largest regular
/// init container's request plus the sidecars started before it, plus the
/// pod overhead; pod-level `spec.resources.requests` replace it when set.
pub fn pod_request(pod: &Pod, name: &str) -> i64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    if let Some(v) = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get(name))
        .and_then(|q| kubelet_container::quantity::value(&q.0).ok())
    {
        return v;
    }
    let mut sum: i64 = spec
        .containers
        .iter()
        .map(|c| container_request(c, name))
        .sum();
    let mut sidecars = 0i64;
    let mut init_max = 0i64;
    for c in spec.init_containers.iter().flatten() {
        let r = container_request(c, name);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = sidecars.saturating_add(r);
            sum = sum.saturating_add(r);
            init_max = init_max.max(sidecars);
        } else {
            init_max = init_max.max(sidecars.saturating_add(r));
        }
    }
    sum = sum.max(init_max);
    if let Some(o) = spec
        .overhead
        .as_ref()
        .and_then(|o| o.get(name))
        .and_then(|q| kubelet_container::quantity::value(&q.0).ok())
    {
        sum = sum.saturating_add(o);
    }
    sum
}

fn fs_used(fs: Option<&FsStats>, resource: Resource) -> i64 {
    let v = match resource {
        Resource::Inodes => fs.and_then(|f| f.inodes_used),
        _ => fs.and_then(|f| f.used_bytes),
    };
    i64::try_from(v.unwrap_or(0)).unwrap_or(i64::MAX)
}

fn is_local_volume(pod: &Pod, name: &str) -> bool {
    pod.spec
        .as_ref()
        .map(|s| s.volumes.iter().flatten())
        .into_iter()
        .flatten()
        .any(|v| {
            v.name == name
                && (v.host_path.is_some()
                    || v.empty_dir.is_some()
                    || v.config_map.is_some()
                    || v.secret.is_some()
                    || v.downward_api.is_some()
                    || v.projected.is_some()
                    || v.git_repo.is_some())
        })
}

/// A pod's disk use (bytes or inodes) over `measure` (upstream
/// `podDiskUsage`).
pub fn pod_disk_usage(
    stats: &PodStats,
    pod: &Pod,
    measure: &[FsStatsType],
    resource: Resource,
) -> i64 {
    let mut total = 0i64;
    for c in &stats.containers {
        if measure.contains(&FsStatsType::Root) {
            total = total.saturating_add(fs_used(c.rootfs.as_ref(), resource));
        }
        if measure.contains(&FsStatsType::Logs) {
            total = total.saturating_add(fs_used(c.logs.as_ref(), resource));
        }
    }
    if measure.contains(&FsStatsType::LocalVolumeSource) {
        for v in &stats.volume_stats {
            if is_local_volume(pod, &v.name) {
                total = total.saturating_add(fs_used(Some(&v.fs), resource));
            }
        }
    }
    total
}

/// One pod's ranking key: compared lexicographically, smaller is evicted
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RankKey {
    /// For PID ranking, the priority comes first (upstream `orderedBy(priority, process)`).
    lead_priority: i64,
    /// Pods with stats after pods without (false < true).
    has_stats: bool,
    /// Not over request (true) after over request (false).
    within_request: bool,
    /// Lower priority first.
    priority: i64,
    /// Larger usage (above request) first: stored negated.
    neg_usage: i128,
}

/// Computes every pod's key for `func` against `stats` (by pod UID).
pub fn rank_keys(pods: &[&Pod], stats: &HashMap<&str, &PodStats>, func: &RankFunc) -> Vec<RankKey> {
    pods.iter()
        .map(|pod| {
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let st = stats.get(uid).copied();
            let prio = i64::from(pod_priority(pod));
            match func {
                RankFunc::Memory => match st {
                    None => RankKey {
                        lead_priority: 0,
                        has_stats: false,
                        within_request: false,
                        priority: prio,
                        neg_usage: 0,
                    },
                    Some(s) => {
                        let usage = i128::from(
                            i64::try_from(s.memory_working_set_bytes().unwrap_or(0))
                                .unwrap_or(i64::MAX),
                        );
                        let req = i128::from(pod_request(pod, "memory"));
                        RankKey {
                            lead_priority: 0,
                            has_stats: true,
                            within_request: usage <= req,
                            priority: prio,
                            neg_usage: -(usage - req),
                        }
                    }
                },
                RankFunc::Pids => RankKey {
                    lead_priority: prio,
                    has_stats: st.is_some(),
                    within_request: false,
                    priority: 0,
                    neg_usage: -i128::from(st.and_then(PodStats::process_count).unwrap_or(0)),
                },
                RankFunc::Disk(measure, resource) => match st {
                    None => RankKey {
                        lead_priority: 0,
                        has_stats: false,
                        within_request: false,
                        priority: prio,
                        neg_usage: 0,
                    },
                    Some(s) => {
                        let usage = i128::from(pod_disk_usage(s, pod, measure, *resource));
                        let req_name = match resource {
                            Resource::Inodes => "inodes",
                            _ => "ephemeral-storage",
                        };
                        let exceed_req = i128::from(pod_request(pod, req_name));
                        // upstream `disk` subtracts the ephemeral-storage request even for inodes
                        let sub_req = i128::from(pod_request(pod, "ephemeral-storage"));
                        RankKey {
                            lead_priority: 0,
                            has_stats: true,
                            within_request: usage <= exceed_req,
                            priority: prio,
                            neg_usage: -(usage - sub_req),
                        }
                    }
                },
            }
        })
        .collect()
}

/// Orders `pods` for eviction under `func`, first to evict first.
pub fn rank<'a>(pods: &mut Vec<&'a Pod>, stats: &HashMap<&str, &PodStats>, func: &RankFunc) {
    let keys = rank_keys(pods, stats, func);
    let mut idx: Vec<usize> = (0..pods.len()).collect();
    idx.sort_by(|&a, &b| keys[a].cmp(&keys[b]).then(a.cmp(&b)));
    let ordered: Vec<&'a Pod> = idx.into_iter().map(|i| pods[i]).collect();
    *pods = ordered;
}

/// Compares two pods as `rank` would (for tests and callers wanting a
/// comparator).
pub fn compare(a: &Pod, b: &Pod, stats: &HashMap<&str, &PodStats>, func: &RankFunc) -> Ordering {
    let k = rank_keys(&[a, b], stats, func);
    k[0].cmp(&k[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{pod, pod_stats_mem};
    use kubelet_container::stats::{ContainerStats, ProcessStats};

    fn names(pods: &[&Pod]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    /// Upstream `TestOrderedByExceedsRequestMemory`, `TestOrderedByPriority`,
    /// `TestOrderedbyMemory` combined as `rankMemoryPressure` does.
    #[test]
    fn memory_ranking_as_upstream() {
        let below = pod("below-requests", 0, "200Mi", "");
        let above = pod("above-requests", 0, "200Mi", "");
        let best = pod("best-effort-high", 0, "", "");
        let high_prio = pod("high-priority-above", 100, "100Mi", "");
        let low_prio = pod("low-priority-small", -10, "100Mi", "");
        let stats_v = [
            pod_stats_mem(&below, 100 << 20),
            pod_stats_mem(&above, 300 << 20),
            pod_stats_mem(&best, 50 << 20),
            pod_stats_mem(&high_prio, 900 << 20),
            pod_stats_mem(&low_prio, 10 << 20),
        ];
        let stats: HashMap<&str, &PodStats> = stats_v
            .iter()
            .map(|s| (s.pod_ref.uid.as_str(), s))
            .collect();
        let mut pods = vec![&below, &high_prio, &low_prio, &best, &above];
        rank(&mut pods, &stats, &RankFunc::Memory);
        assert_eq!(
            names(&pods),
            vec![
                "above-requests",      // over request, priority 0, +100Mi
                "best-effort-high",    // over request (0), priority 0, +50Mi
                "high-priority-above", // over request but priority 100
                "low-priority-small",  // within request, priority -10
                "below-requests",      // within request, priority 0
            ]
        );
    }

    #[test]
    fn missing_stats_are_evicted_first() {
        let a = pod("with-stats", 0, "", "");
        let b = pod("no-stats", 1000, "", "");
        let stats_v = [pod_stats_mem(&a, 1 << 30)];
        let stats: HashMap<&str, &PodStats> = stats_v
            .iter()
            .map(|s| (s.pod_ref.uid.as_str(), s))
            .collect();
        let mut pods = vec![&a, &b];
        rank(&mut pods, &stats, &RankFunc::Memory);
        assert_eq!(names(&pods), vec!["no-stats", "with-stats"]);
    }

    /// Upstream `TestOrderedByPriorityProcess`: priority first, then
    /// process count.
    #[test]
    fn pid_ranking() {
        let low = pod("low", 1, "", "");
        let high = pod("high", 100, "", "");
        let low_many = pod("low-many", 1, "", "");
        let mut s = Vec::new();
        for (p, n) in [(&low, 5u64), (&high, 500), (&low_many, 50)] {
            let mut st = pod_stats_mem(p, 0);
            st.process_stats = Some(ProcessStats {
                process_count: Some(n),
            });
            s.push(st);
        }
        let stats: HashMap<&str, &PodStats> =
            s.iter().map(|s| (s.pod_ref.uid.as_str(), s)).collect();
        let mut pods = vec![&high, &low, &low_many];
        rank(&mut pods, &stats, &RankFunc::Pids);
        assert_eq!(names(&pods), vec!["low-many", "low", "high"]);
    }

    /// Upstream `TestOrderedbyDisk` / `TestOrderedbyDiskDisableLocalStorage`
    /// shape: over ephemeral-storage request first, then priority, then usage.
    #[test]
    fn disk_ranking() {
        let a = pod("small-over", 0, "", "1Mi");
        let b = pod("big-within", 0, "", "1Gi");
        let c = pod("big-over-high", 10, "", "1Mi");
        let d = pod("bigger-over", 0, "", "1Mi");
        let mut s = Vec::new();
        for (p, used) in [
            (&a, 2u64 << 20),
            (&b, 500 << 20),
            (&c, 900 << 20),
            (&d, 400 << 20),
        ] {
            let mut st = pod_stats_mem(p, 0);
            st.containers = vec![ContainerStats {
                name: "c".into(),
                rootfs: Some(FsStats {
                    used_bytes: Some(used / 2),
                    ..Default::default()
                }),
                logs: Some(FsStats {
                    used_bytes: Some(used / 2),
                    ..Default::default()
                }),
                ..Default::default()
            }];
            s.push(st);
        }
        let stats: HashMap<&str, &PodStats> =
            s.iter().map(|s| (s.pod_ref.uid.as_str(), s)).collect();
        let func = rank_func(Signal::NodeFsAvailable, DiskLayout::default());
        let mut pods = vec![&a, &b, &c, &d];
        rank(&mut pods, &stats, &func);
        assert_eq!(
            names(&pods),
            vec!["bigger-over", "small-over", "big-over-high", "big-within"]
        );
        // with a dedicated imagefs, nodefs only counts logs and volumes
        assert_eq!(
            rank_func(
                Signal::NodeFsAvailable,
                DiskLayout {
                    dedicated_image_fs: true,
                    split_container_image_fs: false
                }
            ),
            RankFunc::Disk(
                vec![FsStatsType::Logs, FsStatsType::LocalVolumeSource],
                Resource::EphemeralStorage
            )
        );
    }

    #[test]
    fn pod_request_with_init_and_sidecars() {
        let mut p = pod("p", 0, "100Mi", "");
        let spec = p.spec.as_mut().expect("spec");
        let mut init = spec.containers[0].clone();
        init.name = "init".into();
        init.resources = Some(crate::testutil::resources("300Mi", ""));
        spec.init_containers = Some(vec![init]);
        assert_eq!(pod_request(&p, "memory"), 300 << 20, "init max wins");
        let spec = p.spec.as_mut().expect("spec");
        if let Some(inits) = spec.init_containers.as_mut() {
            inits[0].restart_policy = Some("Always".into());
        }
        assert_eq!(pod_request(&p, "memory"), 400 << 20, "sidecars add up");
    }
}
