//! Exec probes through the fake CRI runtime, and a manager driving a
//! liveness probe from Success to Failure on tokio's paused clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, ExecAction, Pod, PodSpec,
    PodStatus, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kubelet_cri_client::api;
use kubelet_cri_client::{Call, Error as CriError, FakeRuntime, RuntimeService};
use kubelet_prober::probe::{MAX_OUTPUT_LENGTH, Outcome, exec};
use kubelet_prober::{ContainerId, Manager, ProbeResult, ProbeType, TokioClock, results};

async fn running_container(fake: &FakeRuntime) -> String {
    let sandbox = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: "web-uid".into(),
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

fn cmd() -> Vec<String> {
    vec!["cat".into(), "/tmp/healthy".into()]
}

#[tokio::test]
async fn exec_exit_codes_map_to_success_and_failure() {
    let fake = FakeRuntime::new();
    let id = running_container(&fake).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    fake.set_exec_handler(move |cid, cmd| {
        s.lock().unwrap().push((cid.to_owned(), cmd.to_vec()));
        let fail = cmd.iter().any(|a| a == "fail");
        api::ExecSyncResponse {
            stdout: b"out;".to_vec(),
            stderr: b"err".to_vec(),
            exit_code: if fail { 2 } else { 0 },
        }
    });
    let t = Duration::from_secs(1);
    let (o, out) = exec::probe(&fake, &id, cmd(), t).await.unwrap();
    assert_eq!((o, out.as_str()), (Outcome::Success, "out;err"));
    let (o, out) = exec::probe(&fake, &id, vec!["fail".into()], t)
        .await
        .unwrap();
    assert_eq!((o, out.as_str()), (Outcome::Failure, "out;err"));
    assert_eq!(seen.lock().unwrap()[0], (id.clone(), cmd()));
}

#[tokio::test]
async fn exec_output_is_capped_at_10_kib() {
    let fake = FakeRuntime::new();
    let id = running_container(&fake).await;
    fake.set_exec_handler(|_, _| api::ExecSyncResponse {
        stdout: vec![b'a'; 64 * 1024],
        stderr: vec![b'b'; 64 * 1024],
        exit_code: 1,
    });
    let (o, out) = exec::probe(&fake, &id, cmd(), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Failure);
    assert_eq!(out.len(), MAX_OUTPUT_LENGTH);
    assert!(out.bytes().all(|b| b == b'a'));
}

#[tokio::test(start_paused = true)]
async fn exec_timeouts_fail_and_runtime_errors_are_errors() {
    let fake = FakeRuntime::new();
    let id = running_container(&fake).await;
    // The runtime never answers in time.
    fake.set_delay("ExecSync", Duration::from_secs(60));
    let (o, out) = exec::probe(&fake, &id, cmd(), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Failure);
    assert!(out.contains("timed out"), "{out}");
    fake.set_delay("ExecSync", Duration::ZERO);

    // The runtime reports the deadline itself.
    fake.inject_error(
        "ExecSync",
        CriError::DeadlineExceeded {
            call: Call::with_id("ExecSync", id.clone()),
            message: "timeout 1s exceeded".into(),
        },
    );
    let (o, _) = exec::probe(&fake, &id, cmd(), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Failure);

    // Any other runtime error: the probe could not run.
    let err = exec::probe(&fake, "no-such-container", cmd(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, kubelet_prober::Error::Runtime(_)), "{err}");
}

fn liveness_pod(uid: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                liveness_probe: Some(Probe {
                    exec: Some(ExecAction {
                        command: Some(cmd()),
                    }),
                    period_seconds: Some(10),
                    failure_threshold: Some(3),
                    ..Default::default()
                }),
                ..Default::default()
            }],
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
async fn manager_turns_liveness_to_failure_after_failure_threshold_periods() {
    let fake = FakeRuntime::new();
    let id = running_container(&fake).await;
    let exit = Arc::new(AtomicI32::new(0));
    let execs = Arc::new(AtomicUsize::new(0));
    let (e, n) = (exit.clone(), execs.clone());
    fake.set_exec_handler(move |_, _| {
        n.fetch_add(1, Ordering::SeqCst);
        api::ExecSyncResponse {
            exit_code: e.load(Ordering::SeqCst),
            ..Default::default()
        }
    });
    let status = running_status(&id);
    let provider = move |uid: &str| (uid == "uid-1").then(|| status.clone());
    let probed = Arc::new(AtomicUsize::new(0));
    let p = probed.clone();
    let stopped = Arc::new(std::sync::Mutex::new(Vec::new()));
    let st = stopped.clone();
    let manager = Manager::builder(Arc::new(fake.clone()), Arc::new(provider))
        .jitter(false)
        .clock(Arc::new(TokioClock::new(SystemTime::now())))
        .on_probe(move |ev| {
            assert_eq!(ev.probe_type, ProbeType::Liveness);
            assert_eq!(ev.pod_uid, "uid-1");
            p.fetch_add(1, Ordering::SeqCst);
        })
        .on_worker_stop(move |w| {
            st.lock()
                .unwrap()
                .push((w.probe_type, w.pod_uid.to_owned(), w.container.to_owned()));
        })
        .build()
        .unwrap();
    let mut updates = manager.liveness().updates();
    let pod = liveness_pod("uid-1");
    manager.add_pod(&pod);

    // The first probe runs at once: the initial Success is published.
    let first = updates.recv().await.unwrap();
    let cid = ContainerId::new("containerd", id.clone());
    assert_eq!(
        first,
        results::Update {
            container_id: cid.clone(),
            result: ProbeResult::Success,
            pod_uid: "uid-1".into(),
        }
    );
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(
        execs.load(Ordering::SeqCst),
        3,
        "probes at 0 s, 10 s and 20 s"
    );

    // Now the container turns unhealthy.
    exit.store(1, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let update = updates.recv().await.unwrap();
    let waited = started.elapsed();
    assert_eq!(update.result, ProbeResult::Failure);
    assert_eq!(update.container_id, cid);
    assert_eq!(execs.load(Ordering::SeqCst), 6, "three failing probes");
    // Failures at 30 s, 40 s and 50 s: the third is 25 s after we flipped.
    assert_eq!(waited, Duration::from_secs(25));
    assert_eq!(manager.liveness().get(&cid), Some(ProbeResult::Failure));
    assert_eq!(probed.load(Ordering::SeqCst), 6);

    // On hold until the container is replaced: no more execs.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(execs.load(Ordering::SeqCst), 6);

    // Removing the pod ends the worker and forgets the result.
    assert!(stopped.lock().unwrap().is_empty());
    manager.remove_pod(&pod);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(manager.worker_count(), 0);
    assert_eq!(manager.liveness().get(&cid), None);
    let stopped = stopped.lock().unwrap().clone();
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0].0, ProbeType::Liveness);
    assert_eq!(stopped[0].1, "uid-1");
}

