//! Container log rotation.
//!
//! Mirrors upstream `containerLogManager`
//! (`pkg/kubelet/logs/container_log_manager.go`). The runtime (containerd)
//! writes each container's output to the log file named by its
//! `ContainerStatus.log_path`; the kubelet rotates that file once it
//! reaches `containerLogMaxSize`, keeping at most `containerLogMaxFiles`
//! files per container, the live one included. Every
//! [`LOG_MONITOR_PERIOD`] (10 s, upstream `containerLogMonitorInterval`) the
//! agent calls [`ContainerLogManager::rotate_logs`], which for each
//! running container whose log is at least the maximum size (upstream
//! `rotateLog`):
//!
//! 1. removes leftovers of an interrupted rotation (upstream
//!    `cleanupUnusedLogs`): `<log>.<timestamp>[.gz].tmp` files, and
//!    `<log>.<timestamp>` files whose `.gz` twin exists;
//! 2. removes the oldest rotated files so that `max_files - 2` remain
//!    (upstream `removeExcessLogs`): with the live log and the file about
//!    to be rotated, `max_files` in all;
//! 3. renames the live log to `<log>.<YYYYMMDD-HHMMSS>` (upstream's
//!    `20060102-150405`) and calls CRI `ReopenContainerLog`, within a
//!    timeout, so the runtime writes to a new live file; when that fails,
//!    renames the file back so the next round tries again (upstream
//!    `rotateLatestLog`).
//!
//! A live log that has gone missing (a rotation that failed halfway) is
//! recovered by reopening it, as upstream does.
//!
//! Differences from upstream:
//!
//! - Rotated files are **not gzip-compressed** (upstream compresses all
//!   but the newest): no compression crate is available to this workspace
//!   offline. Rotated files therefore take more room; `.gz` files left by
//!   an upstream kubelet are still counted, kept and removed like the
//!   others.
//! - The timestamp is in UTC (upstream uses the local time zone), so names
//!   sort by time across daylight-saving changes.
//! - Files are handled safely: everything happens through a descriptor of
//!   the container's log directory (opened with `O_NOFOLLOW`), with
//!   `*at` calls on single names; only names that parse strictly as
//!   `<log>.<YYYYMMDD-HHMMSS>[.gz][.tmp]` are touched (upstream globs
//!   `<log>.*`), symlinks and other non-regular files are never removed or
//!   renamed (a live log that is a symlink is refused), and renames use
//!   `RENAME_NOREPLACE`, so a rotation in the same second, or a rollback
//!   after the runtime has already made a new live file, never overwrites
//!   a log.
//! - Rotation is sequential: upstream's `containerLogMaxWorkers` (default
//!   1) has no equivalent.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kubelet_cri_client::RuntimeService;
use kubelet_cri_client::api::ContainerState;
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

/// How often upstream's kubelet rotates logs (`containerLogMonitorInterval`
/// default): 10 s.
pub const LOG_MONITOR_PERIOD: Duration = Duration::from_secs(10);

/// Default `containerLogMaxSize`: 10 MiB.
pub const DEFAULT_CONTAINER_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;

/// Default `containerLogMaxFiles`: 5.
pub const DEFAULT_CONTAINER_LOG_MAX_FILES: usize = 5;

/// Default timeout of `ReopenContainerLog`: upstream's
/// `runtimeRequestTimeout` (2 minutes), which bounds every CRI call.
pub const DEFAULT_REOPEN_TIMEOUT: Duration = Duration::from_secs(120);

const COMPRESS_SUFFIX: &str = ".gz";
const TMP_SUFFIX: &str = ".tmp";

/// Upstream's `LogRotatePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotatePolicy {
    /// A live log of at least this many bytes is rotated
    /// (`containerLogMaxSize`).
    pub max_size: u64,
    /// Log files kept per container, the live one included
    /// (`containerLogMaxFiles`).
    pub max_files: usize,
}

impl Default for LogRotatePolicy {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_CONTAINER_LOG_MAX_SIZE,
            max_files: DEFAULT_CONTAINER_LOG_MAX_FILES,
        }
    }
}

impl LogRotatePolicy {
    /// Checks the policy as upstream's `NewContainerLogManager` (at least 2
    /// files) and configuration validation (a positive size) do.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_files < 2 {
            return Err(Error::InvalidPolicy(format!(
                "invalid MaxFiles {}, must be > 1",
                self.max_files
            )));
        }
        if self.max_size == 0 {
            return Err(Error::InvalidPolicy(
                "invalid MaxSize 0, must be > 0".into(),
            ));
        }
        Ok(())
    }
}

