//! Lifecycle hooks and termination messages against the in-memory
//! `FakeRuntime`, wrapped to record what the fake does not: the timeout each
//! `StopContainer` gets, and the order of hooks and stops. The wrapper also
//! reports log paths absolute, as containerd does.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kubelet_cri_client::api::{
    AuthConfig, Container, ContainerConfig, ContainerFilter, ContainerStats, ContainerStatsFilter,
    ContainerStatusResponse, ExecSyncResponse, Image, ImageFilter, ImageFsInfoResponse, ImageSpec,
    LinuxContainerResources, PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxStats,
    PodSandboxStatsFilter, PodSandboxStatusResponse, RuntimeConfigResponse, StatusResponse,
    VersionResponse,
};
use kubelet_cri_client::{ContainerEventStream, FakeRuntime, ImageService, Result, RuntimeService};
use kubelet_kuberuntime::config::{ConfigOptions, PodVolumes};
use kubelet_kuberuntime::{
    ContainerState, Error, PodStatus, Runtime, RuntimeManager, RuntimeReader,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The fake, plus a journal of hook and stop events and stop timeouts.
#[derive(Clone)]
struct Recording {
    fake: FakeRuntime,
    journal: Arc<Mutex<Vec<String>>>,
    stops: Arc<Mutex<Vec<Duration>>>,
    stopped: Arc<Mutex<Vec<String>>>,
    log_dir: Arc<Mutex<String>>,
}

impl Recording {
    fn note(&self, event: impl Into<String>) {
        lock(&self.journal).push(event.into());
    }
    fn journal(&self) -> Vec<String> {
        lock(&self.journal).clone()
    }
    fn stops(&self) -> Vec<Duration> {
        lock(&self.stops).clone()
    }
}

#[async_trait]
impl RuntimeService for Recording {
    async fn version(&self) -> Result<VersionResponse> {
        self.fake.version().await
    }
    async fn status(&self, verbose: bool) -> Result<StatusResponse> {
        self.fake.status(verbose).await
    }
    async fn runtime_config(&self) -> Result<RuntimeConfigResponse> {
        self.fake.runtime_config().await
    }
    async fn run_pod_sandbox(&self, config: PodSandboxConfig, handler: &str) -> Result<String> {
        *lock(&self.log_dir) = config.log_directory.clone();
        self.fake.run_pod_sandbox(config, handler).await
    }
    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        self.fake.stop_pod_sandbox(id).await
    }
    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.fake.remove_pod_sandbox(id).await
    }
    async fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<PodSandboxStatusResponse> {
        self.fake.pod_sandbox_status(id, verbose).await
    }
    async fn list_pod_sandbox(&self, filter: Option<PodSandboxFilter>) -> Result<Vec<PodSandbox>> {
        self.fake.list_pod_sandbox(filter).await
    }
    async fn create_container(
        &self,
        sandbox: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String> {
        self.fake
            .create_container(sandbox, config, sandbox_config)
            .await
    }
    async fn start_container(&self, id: &str) -> Result<()> {
        self.note("StartContainer");
        self.fake.start_container(id).await
    }
    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<()> {
        self.note("StopContainer");
        lock(&self.stops).push(timeout);
        let r = self.fake.stop_container(id, timeout).await;
        lock(&self.stopped).push(id.to_owned());
        r
    }
    async fn remove_container(&self, id: &str) -> Result<()> {
        self.fake.remove_container(id).await
    }
    async fn list_containers(&self, filter: Option<ContainerFilter>) -> Result<Vec<Container>> {
        self.fake.list_containers(filter).await
    }
    async fn container_status(&self, id: &str, verbose: bool) -> Result<ContainerStatusResponse> {
        let mut reply = self.fake.container_status(id, verbose).await?;
        if let Some(s) = reply.status.as_mut() {
            let dir = lock(&self.log_dir).clone();
            s.log_path = format!("{dir}/{}", s.log_path);
        }
        Ok(reply)
    }
    async fn update_container_resources(
        &self,
        id: &str,
        linux: LinuxContainerResources,
    ) -> Result<()> {
        self.fake.update_container_resources(id, linux).await
    }
    async fn reopen_container_log(&self, id: &str) -> Result<()> {
        self.fake.reopen_container_log(id).await
    }
    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecSyncResponse> {
        self.note(format!("ExecSync {} (timeout {timeout:?})", cmd.join(" ")));
        self.fake.exec_sync(id, cmd, timeout).await
    }
    async fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        self.fake.container_stats(id).await
    }
    async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>> {
        self.fake.list_container_stats(filter).await
    }
    async fn list_pod_sandbox_stats(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> Result<Vec<PodSandboxStats>> {
        self.fake.list_pod_sandbox_stats(filter).await
    }
    async fn get_container_events(&self) -> Result<ContainerEventStream> {
        self.fake.get_container_events().await
    }
}

