//! Container lifecycle hooks (`postStart`, `preStop`) and termination
//! messages.
//!
//! - [`HandlerRunner`] runs one lifecycle handler, as upstream's
//!   `handlerRunner` (`pkg/kubelet/lifecycle/handlers.go`): `exec` through
//!   CRI `ExecSync`, `httpGet` through an
//!   [`HttpHook`] (`kubelet-prober`'s HTTP
//!   prober in the kubelet, as upstream builds the request with
//!   `pkg/probe/http.NewRequestForHTTPGetAction`), and `sleep`.
//!   [`RuntimeManager`](crate::RuntimeManager) runs `postStart` right after
//!   `StartContainer` and `preStop` before `StopContainer`
//!   (`pkg/kubelet/kuberuntime/kuberuntime_container.go`, `startContainer`,
//!   `executePreStopHook`, `killContainer`).
//! - [`make_termination_message_mount`] creates the file bind-mounted at the
//!   container's `terminationMessagePath`:
//!   `<pod dir>/containers/<container>/<8 random hex>`, mode 0666 (upstream
//!   `makeMounts` in `kuberuntime_container.go`, with the directory from
//!   `GenerateRunContainerOptions` in `pkg/kubelet/kubelet_pods.go`).
//! - [`termination_message`] reads it back once the container exited, at
//!   most the last 4096 bytes; with `FallbackToLogsOnError`, an empty file and
//!   a failed exit, the last 80 lines (at most 2048 bytes) of the container's
//!   log instead (upstream `getTerminationMessage`,
//!   `readLastStringFromContainerLogs`, `convertToKubeContainerStatus`).
//!
//! Where this differs from upstream:
//!
//! - an `httpGet` hook follows redirects only on the same host (the probes'
//!   client; Go's default client follows any) and does not verify an HTTPS
//!   server's certificate (the probes' client; upstream's lifecycle client
//!   does). As upstream, any HTTP response counts as success, whatever its
//!   status code, and an `https` hook answered in plain HTTP is retried over
//!   `http` without its `Authorization` header;
//! - an `exec` `preStop` hook gets the grace period as its `ExecSync` timeout
//!   (upstream passes none and stops waiting after the grace period, leaving
//!   the command running); `postStart` hooks have no timeout, as upstream;
//! - only the CRI log format is read for `FallbackToLogsOnError` (not the
//!   legacy Docker JSON format).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Pod};
use kubelet_container::HttpHook;
use kubelet_cri_client::{RuntimeService, api};

/// The default `terminationMessagePath` (API default).
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// The `terminationMessagePolicy` that falls back to the log tail (API
/// `TerminationMessageFallbackToLogsOnError`).
pub const FALLBACK_TO_LOGS_ON_ERROR: &str = "FallbackToLogsOnError";

/// At most this many bytes of the termination-message file are read: its
/// last ones (upstream `kubecontainer.MaxContainerTerminationMessageLength`).
pub const MAX_TERMINATION_MESSAGE_LENGTH: usize = 1024 * 4;

/// At most this many bytes of the log tail make a fallback termination
/// message (upstream `MaxContainerTerminationMessageLogLength`).
pub const MAX_TERMINATION_MESSAGE_LOG_LENGTH: usize = 1024 * 2;

/// At most this many log lines make a fallback termination message
/// (upstream `MaxContainerTerminationMessageLogLines`).
pub const MAX_TERMINATION_MESSAGE_LOG_LINES: usize = 80;

/// The kill message of a container whose `postStart` hook failed (upstream
/// `reasonFailedPostStartHook` / event `FailedPostStartHook`).
pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";

/// The kube version in the hooks' `User-Agent: kube-lifecycle/<v>` unless
/// [`HandlerRunner::with_kube_version`] says otherwise.
pub const DEFAULT_KUBE_VERSION: &str = kubelet_container::KUBE_VERSION;

/// Reading more than this of a log file to find its last lines is not
/// attempted: containerd splits log lines at 16 KiB, so 80 lines fit.
const MAX_LOG_TAIL_READ: u64 = 2 * 1024 * 1024;