/// Parses a `containerLogMaxSize` quantity (`"10Mi"`, `"500Ki"`, `"1G"`,
/// `"1048576"`) into bytes, as upstream's `parseMaxSize` does with
/// `resource.ParseQuantity` (the one quantity parser,
/// [`kubelet_container::quantity`]); a negative size is refused.
pub fn parse_max_size(size: &str) -> Result<u64, Error> {
    kubelet_container::quantity::value(size)
        .ok()
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| Error::InvalidPolicy(format!("invalid container log max size {size:?}")))
}

/// Errors of log rotation. Each names the container or file concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The policy is out of range.
    #[error("invalid container log policy: {0}")]
    InvalidPolicy(String),
    /// A CRI call failed.
    #[error("log rotation: {what} {container:?}: {source}")]
    Cri {
        /// What was being done.
        what: &'static str,
        /// The container (empty for all).
        container: String,
        /// The CRI error.
        source: kubelet_cri_client::Error,
    },
    /// `ContainerStatus` answered without a status.
    #[error("log rotation: container status is nil for {container:?}")]
    MalformedStatus {
        /// The container.
        container: String,
    },
    /// A file operation failed.
    #[error("log rotation: {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"renaming"`, `"removing"`, ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not something rotation will touch (a symlink, not a
    /// regular file, a relative or odd path).
    #[error("log rotation: refusing {}: {reason}", path.display())]
    Unsafe {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `ReopenContainerLog` failed or timed out; the rotated file was
    /// renamed back when `rolled_back`.
    #[error("log rotation: failed to reopen container log {container:?} ({}): {reason}; rolled back: {rolled_back}", log.display())]
    Reopen {
        /// The container.
        container: String,
        /// The live log.
        log: PathBuf,
        /// The CRI error or the timeout.
        reason: String,
        /// Whether the rotated file got its live name back.
        rolled_back: bool,
    },
}

/// One rotation done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The container.
    pub container_id: String,
    /// Its live log.
    pub log_path: PathBuf,
    /// Where the live log went.
    pub rotated_to: PathBuf,
    /// Files removed first (leftovers and excess rotated files).
    pub removed: Vec<PathBuf>,
}

/// What one [`ContainerLogManager::rotate_logs`] did.
#[derive(Debug, Default)]
pub struct RotateReport {
    /// Logs rotated.
    pub rotated: Vec<Rotation>,
    /// Containers whose rotation failed (the others went on, as upstream).
    pub errors: Vec<Error>,
}

/// Rotates container logs (upstream `containerLogManager`). Share it with an
/// [`Arc`]; rotations are serialised.
///
/// Unlike upstream, which asks `ContainerStatus` of every running container
/// on every pass (every 10 s) for its log path (its `rotateLogs` TODO:
/// "Use kubelet pod cache"), the manager remembers each container's log
/// path: it is fixed when the container is created. At steady state a pass
/// costs one `ListContainers`, whatever the number of containers.
pub struct ContainerLogManager {
    runtime: Arc<dyn RuntimeService>,
    policy: LogRotatePolicy,
    reopen_timeout: Duration,
    /// Serialises rotations and cleanups; holds the log path of each
    /// container seen running (`None`: it has no log path), pruned to the
    /// running containers on every pass.
    lock: tokio::sync::Mutex<HashMap<String, Option<PathBuf>>>,
}

impl std::fmt::Debug for ContainerLogManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerLogManager")
            .field("policy", &self.policy)
            .field("reopen_timeout", &self.reopen_timeout)
            .finish_non_exhaustive()
    }
}

/// A log file's directory and name, from an absolute path.
struct LogFile {
    dir: PathBuf,
    name: String,
}

impl LogFile {
    fn parse(path: &Path) -> Result<Self, Error> {
        let unsafe_path = |reason: &str| Error::Unsafe {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        };
        if !path.is_absolute() {
            return Err(unsafe_path("the log path is not absolute"));
        }
        let name = path
            .file_name()
            .and_then(OsStr::to_str)
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .ok_or_else(|| unsafe_path("the log path has no UTF-8 file name"))?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .ok_or_else(|| unsafe_path("the log path has no directory"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
        })
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A rotated file's name, parsed: `<log>.<YYYYMMDD-HHMMSS>[.gz][.tmp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RotatedName {
    name: String,
    compressed: bool,
    tmp: bool,
}

fn parse_rotated(log: &str, name: &str) -> Option<RotatedName> {
    let rest = name.strip_prefix(log)?.strip_prefix('.')?;
    let (rest, tmp) = match rest.strip_suffix(TMP_SUFFIX) {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (stamp, compressed) = match rest.strip_suffix(COMPRESS_SUFFIX) {
        Some(r) => (r, true),
        None => (rest, false),
    };
    is_timestamp(stamp).then(|| RotatedName {
        name: name.to_owned(),
        compressed,
        tmp,
    })
}

/// `YYYYMMDD-HHMMSS`, digits only.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 15
        && b[8] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit())
}

