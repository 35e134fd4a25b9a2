//! [`RemoteRuntime`] over a real unix socket against the [`FakeRuntime`]'s
//! tonic server: error mapping, malformed and oversized replies, deadlines,
//! the observer hook and the event stream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kubelet_cri_client::api::{self, ContainerEventType};
use kubelet_cri_client::fake::FakeServer;
use kubelet_cri_client::{
    Error, FakeRuntime, ImageService, OperationObserver, RemoteRuntime, RuntimeService,
};

struct Served {
    fake: FakeRuntime,
    server: FakeServer,
    _dir: tempfile::TempDir,
}

async fn serve() -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeRuntime::new();
    fake.add_image("localhost/busybox:latest");
    let server = fake
        .serve(dir.path().join("cri.sock"))
        .await
        .expect("serve");
    Served {
        fake,
        server,
        _dir: dir,
    }
}

async fn client(s: &Served) -> RemoteRuntime {
    RemoteRuntime::builder(s.server.endpoint())
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

fn sandbox(name: &str) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("{name}-uid"),
            attempt: 0,
        }),
        ..Default::default()
    }
}

fn container(name: &str) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: "localhost/busybox:latest".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_pod_round_trips_through_the_socket() {
    let s = serve().await;
    let rt = client(&s).await;
    let sb = rt.run_pod_sandbox(sandbox("web"), "").await.expect("run");
    let id = rt
        .create_container(&sb, container("app"), sandbox("web"))
        .await
        .expect("create");
    rt.start_container(&id).await.expect("start");
    let listed = rt.list_containers(None).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state(), api::ContainerState::ContainerRunning);
    assert_eq!(listed[0].pod_sandbox_id, sb);

    s.fake.exit_container(&id, 137, "OOMKilled").expect("exit");
    let status = rt
        .container_status(&id, false)
        .await
        .expect("status")
        .status
        .expect("body");
    assert_eq!(status.reason, "OOMKilled");
    assert_eq!(status.exit_code, 137);
    // The fake recorded what the remote client sent (Version is the connect check).
    assert_eq!(
        s.fake.calls(),
        [
            "Version",
            "RunPodSandbox",
            "CreateContainer",
            "StartContainer",
            "ListContainers",
            "ContainerStatus"
        ]
    );
}

#[tokio::test]
async fn grpc_errors_keep_their_code_and_name_the_object() {
    let s = serve().await;
    let rt = client(&s).await;
    let err = rt
        .stop_container("nope", Duration::from_secs(1))
        .await
        .expect_err("unknown");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("StopContainer \"nope\""), "{err}");

    s.fake.inject_error(
        "ListPodSandbox",
        Error::Unavailable {
            call: kubelet_cri_client::Call::new("ListPodSandbox"),
            message: "runtime restarting".into(),
        },
    );
    let err = rt.list_pod_sandbox(None).await.expect_err("injected");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    // Injections are one-shot.
    assert!(rt.list_pod_sandbox(None).await.is_ok());

    // containerd 1.7 answers RuntimeConfig with Unimplemented.
    s.fake.inject_error(
        "RuntimeConfig",
        Error::Unimplemented {
            call: kubelet_cri_client::Call::new("RuntimeConfig"),
            message: "unknown method RuntimeConfig".into(),
        },
    );
    let err = rt.runtime_config().await.expect_err("injected");
    assert!(err.is_unimplemented(), "{err:?}");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn malformed_replies_are_errors_not_panics() {
    let s = serve().await;
    let rt = client(&s).await;
    let sb = rt.run_pod_sandbox(sandbox("web"), "").await.expect("run");

    s.fake.inject_malformed_reply("PodSandboxStatus");
    let err = rt
        .pod_sandbox_status(&sb, false)
        .await
        .expect_err("empty reply");
    assert!(matches!(err, Error::MalformedResponse { .. }), "{err:?}");
    assert!(err.to_string().contains("PodSandboxStatus"), "{err}");

    s.fake.inject_malformed_reply("RunPodSandbox");
    let err = rt
        .run_pod_sandbox(sandbox("other"), "")
        .await
        .expect_err("empty id");
    assert!(matches!(err, Error::MalformedResponse { .. }), "{err:?}");

    s.fake.inject_malformed_reply("ContainerStatus");
    let id = rt
        .create_container(&sb, container("app"), sandbox("web"))
        .await
        .expect("create");
    let err = rt.container_status(&id, false).await.expect_err("empty");
    assert!(matches!(err, Error::MalformedResponse { .. }), "{err:?}");

    s.fake.inject_malformed_reply("Status");
    assert!(matches!(
        rt.status(false).await,
        Err(Error::MalformedResponse { .. })
    ));
}

