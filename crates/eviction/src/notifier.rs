//! Kernel memory threshold notification: wake the eviction manager the
//! moment a memory cgroup's usage crosses the eviction threshold, instead of
//! at the next 10-second pass.
//!
//! Upstream: `pkg/kubelet/eviction/memory_threshold_notifier.go` and
//! `threshold_notifier_linux.go` (`--kernel-memcg-notification`). On cgroup
//! v1 the kernel signals an `eventfd` registered through
//! `cgroup.event_control` with `"<eventfd> <fd of memory.usage_in_bytes>
//! <bytes>"`. Upstream does this with raw syscalls; we use `rustix`'s safe
//! `eventfd` and `poll`, so the crate stays `unsafe`-free. The usage
//! threshold is, as upstream, `capacity − eviction threshold +
//! inactive_file` (so that it fires when the *working set* reaches
//! `capacity − threshold`), recomputed from the summary every 10 s
//! ([`crate::manager::NOTIFIER_REFRESH_INTERVAL`]) as upstream, and also
//! right after each notification (beyond upstream: when page cache rather
//! than the working set crossed the line, the next crossing still wakes us).
//!
//! cgroup v2 has no `cgroup.event_control`; upstream disables the notifier
//! there, and so do we ([`Error::Unsupported`]); the
//! 10-second loop remains the fallback either way.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};

use crate::Error;
use crate::manager::{Manager, ThresholdNotifier};
use crate::threshold::{Signal, Threshold};
use kubelet_container::stats::{SYSTEM_CONTAINER_PODS, Summary};

/// How often the waiting thread checks whether it was stopped.
const STOP_POLL: Duration = Duration::from_millis(200);

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// One armed registration: the thread waiting on its eventfd.
struct Armed {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    bytes: u64,
}

impl Drop for Armed {
    fn drop(&mut self) {
        // Do not join: the thread may sit in `poll` for up to STOP_POLL, and
        // re-arming happens on the manager's pass right after a
        // notification. It exits on its own and closes its eventfd, which
        // removes the kernel registration.
        self.stop.store(true, Ordering::SeqCst);
        drop(self.thread.take());
    }
}

type Callback = Arc<dyn Fn() + Send + Sync>;

/// Registers a cgroup v1 memory usage threshold and calls back when usage
/// crosses it (in either direction, as the kernel reports).
pub struct CgroupNotifier {
    cgroup_dir: PathBuf,
    on_cross: Callback,
    armed: Mutex<Option<Armed>>,
}

impl std::fmt::Debug for CgroupNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgroupNotifier")
            .field("cgroup_dir", &self.cgroup_dir)
            .field("armed_bytes", &self.armed_bytes())
            .finish()
    }
}

impl CgroupNotifier {
    /// A notifier on the memory cgroup directory `cgroup_dir` (e.g.
    /// `/sys/fs/cgroup/memory/kubepods`). Nothing is registered until
    /// [`CgroupNotifier::arm`].
    pub fn new(
        cgroup_dir: impl Into<PathBuf>,
        on_cross: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        Self {
            cgroup_dir: cgroup_dir.into(),
            on_cross: Arc::new(on_cross),
            armed: Mutex::new(None),
        }
    }