/// `now` in UTC as `YYYYMMDD-HHMMSS` (upstream's `20060102-150405`).
pub fn rotation_timestamp(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn io_err(op: &'static str, path: PathBuf, e: Errno) -> Error {
    Error::Io {
        op,
        path,
        source: std::io::Error::from(e),
    }
}

/// The type and size of `name` in `dir`, not following a symlink; `None`
/// when it does not exist.
fn lstat_at(dir: &OwnedFd, name: &str) -> Result<Option<(FileType, u64)>, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some((
            FileType::from_raw_mode(st.st_mode),
            u64::try_from(st.st_size).unwrap_or(0),
        ))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Renames `from` to `to` in `dir`, never replacing an existing `to`.
fn rename_noreplace(dir: &OwnedFd, from: &str, to: &str) -> Result<(), Errno> {
    match rustix::fs::renameat_with(dir, from, dir, to, RenameFlags::NOREPLACE) {
        // A filesystem without RENAME_NOREPLACE: check, then rename.
        Err(Errno::INVAL) => {
            if lstat_at(dir, to)?.is_some() {
                return Err(Errno::EXIST);
            }
            rustix::fs::renameat(dir, from, dir, to)
        }
        other => other,
    }
}

impl ContainerLogManager {
    /// A manager with a validated `policy` and the default reopen timeout.
    pub fn new(runtime: Arc<dyn RuntimeService>, policy: LogRotatePolicy) -> Result<Self, Error> {
        policy.validate()?;
        Ok(Self {
            runtime,
            policy,
            reopen_timeout: DEFAULT_REOPEN_TIMEOUT,
            lock: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Gives `ReopenContainerLog` at most `timeout`.
    pub fn with_reopen_timeout(mut self, timeout: Duration) -> Self {
        self.reopen_timeout = timeout;
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> &LogRotatePolicy {
        &self.policy
    }

    /// Rotates the logs of every running container that need it, naming
    /// rotated files after the current time (upstream `rotateLogs`).
    pub async fn rotate_logs(&self) -> Result<RotateReport, Error> {
        self.rotate_logs_at(SystemTime::now()).await
    }

    /// [`rotate_logs`](Self::rotate_logs) with `now` as the rotation time.
    /// Fails only when the containers cannot be listed; each container's
    /// failure is in the report's `errors`.
    pub async fn rotate_logs_at(&self, now: SystemTime) -> Result<RotateReport, Error> {
        let mut paths = self.lock.lock().await;
        let containers = self
            .runtime
            .list_containers(None)
            .await
            .map_err(|source| Error::Cri {
                what: "listing containers",
                container: String::new(),
                source,
            })?;
        let mut report = RotateReport::default();
        // Only running containers write more output.
        let running: Vec<_> = containers
            .into_iter()
            .filter(|c| c.state == ContainerState::ContainerRunning as i32)
            .collect();
        paths.retain(|id, _| running.iter().any(|c| &c.id == id));
        for c in running {
            match self.rotate_container(&mut paths, &c.id, now).await {
                Ok(Some(rotation)) => {
                    tracing::info!(container = %c.id, log = %rotation.log_path.display(), rotated = %rotation.rotated_to.display(), "rotated container log");
                    report.rotated.push(rotation);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(container = %c.id, error = %e, "failed to rotate container log");
                    report.errors.push(e);
                }
            }
        }
        Ok(report)
    }

    /// The container's log path: remembered in `paths`, else asked of the
    /// runtime (and remembered).
    async fn log_path(
        &self,
        paths: &mut HashMap<String, Option<PathBuf>>,
        id: &str,
    ) -> Result<Option<PathBuf>, Error> {
        if let Some(path) = paths.get(id) {
            return Ok(path.clone());
        }
        let path = self.ask_log_path(id).await?;
        paths.insert(id.to_owned(), path.clone());
        Ok(path)
    }

    async fn ask_log_path(&self, id: &str) -> Result<Option<PathBuf>, Error> {
        let resp = self
            .runtime
            .container_status(id, false)
            .await
            .map_err(|source| Error::Cri {
                what: "reading the status of container",
                container: id.to_owned(),
                source,
            })?;
        let status = resp.status.ok_or_else(|| Error::MalformedStatus {
            container: id.to_owned(),
        })?;
        Ok((!status.log_path.is_empty()).then(|| PathBuf::from(status.log_path)))
    }

    fn open_dir(log: &LogFile) -> Result<OwnedFd, Error> {
        rustix::fs::openat(
            CWD,
            &log.dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("opening log directory", log.dir.clone(), e))
    }

    async fn rotate_container(
        &self,
        paths: &mut HashMap<String, Option<PathBuf>>,
        id: &str,
        now: SystemTime,
    ) -> Result<Option<Rotation>, Error> {
        let Some(path) = self.log_path(paths, id).await? else {
            return Ok(None);
        };
        let log = LogFile::parse(&path)?;
        let dir = Self::open_dir(&log)?;
        let stat =
            match lstat_at(&dir, &log.name).map_err(|e| io_err("reading", path.clone(), e))? {
                Some(stat) => stat,
                None => {
                    // A rotation that failed halfway may have lost the live
                    // log: reopening recovers it (upstream).
                    self.runtime
                        .reopen_container_log(id)
                        .await
                        .map_err(|source| Error::Cri {
                            what: "reopening the missing log of container",
                            container: id.to_owned(),
                            source,
                        })?;
                    lstat_at(&dir, &log.name)
                        .map_err(|e| io_err("reading", path.clone(), e))?
                        .ok_or_else(|| Error::Io {
                            op: "reading after reopen",
                            path: path.clone(),
                            source: std::io::ErrorKind::NotFound.into(),
                        })?
                }
            };
        let (kind, size) = stat;
        if kind != FileType::RegularFile {
            return Err(Error::Unsafe {
                path,
                reason: format!("the live log is a {kind:?}, not a regular file"),
            });
        }
        if size < self.policy.max_size {
            return Ok(None);
        }
        self.rotate_log(id, &log, &dir, now).await.map(Some)
    }

    /// Rotated files of `log` in `dir` that are regular files, by name.
    fn rotated_files(log: &LogFile, dir: &OwnedFd) -> Result<Vec<RotatedName>, Error> {
        let entries =
            rustix::fs::Dir::read_from(dir).map_err(|e| io_err("listing", log.dir.clone(), e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err("listing", log.dir.clone(), e))?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            let Some(parsed) = parse_rotated(&log.name, name) else {
                continue;
            };
            match lstat_at(dir, name) {
                Ok(Some((FileType::RegularFile, _))) => files.push(parsed),
                Ok(Some((kind, _))) => {
                    tracing::warn!(path = %log.path_of(name).display(), ?kind, "leaving a rotated log name that is not a regular file alone");
                }
                Ok(None) => {}
                Err(e) => return Err(io_err("reading", log.path_of(name), e)),
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    fn remove(
        log: &LogFile,
        dir: &OwnedFd,
        name: &str,
        removed: &mut Vec<PathBuf>,
    ) -> Result<(), Error> {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {
                removed.push(log.path_of(name));
                Ok(())
            }
            Err(e) => Err(io_err("removing", log.path_of(name), e)),
        }
    }

    /// Upstream `rotateLog`: clean up, remove excess, rotate the live log.
    async fn rotate_log(
        &self,
        id: &str,
        log: &LogFile,
        dir: &OwnedFd,
        now: SystemTime,
    ) -> Result<Rotation, Error> {
        let mut removed = Vec::new();
        let files = Self::rotated_files(log, dir)?;

        // cleanupUnusedLogs: temporary files, and files already compressed.
        let names: std::collections::HashSet<&str> =
            files.iter().map(|f| f.name.as_str()).collect();
        let mut in_use = Vec::new();
        for f in &files {
            let unused = f.tmp
                || (!f.compressed
                    && names.contains(format!("{}{COMPRESS_SUFFIX}", f.name).as_str()));
            if unused {
                Self::remove(log, dir, &f.name, &mut removed)?;
            } else {
                in_use.push(f.name.clone());
            }
        }

        // removeExcessLogs: keep max_files - 2 rotated files, oldest go
        // first so an ongoing reader of a newer one is not disturbed.
        let keep = self.policy.max_files.saturating_sub(2);
        let excess = in_use.len().saturating_sub(keep);
        for name in &in_use[..excess] {
            Self::remove(log, dir, name, &mut removed)?;
        }

        // rotateLatestLog.
        let rotated = format!("{}.{}", log.name, rotation_timestamp(now));
        rename_noreplace(dir, &log.name, &rotated)
            .map_err(|e| io_err("rotating (renaming) log", log.path_of(&log.name), e))?;
        let reopened =
            tokio::time::timeout(self.reopen_timeout, self.runtime.reopen_container_log(id)).await;
        let failure = match reopened {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("timed out after {:?}", self.reopen_timeout)),
        };
        if let Some(reason) = failure {
            // Rename the rotated log back so the next round tries again.
            // NOREPLACE: if the runtime did make a new live file, keep both.
            let rolled_back = match rename_noreplace(dir, &rotated, &log.name) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(rotated = %log.path_of(&rotated).display(), log = %log.path_of(&log.name).display(), container = %id, error = %e, "failed to rename rotated log back");
                    false
                }
            };
            return Err(Error::Reopen {
                container: id.to_owned(),
                log: log.path_of(&log.name),
                reason,
                rolled_back,
            });
        }
        Ok(Rotation {
            container_id: id.to_owned(),
            log_path: log.path_of(&log.name),
            rotated_to: log.path_of(&rotated),
            removed,
        })
    }

    /// Removes a container's live and rotated logs (upstream `Clean`, for a
    /// container being removed). Only regular files with the live log's name
    /// or a rotated name are removed.
    pub async fn clean(&self, container_id: &str) -> Result<Vec<PathBuf>, Error> {
        let mut paths = self.lock.lock().await;
        let known = paths.remove(container_id);
        let path = match known {
            Some(path) => path,
            None => self.ask_log_path(container_id).await?,
        };
        let Some(path) = path else {
            return Ok(Vec::new());
        };
        let log = LogFile::parse(&path)?;
        let dir = match Self::open_dir(&log) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Vec::new());
            }
            other => other?,
        };
        let mut removed = Vec::new();
        for f in Self::rotated_files(&log, &dir)? {
            Self::remove(&log, &dir, &f.name, &mut removed)?;
        }
        match lstat_at(&dir, &log.name).map_err(|e| io_err("reading", path.clone(), e))? {
            Some((FileType::RegularFile, _)) => Self::remove(&log, &dir, &log.name, &mut removed)?,
            Some((kind, _)) => {
                return Err(Error::Unsafe {
                    path,
                    reason: format!("the live log is a {kind:?}, not a regular file"),
                });
            }
            None => {}
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_upstream_format_in_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rotation_timestamp(t), "20231114-221320");
        assert_eq!(rotation_timestamp(UNIX_EPOCH), "19700101-000000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661); // 2000-02-29 01:01:01
        assert_eq!(rotation_timestamp(leap), "20000229-010101");
    }

    #[test]
    fn rotated_names_parse_strictly() {
        let ok = parse_rotated("0.log", "0.log.20231114-221320").expect("plain");
        assert!(!ok.compressed && !ok.tmp);
        let gz = parse_rotated("0.log", "0.log.20231114-221320.gz").expect("gz");
        assert!(gz.compressed && !gz.tmp);
        let tmp = parse_rotated("0.log", "0.log.20231114-221320.gz.tmp").expect("tmp");
        assert!(tmp.compressed && tmp.tmp);
        for bad in [
            "0.log",
            "0.log.",
            "0.log.foo",
            "0.log.2023111-221320",
            "0.log.20231114_221320",
            "0.log.20231114-221320.bak",
            "0.log.20231114-22132x",
            "1.log.20231114-221320",
            "0.logx20231114-221320",
        ] {
            assert_eq!(parse_rotated("0.log", bad), None, "{bad}");
        }
    }

    #[test]
    fn max_size_parses_quantities() {
        assert_eq!(parse_max_size("10Mi").ok(), Some(10 << 20));
        assert_eq!(parse_max_size("64Ki").ok(), Some(65_536));
        assert_eq!(parse_max_size("1G").ok(), Some(1_000_000_000));
        assert_eq!(parse_max_size("4096").ok(), Some(4096));
        // A fraction is a quantity too (upstream `AsInt64` of 1.5Mi).
        assert_eq!(parse_max_size("1.5Mi").ok(), Some(1_572_864));
        for bad in ["", "Mi", "-1", "10mi", "10 Mi", "99999999999Ei"] {
            assert!(parse_max_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_is_validated() {
        assert!(LogRotatePolicy::default().validate().is_ok());
        let one = LogRotatePolicy {
            max_files: 1,
            ..Default::default()
        };
        assert!(one.validate().is_err());
        let zero = LogRotatePolicy {
            max_size: 0,
            ..Default::default()
        };
        assert!(zero.validate().is_err());
    }
}