/// A lifecycle hook that failed; its message is upstream's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The command could not run or exited non-zero.
    #[error(
        "Exec lifecycle hook ([{}]) for Container {container:?} in Pod {pod:?} failed - error: {error}, message: {output:?}",
        command.join(" ")
    )]
    Exec {
        /// The hook's command.
        command: Vec<String>,
        /// The container.
        container: String,
        /// The pod (`name_namespace(uid)`).
        pod: String,
        /// What went wrong.
        error: String,
        /// The command's stdout then stderr.
        output: String,
    },
    /// The request could not be made or got no HTTP response.
    #[error(
        "HTTP lifecycle hook ({path}) for Container {container:?} in Pod {pod:?} failed - error: {error}"
    )]
    Http {
        /// The hook's path.
        path: String,
        /// The container.
        container: String,
        /// The pod (`name_namespace(uid)`).
        pod: String,
        /// What went wrong.
        error: String,
    },
    /// The handler has no action (upstream `invalid handler`).
    #[error("Cannot run handler: invalid handler for Container {container:?} in Pod {pod:?}")]
    Invalid {
        /// The container.
        container: String,
        /// The pod (`name_namespace(uid)`).
        pod: String,
    },
}

/// How upstream's `format.Pod` names a pod: `name_namespace(uid)`.
fn format_pod(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Whether running `handler` needs the pod's IP: an `httpGet` without a
/// `host` (upstream `runHTTPHandler` then asks for the pod status).
pub fn needs_pod_ip(handler: &LifecycleHandler) -> bool {
    handler
        .http_get
        .as_ref()
        .is_some_and(|h| h.host.as_deref().unwrap_or_default().is_empty())
}

/// Runs lifecycle handlers (upstream `handlerRunner`,
/// `pkg/kubelet/lifecycle/handlers.go`). Cheap to clone.
#[derive(Clone)]
pub struct HandlerRunner {
    runtime: Arc<dyn RuntimeService>,
    http: Option<Arc<dyn HttpHook>>,
    user_agent: String,
}

impl std::fmt::Debug for HandlerRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerRunner")
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

impl HandlerRunner {
    /// A runner whose `exec` handlers run through `runtime`. HTTP handlers
    /// fail until [`with_http`](Self::with_http) gives it a client.
    pub fn new(runtime: Arc<dyn RuntimeService>) -> Self {
        Self {
            runtime,
            http: None,
            user_agent: format!("kube-lifecycle/{DEFAULT_KUBE_VERSION}"),
        }
    }

    /// Sends HTTP handlers' GETs through `http` (`kubelet-prober`'s HTTP
    /// prober in the kubelet).
    pub fn with_http(mut self, http: Arc<dyn HttpHook>) -> Self {
        self.http = Some(http);
        self
    }

    /// Sends `User-Agent: kube-lifecycle/<version>` (`major.minor`).
    pub fn with_kube_version(mut self, version: &str) -> Self {
        self.user_agent = format!("kube-lifecycle/{version}");
        self
    }

    /// Runs `handler` for `container` (running as `container_id`) of `pod`
    /// (upstream `handlerRunner.Run`). `pod_ips` are the pod's IPs, for an
    /// `httpGet` without a host. `timeout` bounds an `exec` (as its
    /// `ExecSync` timeout) and an `httpGet`; `None` waits as long as it
    /// takes, as upstream's `postStart`. A `sleep` sleeps its seconds: the
    /// caller bounds it.
    pub async fn run(
        &self,
        container_id: &str,
        pod: &Pod,
        container: &Container,
        handler: &LifecycleHandler,
        pod_ips: &[String],
        timeout: Option<Duration>,
    ) -> Result<(), HookError> {
        if let Some(exec) = &handler.exec {
            let command = exec.command.clone().unwrap_or_default();
            let fail = |error: String, output: String| HookError::Exec {
                command: command.clone(),
                container: container.name.clone(),
                pod: format_pod(pod),
                error,
                output,
            };
            let reply = self
                .runtime
                .exec_sync(
                    container_id,
                    command.clone(),
                    timeout.unwrap_or(Duration::ZERO),
                )
                .await
                .map_err(|e| fail(e.to_string(), String::new()))?;
            if reply.exit_code != 0 {
                // Upstream's CRI client turns a non-zero exit into an error
                // (`CodeExitError`); the output is stdout then stderr.
                let mut output = reply.stdout.clone();
                output.extend_from_slice(&reply.stderr);
                return Err(fail(
                    format!(
                        "command '{}' exited with {}: {}",
                        command.join(" "),
                        reply.exit_code,
                        String::from_utf8_lossy(&reply.stderr)
                    ),
                    String::from_utf8_lossy(&output).into_owned(),
                ));
            }
            Ok(())
        } else if let Some(action) = &handler.http_get {
            self.run_http(pod, container, action, pod_ips, timeout)
                .await
                .map_err(|error| HookError::Http {
                    path: action.path.clone().unwrap_or_default(),
                    container: container.name.clone(),
                    pod: format_pod(pod),
                    error,
                })
        } else if let Some(sleep) = &handler.sleep {
            tokio::time::sleep(Duration::from_secs(
                u64::try_from(sleep.seconds).unwrap_or(0),
            ))
            .await;
            Ok(())
        } else {
            Err(HookError::Invalid {
                container: container.name.clone(),
                pod: format_pod(pod),
            })
        }
    }

    /// Upstream `runHTTPHandler`: a GET to the hook's URL; any HTTP
    /// response is a success, whatever its status.
    async fn run_http(
        &self,
        pod: &Pod,
        container: &Container,
        action: &HTTPGetAction,
        pod_ips: &[String],
        timeout: Option<Duration>,
    ) -> Result<(), String> {
        let host = action.host.as_deref().unwrap_or_default();
        let pod_ip = if host.is_empty() {
            match pod_ips.first().filter(|ip| !ip.is_empty()) {
                Some(ip) => ip.as_str(),
                None => return Err("failed to find networking container: the pod has no IP".into()),
            }
        } else {
            host
        };
        // No deadline of its own (Go's zero Client.Timeout): tokio's timeout
        // treats an overflowing deadline as never.
        let limit = timeout.unwrap_or(Duration::MAX);
        let Some(http) = &self.http else {
            return Err("no HTTP client for lifecycle hooks (HandlerRunner::with_http)".into());
        };
        let result = http
            .get(action, container, pod_ip, &self.user_agent, limit)
            .await;
        if result.is_ok() {
            tracing::debug!(pod = %format_pod(pod), container = %container.name, "HTTP lifecycle hook answered");
        }
        result
    }
}

/// A random 8-hex-digit name (upstream `makeUID`).
fn make_uid() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    format!("{:08x}", h.finish() & 0xffff_ffff)
}

