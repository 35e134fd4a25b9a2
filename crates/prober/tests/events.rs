//! The events probes record, with upstream's wording: a Warning
//! `Unhealthy` for every failed probe and for a probe that could not run,
//! through a manager built with an event recorder, on tokio's paused clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, ExecAction, Pod, PodSpec,
    PodStatus, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubelet_container::events::{EventType, FakeRecorder};
use kubelet_cri_client::api;
use kubelet_cri_client::{FakeRuntime, RuntimeService};
use kubelet_prober::{ContainerId, Manager, ProbeResult, ProbeType, Prober, TokioClock};

async fn running_container(fake: &FakeRuntime) -> String {
    let sandbox = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid-web".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    fake.add_image("busybox");
    let sb = fake.run_pod_sandbox(sandbox.clone(), "").await.unwrap();
    let config = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = fake.create_container(&sb, config, sandbox).await.unwrap();
    fake.start_container(&id).await.unwrap();
    id
}

fn exec_probe() -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["cat".into(), "/tmp/healthy".into()]),
        }),
        period_seconds: Some(10),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn pod(container: Container) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("uid-web".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn running_status(container_id: &str) -> PodStatus {
    PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some("10.1.0.5".into()),
        container_statuses: Some(vec![ContainerStatus {
            name: "app".into(),
            container_id: Some(format!("containerd://{container_id}")),
            started: Some(true),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn every_failed_liveness_probe_records_unhealthy_with_its_output() {
    let fake = FakeRuntime::new();
    let id = running_container(&fake).await;
    let exit = Arc::new(AtomicI32::new(0));
    let e = exit.clone();
    fake.set_exec_handler(move |_, _| api::ExecSyncResponse {
        stdout: Vec::new(),
        stderr: b"cat: can't open '/tmp/healthy': No such file or directory".to_vec(),
        exit_code: e.load(Ordering::SeqCst),
    });
    let status = running_status(&id);
    let events = Arc::new(FakeRecorder::new());
    let manager = Manager::builder(
        Arc::new(fake.clone()),
        Arc::new(move |_: &str| Some(status.clone())),
    )
    .jitter(false)
    .clock(Arc::new(TokioClock::new(SystemTime::now())))
    .event_recorder(events.clone())
    .build()
    .unwrap();
    let mut updates = manager.liveness().updates();
    let p = pod(Container {
        name: "app".into(),
        liveness_probe: Some(exec_probe()),
        ..Default::default()
    });
    manager.add_pod(&p);
    assert_eq!(updates.recv().await.unwrap().result, ProbeResult::Success);
    assert!(
        events.events().is_empty(),
        "a passing probe records nothing"
    );

    exit.store(1, Ordering::SeqCst);
    let update = updates.recv().await.unwrap();
    assert_eq!(update.result, ProbeResult::Failure);
    assert_eq!(update.container_id, ContainerId::new("containerd", id));
    // One event per failed probe (three to reach failureThreshold); the
    // event recorder counts them as one.
    let recorded = events.events();
    assert_eq!(recorded.len(), 3);
    for e in &recorded {
        assert_eq!(e.event_type, EventType::Warning);
        assert_eq!(e.reason, "Unhealthy");
        assert_eq!(
            e.message,
            "Liveness probe failed: cat: can't open '/tmp/healthy': No such file or directory"
        );
        assert_eq!(e.object.name.as_deref(), Some("web"));
        assert_eq!(e.object.uid.as_deref(), Some("uid-web"));
        assert_eq!(e.object.field_path.as_deref(), Some("spec.containers{app}"));
    }
    // The kill ("Container app failed liveness probe, will be restarted")
    // is the runtime manager's event, not the prober's.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(events.events().len(), 3, "an on-hold worker recorded more");
    manager.remove_pod(&p);
}

#[tokio::test]
async fn a_probe_that_cannot_run_records_that_it_errored() {
    let fake = FakeRuntime::new();
    let id = running_container(&fake).await;
    let events = Arc::new(FakeRecorder::new());
    let prober = Prober::new(Arc::new(fake), "1.34").with_event_recorder(events.clone());
    let c = Container {
        name: "app".into(),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("metrics".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = pod(c.clone());
    let cid = ContainerId::new("containerd", id.clone());
    let err = prober
        .probe(ProbeType::Readiness, &p, &running_status(&id), &c, &cid)
        .await
        .unwrap_err();
    let strings = events.strings();
    assert_eq!(strings.len(), 1, "{strings:?}");
    assert_eq!(
        strings[0],
        format!("Warning Unhealthy Readiness probe errored and resulted in unknown state: {err}")
    );

    // A startup probe that fails names its type.
    events.take();
    let c = Container {
        name: "app".into(),
        startup_probe: Some(exec_probe()),
        ..Default::default()
    };
    let fake = FakeRuntime::new();
    let id = running_container(&fake).await;
    fake.set_exec_handler(|_, _| api::ExecSyncResponse {
        stdout: b"not yet".to_vec(),
        stderr: Vec::new(),
        exit_code: 1,
    });
    let prober = Prober::new(Arc::new(fake), "1.34").with_event_recorder(events.clone());
    let r = prober
        .probe(
            ProbeType::Startup,
            &pod(c.clone()),
            &running_status(&id),
            &c,
            &ContainerId::new("containerd", id.clone()),
        )
        .await
        .unwrap();
    assert_eq!(r, ProbeResult::Failure);
    assert_eq!(
        events.strings(),
        ["Warning Unhealthy Startup probe failed: not yet"]
    );
}
