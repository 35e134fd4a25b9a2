//! The CRI client's own overhead: `RemoteRuntime::list_containers` against a
//! raw tonic `RuntimeServiceClient::list_containers`, both listing 500
//! containers from a `FakeRuntime` served over a unix socket, in the same run.
//!
//! Run: `cargo bench --bench cri_client_overhead`. The ratio of the two
//! medians is the client's overhead (goal: under 1.10).

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use kubelet_cri_client::{FakeRuntime, RemoteRuntime, RuntimeService, api};
use tonic::transport::Endpoint;

const CONTAINERS: usize = 500;
const PAIRED_ROUNDS: usize = 2000;

fn populate(fake: &FakeRuntime, rt: &tokio::runtime::Runtime) {
    fake.add_image("localhost/busybox:latest");
    rt.block_on(async {
        for pod in 0..CONTAINERS / 5 {
            let sandbox = api::PodSandboxConfig {
                metadata: Some(api::PodSandboxMetadata {
                    name: format!("pod-{pod}"),
                    namespace: "default".into(),
                    uid: format!("uid-{pod}"),
                    attempt: 0,
                }),
                ..Default::default()
            };
            let id = fake
                .run_pod_sandbox(sandbox.clone(), "")
                .await
                .expect("sandbox");
            for c in 0..5 {
                let config = api::ContainerConfig {
                    metadata: Some(api::ContainerMetadata {
                        name: format!("c{c}"),
                        attempt: 0,
                    }),
                    image: Some(api::ImageSpec {
                        image: "localhost/busybox:latest".into(),
                        ..Default::default()
                    }),
                    labels: [
                        ("io.kubernetes.pod.name".to_string(), format!("pod-{pod}")),
                        ("io.kubernetes.pod.namespace".into(), "default".into()),
                        ("io.kubernetes.pod.uid".into(), format!("uid-{pod}")),
                        ("io.kubernetes.container.name".into(), format!("c{c}")),
                    ]
                    .into(),
                    ..Default::default()
                };
                let cid = fake
                    .create_container(&id, config, sandbox.clone())
                    .await
                    .expect("container");
                fake.start_container(&cid).await.expect("start");
            }
        }
    });
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile_dir();
    let fake = FakeRuntime::new();
    populate(&fake, &rt);
    let socket = dir.join("cri.sock");
    let _server = rt.block_on(fake.serve(&socket)).expect("serve");
    let endpoint = format!("unix://{}", socket.display());

    let remote = rt
        .block_on(RemoteRuntime::builder(endpoint.clone()).connect())
        .expect("connect");
    let raw = rt.block_on(async {
        let channel = Endpoint::from_shared(endpoint)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect raw");
        RuntimeServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024)
    });
    assert_eq!(
        rt.block_on(remote.list_containers(None))
            .expect("list")
            .len(),
        CONTAINERS
    );

    let mut group = c.benchmark_group("list_containers_500");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("raw_tonic", |b| {
        b.to_async(&rt).iter(|| {
            let mut client = raw.clone();
            async move {
                client
                    .list_containers(api::ListContainersRequest { filter: None })
                    .await
                    .expect("raw list")
                    .into_inner()
                    .containers
                    .len()
            }
        })
    });
    group.bench_function("remote_runtime", |b| {
        b.to_async(&rt).iter(|| async {
            remote
                .list_containers(None)
                .await
                .expect("client list")
                .len()
        })
    });
    group.finish();

    // Paired: alternate the two calls so machine drift hits both equally,
    // then compare medians.
    let (mut raw_times, mut client_times) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for _ in 0..PAIRED_ROUNDS {
            let mut client = raw.clone();
            let t = std::time::Instant::now();
            let n = client
                .list_containers(api::ListContainersRequest { filter: None })
                .await
                .expect("raw list")
                .into_inner()
                .containers
                .len();
            raw_times.push(t.elapsed());
            let t = std::time::Instant::now();
            let m = remote
                .list_containers(None)
                .await
                .expect("client list")
                .len();
            client_times.push(t.elapsed());
            assert_eq!(n, m);
        }
    });
    raw_times.sort();
    client_times.sort();
    let (raw_median, client_median) = (
        raw_times[PAIRED_ROUNDS / 2],
        client_times[PAIRED_ROUNDS / 2],
    );
    println!(
        "paired ({PAIRED_ROUNDS} alternating calls each): raw tonic median {raw_median:?}, RemoteRuntime median {client_median:?}, ratio {:.3} (goal < 1.10)",
        client_median.as_secs_f64() / raw_median.as_secs_f64()
    );
    drop(_server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cri-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

criterion_group!(benches, bench);
criterion_main!(benches);