/// The container's termination-message path: its `terminationMessagePath`,
/// or the API default when unset; empty means none.
pub fn termination_message_path(container: &Container) -> &str {
    container
        .termination_message_path
        .as_deref()
        .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH)
}

/// Creates the container's termination-message file,
/// `<pod_dir>/containers/<container>/<8 random hex>` with mode 0666 (the
/// directory 0750), and returns the mount that binds it at the container's
/// `terminationMessagePath` (upstream `makeMounts`, `kuberuntime_container.go`;
/// the directory as `GenerateRunContainerOptions`, `kubelet_pods.go`).
/// `None` when the container has no termination-message path or the file
/// cannot be made; the latter is logged, and the container runs without it,
/// as upstream.
pub fn make_termination_message_mount(pod_dir: &Path, container: &Container) -> Option<api::Mount> {
    let container_path = termination_message_path(container);
    if container_path.is_empty() {
        return None;
    }
    let name = container.name.as_str();
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        tracing::warn!(container = %name, "invalid container name; no termination-message file");
        return None;
    }
    let dir = pod_dir.join("containers").join(name);
    if let Err(e) = create_dir_0750(&dir) {
        tracing::error!(path = %dir.display(), error = %e, "error on creating dir");
        return None;
    }
    let host_path = match create_0666_file(&dir) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "error on creating termination-log file");
            return None;
        }
    };
    Some(api::Mount {
        container_path: container_path.to_owned(),
        host_path: host_path.display().to_string(),
        ..Default::default()
    })
}