    /// The usage threshold currently registered.
    pub fn armed_bytes(&self) -> Option<u64> {
        self.armed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|a| a.bytes)
    }

    /// Registers `usage_bytes` as the threshold, replacing the previous
    /// registration. Fails with [`Error::Unsupported`] without cgroup v1's
    /// `cgroup.event_control`.
    pub fn arm(&self, usage_bytes: u64) -> Result<(), Error> {
        let control_path = self.cgroup_dir.join("cgroup.event_control");
        if !control_path.exists() {
            return Err(Error::Unsupported(format!(
                "{} not found (cgroup v2 or no memory controller): kernel memory notifications need cgroup v1",
                control_path.display()
            )));
        }
        let usage_path = self.cgroup_dir.join("memory.usage_in_bytes");
        let watch = File::open(&usage_path).map_err(|e| io_err(&usage_path, e))?;
        let efd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| io_err(Path::new("eventfd"), e.into()))?;
        let mut control = std::fs::OpenOptions::new()
            .write(true)
            .open(&control_path)
            .map_err(|e| io_err(&control_path, e))?;
        let line = format!("{} {} {}", efd.as_raw_fd(), watch.as_raw_fd(), usage_bytes);
        control
            .write_all(line.as_bytes())
            .map_err(|e| io_err(&control_path, e))?;
        drop(watch);
        let mut efile = File::from(efd);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let cb = self.on_cross.clone();
        let dir = self.cgroup_dir.clone();
        let thread = std::thread::Builder::new()
            .name("memcg-notifier".into())
            .spawn(move || {
                let timeout = Timespec {
                    tv_sec: 0,
                    tv_nsec: STOP_POLL.as_nanos() as _,
                };
                while !stop2.load(Ordering::SeqCst) {
                    let mut fds = [PollFd::new(&efile, PollFlags::IN)];
                    match poll(&mut fds, Some(&timeout)) {
                        Ok(0) => continue,
                        Ok(_) => {
                            let mut buf = [0u8; 8];
                            match efile.read(&mut buf) {
                                Ok(8) => {
                                    tracing::info!(cgroup = %dir.display(), "eviction manager: memory threshold crossed");
                                    cb();
                                }
                                Ok(_) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                Err(e) => {
                                    tracing::info!(error = %e, "eviction manager: error reading memcg events");
                                    return;
                                }
                            }
                        }
                        Err(rustix::io::Errno::INTR) => continue,
                        Err(e) => {
                            tracing::info!(error = %e, "eviction manager: error while waiting for memcg events");
                            return;
                        }
                    }
                }
            })
            .map_err(|e| io_err(Path::new("memcg-notifier thread"), e))?;
        tracing::debug!(cgroup = %self.cgroup_dir.display(), usage_bytes, "eviction manager: memcg threshold armed");
        // Replacing drops (stops) the previous registration.
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) = Some(Armed {
            stop,
            thread: Some(thread),
            bytes: usage_bytes,
        });
        Ok(())
    }

    /// Stops waiting (the kernel drops the registration when the eventfd
    /// closes).
    pub fn stop(&self) {
        self.armed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// A memory eviction threshold watched through the kernel (upstream
/// `memoryThresholdNotifier`).
#[derive(Debug)]
pub struct MemoryThresholdNotifier {
    threshold: Threshold,
    notifier: CgroupNotifier,
}

/// Upstream's memcg threshold: `capacity − threshold + inactive_file`, where
/// capacity = available + working set and inactive_file = usage − working
/// set. `None` when the stats are incomplete.
pub fn memcg_threshold_bytes(threshold: &Threshold, summary: &Summary) -> Option<u64> {
    let m = if threshold.signal == Signal::AllocatableMemoryAvailable {
        summary
            .node
            .system_container(SYSTEM_CONTAINER_PODS)?
            .memory
            .as_ref()?
    } else {
        summary.node.memory.as_ref()?
    };
    let (usage, ws, avail) = (m.usage_bytes?, m.working_set_bytes?, m.available_bytes?);
    let capacity = avail.saturating_add(ws);
    let inactive = usage.saturating_sub(ws);
    let q = u64::try_from(
        threshold
            .value
            .quantity(i64::try_from(capacity).unwrap_or(i64::MAX)),
    )
    .unwrap_or(0);
    Some(capacity.saturating_sub(q).saturating_add(inactive))
}

impl MemoryThresholdNotifier {
    /// A notifier for `threshold` (`memory.available` watches the memory
    /// root, `allocatableMemory.available` the pods cgroup), calling
    /// `on_cross` when it fires. Errors for non-memory thresholds.
    pub fn new(
        threshold: Threshold,
        memory_root: &Path,
        pods_cgroup: &str,
        on_cross: impl Fn() + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let dir = match threshold.signal {
            Signal::MemoryAvailable => memory_root.to_owned(),
            Signal::AllocatableMemoryAvailable => {
                memory_root.join(pods_cgroup.trim_start_matches('/'))
            }
            s => {
                return Err(Error::InvalidConfig(format!(
                    "{s} has no kernel memory notification"
                )));
            }
        };
        Ok(Self {
            threshold,
            notifier: CgroupNotifier::new(dir, on_cross),
        })
    }

    /// The usage threshold registered, if any.
    pub fn armed_bytes(&self) -> Option<u64> {
        self.notifier.armed_bytes()
    }
}

impl ThresholdNotifier for MemoryThresholdNotifier {
    fn update_threshold(&self, summary: &Summary) -> Result<(), Error> {
        let bytes = memcg_threshold_bytes(&self.threshold, summary)
            .ok_or_else(|| Error::Summary("summary was incomplete: memory stats missing".into()))?;
        if self.notifier.armed_bytes() == Some(bytes) {
            return Ok(());
        }
        self.notifier.arm(bytes)
    }

    fn description(&self) -> String {
        format!(
            "{}{}memory eviction threshold",
            if self.threshold.is_hard() {
                "hard "
            } else {
                "soft "
            },
            if self.threshold.signal == Signal::AllocatableMemoryAvailable {
                "allocatable "
            } else {
                ""
            }
        )
    }
}

/// Creates a kernel notifier for each memory threshold of `manager` and
/// registers them with it; each wakes the manager when it fires (upstream
/// `Start` with `KernelMemcgNotification`). They are armed on the next
/// synchronize. Returns how many were attached; errors (for example cgroup
/// v2) are logged and leave the 10 s loop alone.
pub fn attach_memcg_notifiers(
    manager: &Arc<Manager>,
    memory_root: &Path,
    pods_cgroup: &str,
) -> usize {
    let mut n = 0;
    for t in &manager.config().thresholds {
        if !t.signal.is_memory() {
            continue;
        }
        let weak: Weak<Manager> = Arc::downgrade(manager);
        match MemoryThresholdNotifier::new(t.clone(), memory_root, pods_cgroup, move || {
            if let Some(m) = weak.upgrade() {
                m.wake();
            }
        }) {
            Ok(notifier) => {
                tracing::info!(
                    notifier = notifier.description(),
                    "eviction manager: created memoryThresholdNotifier"
                );
                manager.add_notifier(Arc::new(notifier));
                n += 1;
            }
            Err(e) => {
                tracing::info!(error = %e, "eviction manager: failed to create memory threshold notifier")
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::threshold::ThresholdValue;
    use kubelet_container::stats::{MemoryStats, NodeStats};

    #[test]
    fn threshold_bytes_as_upstream() {
        // capacity 4Gi (3Gi available + 1Gi ws), inactive_file 512Mi, threshold 100Mi
        let s = Summary {
            node: NodeStats {
                memory: Some(MemoryStats {
                    available_bytes: Some(3 << 30),
                    working_set_bytes: Some(1 << 30),
                    usage_bytes: Some((1 << 30) + (512 << 20)),
                    ..Default::default()
                }),
                ..Default::default()
            },
            pods: vec![],
        };
        let t = Threshold::hard(Signal::MemoryAvailable, ThresholdValue::Quantity(100 << 20));
        assert_eq!(
            memcg_threshold_bytes(&t, &s),
            Some((4 << 30) - (100 << 20) + (512 << 20))
        );
        let pct = Threshold::hard(Signal::MemoryAvailable, ThresholdValue::Percentage(0.25));
        assert_eq!(
            memcg_threshold_bytes(&pct, &s),
            Some((3 << 30) + (512 << 20))
        );
        let alloc = Threshold::hard(
            Signal::AllocatableMemoryAvailable,
            ThresholdValue::Quantity(1),
        );
        assert_eq!(memcg_threshold_bytes(&alloc, &s), None, "no pods stats");
    }

    #[test]
    fn non_v1_directory_is_unsupported() {
        let t = tempfile::tempdir().expect("tempdir");
        let n = CgroupNotifier::new(t.path(), || {});
        assert!(matches!(n.arm(1), Err(Error::Unsupported(_))));
        let e = MemoryThresholdNotifier::new(
            Threshold::hard(Signal::PidAvailable, ThresholdValue::Quantity(1)),
            t.path(),
            "kubepods",
            || {},
        );
        assert!(e.is_err());
    }
}