#[async_trait]
impl ImageService for Recording {
    async fn list_images(&self, filter: Option<ImageFilter>) -> Result<Vec<Image>> {
        self.fake.list_images(filter).await
    }
    async fn image_status(&self, image: ImageSpec, verbose: bool) -> Result<Option<Image>> {
        self.fake.image_status(image, verbose).await
    }
    async fn pull_image(
        &self,
        image: ImageSpec,
        auth: Option<AuthConfig>,
        sandbox: Option<PodSandboxConfig>,
    ) -> Result<String> {
        self.fake.pull_image(image, auth, sandbox).await
    }
    async fn remove_image(&self, image: ImageSpec) -> Result<()> {
        self.fake.remove_image(image).await
    }
    async fn image_fs_info(&self) -> Result<ImageFsInfoResponse> {
        self.fake.image_fs_info().await
    }
}

struct Setup {
    rec: Recording,
    m: RuntimeManager,
    logs: tempfile::TempDir,
    pod_dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let fake = FakeRuntime::new();
    fake.add_image("localhost/busybox:latest");
    let rec = Recording {
        fake,
        journal: Default::default(),
        stops: Default::default(),
        stopped: Default::default(),
        log_dir: Default::default(),
    };
    let logs = tempfile::tempdir().expect("tempdir");
    let opts = ConfigOptions {
        pod_logs_dir: logs.path().to_path_buf(),
        ..ConfigOptions::new(std::sync::Arc::new(kubelet_cm::StaticResources::default()))
    };
    // HTTP hooks go through the probes' client, as in the kubelet.
    let m = RuntimeManager::new(Arc::new(rec.clone()), opts)
        .with_http_hooks(Arc::new(kubelet_prober::probe::http::HttpProber::new()));
    Setup {
        rec,
        m,
        logs,
        pod_dir: tempfile::tempdir().expect("tempdir"),
    }
}

impl Setup {
    fn volumes(&self) -> PodVolumes {
        PodVolumes {
            pod_dir: Some(self.pod_dir.path().to_path_buf()),
            ..Default::default()
        }
    }
    async fn status(&self, p: &Pod) -> PodStatus {
        self.m
            .get_pod_status(
                p.metadata.uid.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default(),
                "default",
            )
            .await
            .expect("pod status")
    }
    async fn start(&self, p: &Pod) -> kubelet_kuberuntime::PodSyncResult {
        let st = self.status(p).await;
        self.m.sync_pod(p, &st, &self.volumes()).await
    }
    async fn kill(&self, p: Option<&Pod>, of: &Pod, grace_override: Option<i64>) {
        let running = self.status(of).await.to_running_pod();
        self.m
            .kill_pod(p, &running, grace_override)
            .await
            .expect("kill");
    }
}

fn pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).expect("test manifest")
}

fn hooked(grace: u32, lifecycle: &str) -> Pod {
    pod(&format!(
        r#"
metadata: {{name: hooked, namespace: default, uid: uid-hooked}}
spec:
  terminationGracePeriodSeconds: {grace}
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
    lifecycle: {lifecycle}
"#
    ))
}

/// A one-connection-at-a-time HTTP server on 127.0.0.1 that notes each
/// request line and the user agent in the journal and answers `status`.
async fn http_server(rec: Recording, status: u16) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&buf).into_owned();
            let line = text.lines().next().unwrap_or_default().to_owned();
            let agent = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("user-agent: ")
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            rec.note(format!("HTTP {line} ({agent})"));
            let reply =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    port
}