fn create_dir_0750(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

/// A new empty file with a random name in `dir`, mode 0666 whatever the
/// umask (upstream chmods after creating).
fn create_0666_file(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut last = None;
    for _ in 0..8 {
        let path = dir.join(make_uid());
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&path)
        {
            Ok(file) => {
                file.set_permissions(std::fs::Permissions::from_mode(0o666))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free file name")))
}

/// The termination message of an exited container, from its CRI status
/// (upstream `convertToKubeContainerStatus`): the termination-message file
/// found among its mounts, or, when its policy is `FallbackToLogsOnError`,
/// it exited non-zero (and not `ContainerCannotRun`) and the file is empty
/// or missing, the tail of its log. Empty for a container that has not
/// exited.
pub fn termination_message(status: &api::ContainerStatus) -> String {
    let info = crate::labels::annotated_container_info(&status.annotations);
    termination_message_with(
        status,
        &info.termination_message_path,
        &info.termination_message_policy,
    )
}

/// [`termination_message`] with the annotations already read.
pub(crate) fn termination_message_with(
    status: &api::ContainerStatus,
    path: &str,
    policy: &str,
) -> String {
    if status.state() != api::ContainerState::ContainerExited {
        return String::new();
    }
    // A container that could not even start has no logs.
    let fallback_to_logs = policy == FALLBACK_TO_LOGS_ON_ERROR
        && status.exit_code != 0
        && status.reason != "ContainerCannotRun";
    let (message, check_logs) = read_termination_message_file(status, path, fallback_to_logs);
    if check_logs {
        read_last_string_from_container_logs(Path::new(&status.log_path))
    } else {
        message
    }
}

/// Upstream `getTerminationMessage`: the last
/// [`MAX_TERMINATION_MESSAGE_LENGTH`] bytes of the file mounted at `path`,
/// and whether the logs should be read instead.
fn read_termination_message_file(
    status: &api::ContainerStatus,
    path: &str,
    fallback_to_logs: bool,
) -> (String, bool) {
    if path.is_empty() {
        return (String::new(), fallback_to_logs);
    }
    let Some(mount) = status.mounts.iter().find(|m| m.container_path == path) else {
        return (String::new(), fallback_to_logs);
    };
    let host = Path::new(&mount.host_path);
    match read_at_most(host, MAX_TERMINATION_MESSAGE_LENGTH) {
        Ok(data) => {
            let empty = data.is_empty();
            (
                String::from_utf8_lossy(&data).into_owned(),
                fallback_to_logs && empty,
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), fallback_to_logs),
        Err(e) => (
            format!("Error on reading termination log {}: {e}", host.display()),
            false,
        ),
    }
}

/// The last `max` bytes of the file (upstream `tail.ReadAtMost`).
fn read_at_most(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let max = u64::try_from(max).unwrap_or(u64::MAX);
    if len > max {
        f.seek(SeekFrom::Start(len - max))?;
    }
    let mut data = Vec::new();
    f.take(max).read_to_end(&mut data)?;
    Ok(data)
}

/// Upstream `readLastStringFromContainerLogs`: the contents of the last
/// [`MAX_TERMINATION_MESSAGE_LOG_LINES`] lines of a CRI log file, stdout
/// and stderr together, of which the last
/// [`MAX_TERMINATION_MESSAGE_LOG_LENGTH`] bytes are kept.
pub fn read_last_string_from_container_logs(path: &Path) -> String {
    match read_tail_lines(path, MAX_TERMINATION_MESSAGE_LOG_LINES) {
        Ok(lines) => {
            let mut out: Vec<u8> = Vec::new();
            for line in lines.split_inclusive(|b| *b == b'\n') {
                match parse_cri_log_line(line) {
                    Some(content) => out.extend_from_slice(content),
                    None => {
                        tracing::debug!(path = %path.display(), "unparsable line in log file skipped")
                    }
                }
            }
            let keep = out.len().saturating_sub(MAX_TERMINATION_MESSAGE_LOG_LENGTH);
            String::from_utf8_lossy(&out[keep..]).into_owned()
        }
        Err(e) => format!("Error on reading termination message from logs: {e}"),
    }
}

/// The bytes of the last `n` lines of the file (upstream
/// `tail.FindTailLineStartIndex`: a final newline ends the last line, it
/// does not start an empty one). Reads backwards, at most
/// [`MAX_LOG_TAIL_READ`] bytes.
fn read_tail_lines(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    const BLOCK: u64 = 16 * 1024;
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut start = len;
    let mut newlines = 0usize;
    let mut ends_with_newline = None;
    // The n-th last line starts after the (n+1)-th last newline when the
    // file ends with one, after the n-th otherwise.
    loop {
        if start == 0 || len - start >= MAX_LOG_TAIL_READ {
            break;
        }
        let from = start.saturating_sub(BLOCK);
        let size = usize::try_from(start - from).unwrap_or(0);
        let mut chunk = vec![0u8; size];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut chunk)?;
        if ends_with_newline.is_none() {
            ends_with_newline = Some(chunk.last() == Some(&b'\n'));
        }
        newlines += chunk.iter().filter(|b| **b == b'\n').count();
        chunks.push(chunk);
        start = from;
        let need = n + usize::from(ends_with_newline.unwrap_or(false));
        if newlines >= need {
            break;
        }
    }
    chunks.reverse();
    let data: Vec<u8> = chunks.concat();
    let need = n + usize::from(ends_with_newline.unwrap_or(false));
    let mut seen = 0usize;
    for (i, b) in data.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == need {
                return Ok(data[i + 1..].to_vec());
            }
        }
    }
    if start > 0 {
        // Cut at the read limit: drop the partial first line.
        if let Some(i) = data.iter().position(|b| *b == b'\n') {
            return Ok(data[i + 1..].to_vec());
        }
    }
    Ok(data)
}

