//! End to end with the CRI test bed (a private containerd): the container
//! manager builds the pod's cgroup under the test bed's cgroup root, the
//! sandbox is run with the manager's `cgroup_parent`, the container with the
//! manager's `LinuxContainerResources`, and the kernel's files say what
//! seed 004 says. Skips without the test bed (fails under CI).

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kubelet_cm::{
    CgroupName, ContainerManager, ContainerManagerConfig, ContainerResources, MachineInfo,
    NodeContainerManager, QosClass,
};
use kubelet_cri_client::{RemoteRuntime, RuntimeService};
use kubelet_testbed::{BUSYBOX_IMAGE, Testbed, cri, read_trimmed as read};

#[tokio::test]
async fn burstable_pod_gets_its_limits_under_kubepods_burstable() {
    let Some(bed) = Testbed::start() else { return };
    let rt = RemoteRuntime::builder(bed.endpoint())
        .connect_timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("connect");
    let cfg = ContainerManagerConfig {
        cgroup_root: CgroupName::new([bed.cgroup_root().to_owned()]),
        ..Default::default()
    };
    let cm = NodeContainerManager::new(cfg, MachineInfo::host().expect("machine")).expect("cm");
    cm.start().expect("start");

    let uid = "cm-e2e-0004";
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "seed004", "namespace": "default", "uid": uid},
        "spec": {"containers": [{"name": "app", "image": BUSYBOX_IMAGE, "command": ["sleep", "3600"],
            "resources": {"requests": {"memory": "10Mi", "cpu": "250m"}, "limits": {"memory": "64Mi", "cpu": "500m"}}}]},
    }))
    .expect("pod");
    assert_eq!(kubelet_cm::pod_qos_class(&pod), QosClass::Burstable);
    cm.admit(&pod).expect("admit");
    cm.ensure_pod_cgroup(&pod).expect("pod cgroup");
    let parent = cm.pod_cgroup_parent(&pod);
    assert_eq!(
        parent,
        format!("/{}/kubepods/burstable/pod{uid}", bed.cgroup_root())
    );

    let sandbox_config = cri::sandbox_config(&bed, "seed004", uid, &parent);
    let sandbox = rt
        .run_pod_sandbox(sandbox_config.clone(), "")
        .await
        .expect("RunPodSandbox");
    let container = &pod.spec.as_ref().expect("spec").containers[0];
    let resources = cm.container_resources(&pod, container);
    let config =
        cri::busybox_container(&sandbox_config, "app", &["sleep", "3600"], Some(resources));
    let id = rt
        .create_container(&sandbox, config, sandbox_config)
        .await
        .expect("CreateContainer");
    rt.start_container(&id).await.expect("StartContainer");
    cm.add_container(&pod, container, &id);

    let cgroup = format!("{parent}/{id}");
    if Testbed::is_cgroup_v2() {
        let dir = Path::new("/sys/fs/cgroup").join(cgroup.trim_start_matches('/'));
        assert_eq!(read(dir.join("memory.max")), "67108864");
        assert_eq!(read(dir.join("cpu.max")), "50000 100000");
    } else {
        assert_eq!(
            read(Testbed::cgroup_v1_dir("memory", &cgroup).join("memory.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(
            read(Testbed::cgroup_v1_dir("cpu", &cgroup).join("cpu.cfs_quota_us")),
            "50000"
        );
        assert_eq!(
            read(Testbed::cgroup_v1_dir("cpu", &cgroup).join("cpu.shares")),
            "256"
        );
        // And the pod cgroup above it holds the pod-level values.
        assert_eq!(
            read(Testbed::cgroup_v1_dir("memory", &parent).join("memory.limit_in_bytes")),
            "67108864"
        );
    }
    // The container's processes are in the pod cgroup's subtree.
    assert!(
        !cm.cgroup_manager()
            .pids(&cm.pod_cgroup(&pod))
            .expect("pids")
            .is_empty()
    );

    rt.stop_pod_sandbox(&sandbox).await.expect("StopPodSandbox");
    rt.remove_pod_sandbox(&sandbox)
        .await
        .expect("RemovePodSandbox");
    cm.remove_container(uid, "app", Some(&id))
        .expect("remove container");
    cm.destroy_pod_cgroup(&pod).expect("destroy pod cgroup");
    assert!(!Testbed::cgroup_v1_dir("memory", &parent).exists() || Testbed::is_cgroup_v2());
}
