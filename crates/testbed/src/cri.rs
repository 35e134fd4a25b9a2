//! CRI configs for tests that talk to the test bed's containerd directly
//! (through `RemoteRuntime`, without the kuberuntime manager).
//!
//! The types are `k8s_cri::v1`, which `kubelet_cri_client::api` re-exports.

use std::collections::HashMap;

use k8s_cri::v1 as api;

use crate::{BUSYBOX_IMAGE, Testbed};

/// The pod sandbox config for pod `name` (namespace `default`, UID `uid`)
/// under the cgroup parent `cgroup_parent`, with the pod UID label the
/// kubelet sets. Creates its log directory,
/// `<bed log dir>/default_<name>_<uid>`, as the kubelet does before
/// `RunPodSandbox`.
pub fn sandbox_config(
    bed: &Testbed,
    name: &str,
    uid: &str,
    cgroup_parent: &str,
) -> api::PodSandboxConfig {
    let log_dir = bed.log_dir().join(format!("default_{name}_{uid}"));
    if let Err(e) = std::fs::create_dir_all(&log_dir) {
        panic!("pod log dir {}: {e}", log_dir.display());
    }
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: uid.into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        labels: HashMap::from([("io.kubernetes.pod.uid".to_owned(), uid.to_owned())]),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The config of a busybox container `name` running `cmd` (attempt 0,
/// log at `<name>/0.log` in the sandbox's log directory), with `resources`
/// when given. Creates the container's log directory in `sandbox`'s.
pub fn busybox_container(
    sandbox: &api::PodSandboxConfig,
    name: &str,
    cmd: &[&str],
    resources: Option<api::LinuxContainerResources>,
) -> api::ContainerConfig {
    let log_dir = std::path::Path::new(&sandbox.log_directory).join(name);
    if let Err(e) = std::fs::create_dir_all(&log_dir) {
        panic!("container log dir {}: {e}", log_dir.display());
    }
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: BUSYBOX_IMAGE.into(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        linux: Some(api::LinuxContainerConfig {
            resources,
            ..Default::default()
        }),
        ..Default::default()
    }
}