/// One CRI log line, `<RFC 3339 time> <stdout|stderr> <tags> <content>`,
/// to its content: with its newline for a full (`F`) line, without for a
/// partial (`P`) one (upstream `parseCRILog`). `None` when it is not in
/// that format.
fn parse_cri_log_line(line: &[u8]) -> Option<&[u8]> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = parts.next()?;
    if timestamp.is_empty() || !timestamp.contains(&b'T') {
        return None;
    }
    let stream = parts.next()?;
    if stream != b"stdout" && stream != b"stderr" {
        return None;
    }
    let tags = parts.next()?;
    let content = parts.next()?;
    let partial = tags.split(|b| *b == b':').next() == Some(b"P".as_slice());
    if partial && content.last() == Some(&b'\n') {
        return Some(&content[..content.len() - 1]);
    }
    Some(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn exited(mounts: Vec<api::Mount>, exit_code: i32, log_path: &Path) -> api::ContainerStatus {
        api::ContainerStatus {
            state: api::ContainerState::ContainerExited as i32,
            exit_code,
            mounts,
            log_path: log_path.display().to_string(),
            ..Default::default()
        }
    }

    fn cri_log(lines: &[(&str, &str, &str)]) -> String {
        lines
            .iter()
            .map(|(stream, tag, text)| {
                format!("2024-01-02T03:04:05.000000006Z {stream} {tag} {text}\n")
            })
            .collect()
    }

    #[test]
    fn cri_lines_parse_as_upstream() {
        assert_eq!(
            parse_cri_log_line(b"2016-10-06T00:17:09.669794202Z stdout F hello world\n"),
            Some(b"hello world\n".as_slice())
        );
        assert_eq!(
            parse_cri_log_line(b"2016-10-06T00:17:09.669794202Z stderr P part\n"),
            Some(b"part".as_slice())
        );
        assert_eq!(
            parse_cri_log_line(b"2016-10-06T00:17:09.669794202Z stdout F:x \n"),
            Some(b"\n".as_slice())
        );
        assert_eq!(
            parse_cri_log_line(b"2016-10-06T00:17:09Z stdin F x\n"),
            None
        );
        assert_eq!(parse_cri_log_line(b"garbage\n"), None);
    }

    #[test]
    fn the_file_wins_and_is_capped_to_its_last_4096_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("msg");
        let body: String = (0..5000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        std::fs::write(&file, &body).unwrap();
        let mounts = vec![api::Mount {
            container_path: "/dev/termination-log".into(),
            host_path: file.display().to_string(),
            ..Default::default()
        }];
        let st = exited(mounts, 1, &dir.path().join("0.log"));
        let msg = termination_message_with(&st, "/dev/termination-log", FALLBACK_TO_LOGS_ON_ERROR);
        assert_eq!(msg.len(), MAX_TERMINATION_MESSAGE_LENGTH);
        assert_eq!(msg, body[5000 - 4096..]);
    }

    #[test]
    fn a_running_container_has_no_termination_message() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("msg");
        std::fs::write(&file, "done").unwrap();
        let mut st = exited(
            vec![api::Mount {
                container_path: "/dev/termination-log".into(),
                host_path: file.display().to_string(),
                ..Default::default()
            }],
            0,
            Path::new(""),
        );
        assert_eq!(
            termination_message_with(&st, "/dev/termination-log", "File"),
            "done"
        );
        st.state = api::ContainerState::ContainerRunning as i32;
        assert_eq!(
            termination_message_with(&st, "/dev/termination-log", "File"),
            ""
        );
    }

    #[test]
    fn fallback_reads_the_last_80_lines_only_on_failure_with_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("msg");
        std::fs::write(&file, "").unwrap();
        let log = dir.path().join("0.log");
        let lines: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        let entries: Vec<(&str, &str, &str)> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (
                    if i % 2 == 0 { "stdout" } else { "stderr" },
                    "F",
                    l.as_str(),
                )
            })
            .collect();
        std::fs::write(&log, cri_log(&entries)).unwrap();
        let mounts = vec![api::Mount {
            container_path: "/dev/termination-log".into(),
            host_path: file.display().to_string(),
            ..Default::default()
        }];
        let st = exited(mounts.clone(), 2, &log);
        let msg = termination_message_with(&st, "/dev/termination-log", FALLBACK_TO_LOGS_ON_ERROR);
        let expected: String = (20..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(msg, expected);

        // A zero exit, the File policy, or ContainerCannotRun: no fallback.
        let ok = exited(mounts.clone(), 0, &log);
        assert_eq!(
            termination_message_with(&ok, "/dev/termination-log", FALLBACK_TO_LOGS_ON_ERROR),
            ""
        );
        assert_eq!(
            termination_message_with(&st, "/dev/termination-log", "File"),
            ""
        );
        let mut cannot = exited(mounts.clone(), 128, &log);
        cannot.reason = "ContainerCannotRun".into();
        assert_eq!(
            termination_message_with(&cannot, "/dev/termination-log", FALLBACK_TO_LOGS_ON_ERROR),
            ""
        );

        // Something in the file: the file wins.
        std::fs::write(&file, "custom").unwrap();
        assert_eq!(
            termination_message_with(&st, "/dev/termination-log", FALLBACK_TO_LOGS_ON_ERROR),
            "custom"
        );

        // No mount at all (no pod dir): the logs.
        let unmounted = exited(Vec::new(), 2, &log);
        assert_eq!(
            termination_message_with(
                &unmounted,
                "/dev/termination-log",
                FALLBACK_TO_LOGS_ON_ERROR
            ),
            expected
        );
    }

    #[test]
    fn fallback_keeps_the_last_2048_bytes_and_joins_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let long = "x".repeat(1500);
        let mut text = cri_log(&[("stdout", "F", &long), ("stdout", "F", &long)]);
        text.push_str(&cri_log(&[("stderr", "P", "par"), ("stderr", "F", "tial")]));
        std::fs::write(&log, &text).unwrap();
        let msg = read_last_string_from_container_logs(&log);
        assert_eq!(msg.len(), MAX_TERMINATION_MESSAGE_LOG_LENGTH);
        assert!(msg.ends_with("x\npartial\n"), "{msg:?}");
    }

    #[test]
    fn tail_lines_handle_files_with_and_without_a_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "a\nb\nc\n").unwrap();
        assert_eq!(read_tail_lines(&f, 2).unwrap(), b"b\nc\n");
        assert_eq!(read_tail_lines(&f, 5).unwrap(), b"a\nb\nc\n");
        std::fs::write(&f, "a\nb\nc").unwrap();
        assert_eq!(read_tail_lines(&f, 2).unwrap(), b"b\nc");
        std::fs::write(&f, "").unwrap();
        assert_eq!(read_tail_lines(&f, 2).unwrap(), b"");
        // Across block boundaries.
        let mut big = std::fs::File::create(&f).unwrap();
        for i in 0..5000 {
            writeln!(big, "{i:08}").unwrap();
        }
        drop(big);
        assert_eq!(
            read_tail_lines(&f, 3).unwrap(),
            b"00004997\n00004998\n00004999\n"
        );
        assert_eq!(read_tail_lines(&f, 4000).unwrap().len(), 4000 * 9);
    }

    #[test]
    fn a_missing_log_is_reported_as_upstream() {
        let msg = read_last_string_from_container_logs(Path::new("/nonexistent/0.log"));
        assert!(
            msg.starts_with("Error on reading termination message from logs: "),
            "{msg}"
        );
    }

    #[test]
    fn the_termination_message_file_is_made_0666_under_the_container_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let c = Container {
            name: "app".into(),
            ..Default::default()
        };
        let m = make_termination_message_mount(dir.path(), &c).expect("mount");
        assert_eq!(m.container_path, DEFAULT_TERMINATION_MESSAGE_PATH);
        let host = PathBuf::from(&m.host_path);
        assert_eq!(
            host.parent(),
            Some(dir.path().join("containers/app").as_path())
        );
        let name = host.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.len() == 8 && name.chars().all(|c| c.is_ascii_hexdigit()),
            "{name}"
        );
        let mode = std::fs::metadata(&host).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        // A second instance of the container gets its own file.
        let again = make_termination_message_mount(dir.path(), &c).expect("mount");
        assert_ne!(again.host_path, m.host_path);

        let custom = Container {
            name: "app".into(),
            termination_message_path: Some("/tmp/msg".into()),
            ..Default::default()
        };
        assert_eq!(
            make_termination_message_mount(dir.path(), &custom).map(|m| m.container_path),
            Some("/tmp/msg".into())
        );
        let none = Container {
            name: "app".into(),
            termination_message_path: Some(String::new()),
            ..Default::default()
        };
        assert!(make_termination_message_mount(dir.path(), &none).is_none());
        let sneaky = Container {
            name: "../x".into(),
            ..Default::default()
        };
        assert!(make_termination_message_mount(dir.path(), &sneaky).is_none());
    }

    #[test]
    fn only_an_http_hook_without_a_host_needs_the_pod_ip() {
        let mut h = LifecycleHandler {
            http_get: Some(HTTPGetAction::default()),
            ..Default::default()
        };
        assert!(needs_pod_ip(&h));
        h.http_get = Some(HTTPGetAction {
            host: Some("127.0.0.1".into()),
            ..Default::default()
        });
        assert!(!needs_pod_ip(&h));
        assert!(!needs_pod_ip(&LifecycleHandler::default()));
    }
}