#[tokio::test]
async fn an_oversized_reply_is_a_resource_error() {
    let s = serve().await;
    let rt = RemoteRuntime::builder(s.server.endpoint())
        .max_message_size(8 * 1024)
        .connect()
        .await
        .expect("connect");
    let sb = rt.run_pod_sandbox(sandbox("big"), "").await.expect("run");
    for i in 0..100 {
        let mut c = container(&format!("c{i}"));
        c.labels.insert("padding".into(), "x".repeat(200));
        rt.create_container(&sb, c, sandbox("big"))
            .await
            .expect("create");
    }
    let err = rt.list_containers(None).await.expect_err("too large");
    assert!(matches!(err, Error::ResourceExhausted { .. }), "{err:?}");
    // The connection survives: small calls still work.
    assert!(rt.version().await.is_ok());
}

#[tokio::test]
async fn a_slow_runtime_hits_the_request_deadline() {
    let s = serve().await;
    let rt = RemoteRuntime::builder(s.server.endpoint())
        .request_timeout(Duration::from_millis(200))
        .connect()
        .await
        .expect("connect");
    s.fake.set_delay("ListContainers", Duration::from_secs(2));
    let started = std::time::Instant::now();
    let err = rt.list_containers(None).await.expect_err("deadline");
    assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err:?}");
    // Cut by the 200 ms deadline, long before the 2 s the runtime would take.
    assert!(started.elapsed() < Duration::from_millis(1900));
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(&'static str, bool)>>);

impl OperationObserver for Recorder {
    fn observe(&self, operation: &'static str, _elapsed: Duration, error: Option<&Error>) {
        if let Ok(mut seen) = self.0.lock() {
            seen.push((operation, error.is_some()));
        }
    }
}

#[tokio::test]
async fn the_observer_sees_every_operation() {
    let s = serve().await;
    let recorder = Arc::new(Recorder::default());
    let rt = RemoteRuntime::builder(s.server.endpoint())
        .observer(recorder.clone())
        .connect()
        .await
        .expect("connect");
    rt.list_containers(None).await.expect("list");
    let _ = rt.container_status("missing", false).await;
    let seen = recorder.0.lock().expect("lock").clone();
    assert_eq!(
        seen,
        [
            ("version", false),
            ("list_containers", false),
            ("container_status", true)
        ]
    );
}

#[tokio::test]
async fn events_stream_over_the_socket() {
    let s = serve().await;
    let rt = client(&s).await;
    let mut events = rt.get_container_events().await.expect("events");
    let sb = rt.run_pod_sandbox(sandbox("web"), "").await.expect("run");
    let id = rt
        .create_container(&sb, container("app"), sandbox("web"))
        .await
        .expect("create");
    rt.start_container(&id).await.expect("start");
    rt.stop_container(&id, Duration::ZERO).await.expect("stop");
    rt.remove_container(&id).await.expect("remove");
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok");
        if event.container_id == id {
            kinds.push(event.container_event_type());
        }
    }
    assert_eq!(
        kinds,
        [
            ContainerEventType::ContainerCreatedEvent,
            ContainerEventType::ContainerStartedEvent,
            ContainerEventType::ContainerStoppedEvent,
            ContainerEventType::ContainerDeletedEvent
        ]
    );
}

#[tokio::test]
async fn image_pulls_carry_credentials() {
    let s = serve().await;
    let rt = client(&s).await;
    let auth = api::AuthConfig {
        username: "robot".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let image = api::ImageSpec {
        image: "registry.local/app:1".into(),
        ..Default::default()
    };
    let image_ref = rt
        .pull_image(image.clone(), Some(auth), None)
        .await
        .expect("pull");
    assert!(image_ref.starts_with("sha256:"));
    let pulls = s.fake.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        pulls[0].1.as_ref().map(|a| a.username.as_str()),
        Some("robot")
    );
    assert!(
        rt.image_status(image, false)
            .await
            .expect("status")
            .is_some()
    );
}

/// A runtime that takes connections before it can answer (containerd
/// restarting: "server is not initialized yet") is waited for, not given up
/// on: the soak's kubelet exited when started during a containerd restart.
#[tokio::test]
async fn connect_waits_for_a_runtime_that_is_not_ready_yet() {
    let s = serve().await;
    for message in ["server is not initialized yet", "transport error"] {
        s.fake.inject_error(
            "Version",
            Error::Rpc {
                call: kubelet_cri_client::Call::new("Version"),
                code: tonic::Code::Unknown,
                message: message.into(),
            },
        );
    }
    let runtime = client(&s).await;
    let versions = s.fake.calls().iter().filter(|c| **c == "Version").count();
    assert_eq!(versions, 3, "two refused Version calls, then one answered");
    runtime.version().await.expect("answers now");

    // An API mismatch is no transient state: refused at once.
    s.fake.inject_error(
        "Version",
        Error::Unimplemented {
            call: kubelet_cri_client::Call::new("Version"),
            message: "unknown service runtime.v1.RuntimeService".into(),
        },
    );
    let err = RemoteRuntime::builder(s.server.endpoint())
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect_err("runtime.v1 not served");
    assert!(matches!(err, Error::UnsupportedApi { .. }), "{err:?}");
}