#[tokio::test(start_paused = true)]
async fn readiness_is_triggered_at_once_by_update_pod_status() {
    let fake = FakeRuntime::new();
    let id = running_container(&fake).await;
    let execs = Arc::new(AtomicUsize::new(0));
    let n = execs.clone();
    fake.set_exec_handler(move |_, _| {
        n.fetch_add(1, Ordering::SeqCst);
        api::ExecSyncResponse::default()
    });
    let status = running_status(&id);
    let s2 = status.clone();
    let manager = Manager::builder(
        Arc::new(fake.clone()),
        Arc::new(move |_: &str| Some(s2.clone())),
    )
    .jitter(false)
    .build()
    .unwrap();
    let mut pod = liveness_pod("uid-r");
    let c = &mut pod.spec.as_mut().unwrap().containers[0];
    c.readiness_probe = c.liveness_probe.take();
    c.readiness_probe.as_mut().unwrap().success_threshold = Some(2);
    let mut updates = manager.readiness().updates();
    manager.add_pod(&pod);
    assert_eq!(updates.recv().await.unwrap().result, ProbeResult::Failure);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(execs.load(Ordering::SeqCst), 1);

    // Not ready yet; asking for the status wakes the worker at once instead
    // of after the 10 s period.
    let mut s = status.clone();
    manager.update_pod_status(&pod, &mut s);
    assert!(!s.container_statuses.as_ref().unwrap()[0].ready);
    let t0 = tokio::time::Instant::now();
    assert_eq!(updates.recv().await.unwrap().result, ProbeResult::Success);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "waited for the period"
    );
    let mut s = status;
    manager.update_pod_status(&pod, &mut s);
    assert!(s.container_statuses.as_ref().unwrap()[0].ready);
}