#[tokio::test]
async fn post_start_exec_runs_right_after_start_container() {
    let s = setup();
    let p = hooked(30, r#"{postStart: {exec: {command: [sh, -c, "echo hi"]}}}"#);
    let r = s.start(&p).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.started_containers, ["app"]);
    assert_eq!(
        s.rec.journal(),
        ["StartContainer", "ExecSync sh -c echo hi (timeout 0ns)"],
        "postStart after StartContainer, with no timeout (upstream)"
    );
    let calls = s.rec.fake.calls();
    let start = calls.iter().position(|c| *c == "StartContainer").unwrap();
    assert_eq!(calls[start + 1], "ExecSync");
    assert_eq!(
        s.status(&p).await.running_containers().count(),
        1,
        "a successful hook leaves it running"
    );
}

#[tokio::test]
async fn a_failed_post_start_kills_the_container_and_fails_the_sync() {
    let s = setup();
    s.rec.fake.set_exec_handler(|_, _| ExecSyncResponse {
        exit_code: 3,
        stderr: b"nope".to_vec(),
        ..Default::default()
    });
    let p = hooked(7, r#"{postStart: {exec: {command: [false]}}}"#);
    let r = s.start(&p).await;
    assert!(r.started_containers.is_empty(), "{r:?}");
    let err = r.error().expect("the sync fails");
    assert!(
        matches!(err, Error::PostStartHook { container, .. } if container == "app"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("PostStartHookError") && text.contains("exited with 3: nope"),
        "{text}"
    );
    assert_eq!(
        s.rec.journal(),
        [
            "StartContainer",
            "ExecSync false (timeout 0ns)",
            "StopContainer"
        ]
    );
    assert_eq!(s.rec.stops(), [Duration::from_secs(7)], "the pod's grace");
    let st = s.status(&p).await;
    assert_eq!(
        st.find_container_status_by_name("app").map(|c| c.state),
        Some(ContainerState::Exited)
    );
}

#[tokio::test]
async fn a_failed_post_start_still_runs_the_pre_stop_hook() {
    let s = setup();
    s.rec.fake.set_exec_handler(|_, cmd| ExecSyncResponse {
        exit_code: i32::from(cmd[0] == "post"),
        ..Default::default()
    });
    let p = hooked(
        9,
        r#"{postStart: {exec: {command: [post]}}, preStop: {exec: {command: [pre]}}}"#,
    );
    let r = s.start(&p).await;
    assert!(matches!(r.error(), Some(Error::PostStartHook { .. })));
    assert_eq!(
        s.rec.journal(),
        [
            "StartContainer",
            "ExecSync post (timeout 0ns)",
            "ExecSync pre (timeout 9s)",
            "StopContainer"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn pre_stop_exec_runs_first_and_stop_gets_the_remaining_grace() {
    let s = setup();
    let p = hooked(10, r#"{preStop: {exec: {command: [sh, -c, "sleep 3"]}}}"#);
    s.start(&p).await;
    // The command takes 3 s (paused clock).
    s.rec.fake.set_delay("ExecSync", Duration::from_secs(3));
    s.kill(Some(&p), &p, None).await;
    assert_eq!(
        s.rec.journal()[1..],
        ["ExecSync sh -c sleep 3 (timeout 10s)", "StopContainer"]
    );
    assert_eq!(s.rec.stops(), [Duration::from_secs(7)], "10 s - 3 s");
}

#[tokio::test(start_paused = true)]
async fn pre_stop_sleep_runs_first_and_is_bounded_by_the_grace_period() {
    let s = setup();
    let p = hooked(10, r#"{preStop: {sleep: {seconds: 4}}}"#);
    s.start(&p).await;
    let t0 = tokio::time::Instant::now();
    s.kill(Some(&p), &p, None).await;
    assert!(t0.elapsed() >= Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_eq!(s.rec.stops(), [Duration::from_secs(6)], "10 s - 4 s");

    // A sleep longer than the grace period is cut at the grace period and
    // the container still gets the minimum 2 s.
    let s = setup();
    let p = hooked(5, r#"{preStop: {sleep: {seconds: 600}}}"#);
    s.start(&p).await;
    let t0 = tokio::time::Instant::now();
    s.kill(Some(&p), &p, None).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(600),
        "{took:?}"
    );
    assert_eq!(s.rec.stops(), [Duration::from_secs(2)]);
}

#[tokio::test]
async fn pre_stop_http_get_reaches_the_server_before_the_stop() {
    let s = setup();
    // Any response is a success for a hook, a 500 included (upstream).
    let port = http_server(s.rec.clone(), 500).await;
    let p = hooked(
        30,
        &format!(r#"{{preStop: {{httpGet: {{host: 127.0.0.1, port: {port}, path: /shutdown}}}}}}"#),
    );
    s.start(&p).await;
    s.kill(Some(&p), &p, None).await;
    let journal = s.rec.journal();
    assert_eq!(journal.len(), 3, "{journal:?}");
    assert!(
        journal[1].starts_with("HTTP GET /shutdown HTTP/1.1 (kube-lifecycle/"),
        "{journal:?}"
    );
    assert_eq!(journal[2], "StopContainer");
    let stop = s.rec.stops()[0];
    // The hook took well under a second on any machine that can run this
    // test at all; whole seconds spent are subtracted.
    assert!(
        stop <= Duration::from_secs(30) && stop >= Duration::from_secs(25),
        "{stop:?}"
    );
}

#[tokio::test]
async fn a_failing_pre_stop_http_hook_does_not_prevent_the_stop() {
    let s = setup();
    // A port nothing listens on: bind, note the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = hooked(
        3,
        &format!(r#"{{preStop: {{httpGet: {{host: 127.0.0.1, port: {port}}}}}}}"#),
    );
    s.start(&p).await;
    s.kill(Some(&p), &p, None).await;
    assert_eq!(s.rec.journal(), ["StartContainer", "StopContainer"]);
    assert_eq!(
        s.status(&p).await.running_containers().count(),
        0,
        "stopped anyway"
    );
}

#[tokio::test]
async fn post_start_http_get_uses_the_hook_client() {
    let s = setup();
    let port = http_server(s.rec.clone(), 200).await;
    let p = hooked(
        30,
        &format!(
            r#"{{postStart: {{httpGet: {{host: 127.0.0.1, port: {port}, path: /started}}}}}}"#
        ),
    );
    let r = s.start(&p).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let journal = s.rec.journal();
    assert_eq!(journal[0], "StartContainer");
    assert!(journal[1].starts_with("HTTP GET /started "), "{journal:?}");
}

#[tokio::test]
async fn a_grace_override_of_zero_skips_pre_stop_and_stops_with_the_minimum() {
    let s = setup();
    let p = hooked(30, r#"{preStop: {exec: {command: [pre]}}}"#);
    s.start(&p).await;
    s.kill(Some(&p), &p, Some(0)).await;
    assert_eq!(s.rec.journal(), ["StartContainer", "StopContainer"]);
    assert_eq!(s.rec.stops(), [Duration::from_secs(2)]);
}

#[tokio::test]
async fn without_the_pod_the_pre_stop_hook_and_grace_come_from_the_annotations() {
    let s = setup();
    let p = hooked(12, r#"{preStop: {exec: {command: [pre]}}}"#);
    s.start(&p).await;
    s.kill(None, &p, None).await;
    assert_eq!(
        s.rec.journal(),
        [
            "StartContainer",
            "ExecSync pre (timeout 12s)",
            "StopContainer"
        ]
    );
    assert_eq!(s.rec.stops(), [Duration::from_secs(12)]);
}

#[tokio::test]
async fn the_termination_message_file_shows_in_the_status_after_exit() {
    let s = setup();
    let p = hooked(30, "{}");
    s.start(&p).await;
    let id = s.status(&p).await.container_statuses[0].id.clone();
    let reply = s.rec.fake.container_status(&id, false).await.unwrap();
    let mount = reply
        .status
        .unwrap()
        .mounts
        .into_iter()
        .find(|m| m.container_path == "/dev/termination-log")
        .expect("the termination-message mount");
    let host = std::path::PathBuf::from(&mount.host_path);
    assert!(
        host.starts_with(s.pod_dir.path().join("containers/app")),
        "{host:?}"
    );
    std::fs::write(&host, "all done").unwrap();
    // Not while it runs.
    assert_eq!(s.status(&p).await.container_statuses[0].message, "");
    s.rec.fake.exit_container(&id, 0, "Completed").unwrap();
    let st = s.status(&p).await;
    assert_eq!(st.container_statuses[0].message, "all done");
}

#[tokio::test]
async fn fallback_to_logs_on_error_uses_the_log_tail() {
    let s = setup();
    let p = pod(r#"
metadata: {name: job, namespace: default, uid: uid-job}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    terminationMessagePolicy: FallbackToLogsOnError
"#);
    s.start(&p).await;
    let id = s.status(&p).await.container_statuses[0].id.clone();
    let log = s.logs.path().join("default_job_uid-job/app/0.log");
    std::fs::write(
        &log,
        "2024-01-02T03:04:05.000000006Z stdout F starting\n\
         2024-01-02T03:04:05.000000007Z stderr F panic: boom\n",
    )
    .unwrap();
    s.rec.fake.exit_container(&id, 2, "Error").unwrap();
    let st = s.status(&p).await;
    assert_eq!(st.container_statuses[0].message, "starting\npanic: boom\n");
}

/// A pod with a grace period of 30 s whose init containers named `s*` are
/// sidecars.
fn sidecar_pod(inits: &[&str], apps: &[&str]) -> Pod {
    let line = |name: &str| {
        let sidecar = if name.starts_with('s') {
            ", restartPolicy: Always"
        } else {
            ""
        };
        format!(
            "  - {{name: {name}, image: localhost/busybox:latest, imagePullPolicy: IfNotPresent{sidecar}}}\n"
        )
    };
    pod(&format!(
        "metadata: {{name: side, namespace: default, uid: uid-side}}\n\
         spec:\n  terminationGracePeriodSeconds: 30\n  initContainers:\n{}  containers:\n{}",
        inits.iter().map(|n| line(n)).collect::<String>(),
        apps.iter().map(|n| line(n)).collect::<String>(),
    ))
}

/// Upstream killContainersWithSyncResult with terminationOrdering: app
/// containers stop first, then the sidecars in reverse order, each after
/// the ones before it stopped, with what is left of the grace period.
#[tokio::test(start_paused = true)]
async fn kill_pod_stops_app_containers_then_sidecars_in_reverse_order() {
    let s = setup();
    let p = sidecar_pod(&["s1", "i2", "s3"], &["a", "b"]);
    let id = |st: &PodStatus, name: &str| {
        st.find_container_status_by_name(name)
            .map(|c| c.id.clone())
            .unwrap_or_default()
    };
    s.start(&p).await; // s1
    s.start(&p).await; // i2
    let i2 = id(&s.status(&p).await, "i2");
    s.rec
        .fake
        .exit_container(&i2, 0, "Completed")
        .expect("exit");
    s.start(&p).await; // s3
    s.start(&p).await; // a, b
    let st = s.status(&p).await;
    assert_eq!(st.running_containers().count(), 4, "{st:?}");

    // Each stop takes 3 s (paused clock).
    s.rec
        .fake
        .set_delay("StopContainer", Duration::from_secs(3));
    let t0 = tokio::time::Instant::now();
    s.kill(Some(&p), &p, None).await;
    let stopped = lock(&s.rec.stopped).clone();
    let names: Vec<&str> = stopped
        .iter()
        .map(|i| {
            ["a", "b", "s1", "s3"]
                .into_iter()
                .find(|n| id(&st, n) == *i)
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(
        {
            let mut apps = names[..2].to_vec();
            apps.sort_unstable();
            apps
        },
        ["a", "b"],
        "app containers first: {names:?}"
    );
    assert_eq!(names[2..], ["s3", "s1"], "then sidecars in reverse");
    // Stop timeouts in call order: the app containers 30 s; s3 waited 3 s
    // for them, s1 another 3 s for s3.
    assert_eq!(
        s.rec.stops(),
        [30, 30, 27, 24].map(Duration::from_secs),
        "sidecars get the remaining grace period"
    );
    assert_eq!(t0.elapsed(), Duration::from_secs(9));
}

/// Without the pod (rebuilt from labels after a restart) there is no
/// ordering, as upstream: everything stops at once.
#[tokio::test(start_paused = true)]
async fn kill_pod_without_the_pod_stops_sidecars_at_once() {
    let s = setup();
    let p = sidecar_pod(&["s1"], &["a"]);
    s.start(&p).await;
    s.start(&p).await;
    assert_eq!(s.status(&p).await.running_containers().count(), 2);
    s.rec
        .fake
        .set_delay("StopContainer", Duration::from_secs(3));
    let t0 = tokio::time::Instant::now();
    s.kill(None, &p, None).await;
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
    assert_eq!(s.rec.stops(), [30, 30].map(Duration::from_secs));
}
