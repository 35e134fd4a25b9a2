//! Probe timing accuracy: how close to `periodSeconds` the workers run.
//!
//! 100 pods, each with an exec liveness probe every second, against the
//! in-process `FakeRuntime` (so the figure is the prober's own scheduling,
//! not a runtime's exec latency), on the real clock for 12 s. Reports the
//! intervals between consecutive probes of a container: mean, p50, p99 and
//! the worst deviation from the period. Upstream's workers run on a Go
//! ticker; ours on tokio's interval with `MissedTickBehavior` as upstream's
//! ticker (skip). Run: `cargo bench -p kubelet-prober --bench probe_timing`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, ExecAction, Pod, PodSpec,
    PodStatus, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kubelet_cri_client::{FakeRuntime, RuntimeService, api};
use kubelet_prober::Manager;

const PODS: usize = 100;
const RUN: Duration = Duration::from_secs(12);

async fn container(fake: &FakeRuntime, uid: &str) -> String {
    let sandbox = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: format!("p-{uid}"),
            namespace: "default".into(),
            uid: uid.into(),
            attempt: 0,
        }),
        ..Default::default()
    };
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

fn pod(uid: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("p-{uid}")),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                liveness_probe: Some(Probe {
                    exec: Some(ExecAction {
                        command: Some(vec![uid.into()]),
                    }),
                    period_seconds: Some(1),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn status(id: &str) -> PodStatus {
    PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some("10.1.0.5".into()),
        container_statuses: Some(vec![ContainerStatus {
            name: "app".into(),
            container_id: Some(format!("containerd://{id}")),
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

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fake = FakeRuntime::new();
        fake.add_image("busybox");
        let seen: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
        let s = seen.clone();
        fake.set_exec_handler(move |_, cmd| {
            s.lock()
                .unwrap()
                .entry(cmd[0].clone())
                .or_default()
                .push(Instant::now());
            api::ExecSyncResponse::default()
        });
        let mut statuses = HashMap::new();
        let mut pods = Vec::new();
        for i in 0..PODS {
            let uid = format!("uid-{i}");
            let id = container(&fake, &uid).await;
            statuses.insert(uid.clone(), status(&id));
            pods.push(pod(&uid));
        }
        let statuses = Arc::new(statuses);
        let st = statuses.clone();
        let manager = Manager::builder(
            Arc::new(fake.clone()),
            Arc::new(move |uid: &str| st.get(uid).cloned()),
        )
        .build()
        .unwrap();
        for p in &pods {
            manager.add_pod(p);
        }
        tokio::time::sleep(RUN).await;
        manager.shutdown();
        let seen = seen.lock().unwrap();
        let mut intervals: Vec<f64> = seen
            .values()
            .flat_map(|t| t.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()))
            .collect();
        intervals.sort_by(f64::total_cmp);
        let n = intervals.len();
        let q = |p: f64| intervals[((n as f64 * p) as usize).min(n - 1)];
        let mean = intervals.iter().sum::<f64>() / n as f64;
        let worst = intervals
            .iter()
            .map(|i| (i - 1.0).abs())
            .fold(0.0, f64::max);
        println!(
            "probe timing: {PODS} containers, period 1 s, {n} intervals over {RUN:?}: mean {:.4} s, p50 {:.4} s, p99 {:.4} s, worst deviation {:.1} ms",
            mean,
            q(0.5),
            q(0.99),
            worst * 1000.0
        );
    });
}
