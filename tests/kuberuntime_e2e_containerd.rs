//! SyncPod and KillPod against a real containerd from `scripts/testbed`:
//! seed 004's pod lands in `kubepods/burstable/pod<uid>` with its limits in
//! the cgroup files, and seed 002's containers share the pause container's
//! network namespace across a restart.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kubelet_cri_client::{RemoteRuntime, RuntimeService};
use kubelet_kuberuntime::{ContainerState, Runtime};
use kubelet_testbed::{Testbed, read_trimmed as read};

mod kuberuntime_e2e;
use kuberuntime_e2e::{kill_and_remove as teardown, manager, status};

fn pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).expect("manifest")
}

const SEED_004: &str = r#"
metadata: {name: frontend, namespace: default, uid: 5eed0004-0000-4000-8000-000000000004}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
    resources:
      requests: {memory: 10Mi, cpu: 250m}
      limits: {memory: 64Mi, cpu: 500m}
"#;

#[tokio::test]
async fn seed_004_limits_land_in_the_burstable_pod_cgroup() {
    let Some(bed) = Testbed::start() else { return };
    let (m, _) = manager(&bed).await;
    let p = pod(SEED_004);
    assert_eq!(kubelet_cm::pod_qos_class(&p).as_str(), "Burstable");
    let r = m
        .sync_pod(&p, &status(&m, &p).await, &Default::default())
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let st = status(&m, &p).await;
    let app = st.find_container_status_by_name("app").expect("app");
    assert_eq!(app.state, ContainerState::Running);

    let pod_cgroup = format!(
        "{}/kubepods/burstable/pod5eed0004-0000-4000-8000-000000000004",
        bed.cgroup_root()
    );
    let container_cgroup = format!("{pod_cgroup}/{}", app.id);
    if Testbed::is_cgroup_v2() {
        let dir = PathBuf::from("/sys/fs/cgroup").join(&container_cgroup);
        assert_eq!(read(dir.join("memory.max")), "67108864");
        assert_eq!(read(dir.join("cpu.max")), "50000 100000");
    } else {
        let mem = Testbed::cgroup_v1_dir("memory", &container_cgroup);
        assert_eq!(read(mem.join("memory.limit_in_bytes")), "67108864");
        let cpu = Testbed::cgroup_v1_dir("cpu", &container_cgroup);
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(cpu.join("cpu.shares")), "256");
    }
    teardown(&m, &p).await;
    assert_eq!(status(&m, &p).await.sandbox_statuses.len(), 0);
}

const SEED_002: &str = r#"
metadata: {name: twins, namespace: default, uid: 5eed0002-0000-4000-8000-000000000002}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {name: app, image: "localhost/busybox:latest", imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
  - {name: helper, image: "localhost/busybox:latest", imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
"#;

async fn eth0(cri: &RemoteRuntime, id: &str) -> String {
    let out = cri
        .exec_sync(
            id,
            vec![
                "ip".into(),
                "-o".into(),
                "-4".into(),
                "addr".into(),
                "show".into(),
                "eth0".into(),
            ],
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn seed_002_containers_share_the_sandbox_network_across_a_restart() {
    let Some(bed) = Testbed::start() else { return };
    let (m, cri) = manager(&bed).await;
    let p = pod(SEED_002);
    let r = m
        .sync_pod(&p, &status(&m, &p).await, &Default::default())
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let st = status(&m, &p).await;
    let sandbox = st.sandbox_statuses[0].id.clone();
    let pod_ip = st.ips.first().cloned().expect("pod IP");
    let app = st
        .find_container_status_by_name("app")
        .expect("app")
        .clone();
    let helper = st
        .find_container_status_by_name("helper")
        .expect("helper")
        .clone();
    let (a, h) = (eth0(&cri, &app.id).await, eth0(&cri, &helper.id).await);
    assert_eq!(a, h, "both containers see the pause container's eth0");
    assert!(a.starts_with(&format!("{pod_ip}/")), "{a} vs {pod_ip}");

    // Kill the app container behind the kubelet's back; the next sync
    // restarts it in the same sandbox, with the same IP.
    cri.stop_container(&app.id, Duration::ZERO)
        .await
        .expect("stop");
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&m, &p)
        .await
        .find_container_status_by_name("app")
        .map(|c| c.state)
        != Some(ContainerState::Exited)
    {
        assert!(Instant::now() < deadline, "app did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = m
        .sync_pod(&p, &status(&m, &p).await, &Default::default())
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.started_containers, ["app"]);
    let st = status(&m, &p).await;
    let new_app = st.find_container_status_by_name("app").expect("app");
    assert_ne!(new_app.id, app.id);
    assert_eq!(new_app.restart_count, 1);
    assert_eq!(st.sandbox_statuses[0].id, sandbox, "same sandbox");
    assert_eq!(eth0(&cri, &new_app.id).await, a, "same IP");
    assert_eq!(
        st.find_container_status_by_name("helper")
            .map(|c| c.id.clone()),
        Some(helper.id),
        "the helper was not touched"
    );
    teardown(&m, &p).await;
}
