//! Runs one pod on a containerd through the CRI client, the way a kubelet
//! would, and shows what happened: the sandbox (pause container) and its IP,
//! a busybox container with a 64 MiB memory limit, that limit read back from
//! the container's cgroup, and the container's log in the CRI format.
//!
//! Start a private containerd with `scripts/testbed/start.sh DIR`, then:
//!
//! ```text
//! cargo run --example cri_demo -- unix:///path/to/containerd.sock /path/to/logs
//! ```

use std::path::PathBuf;
use std::time::Duration;

use kubelet_rs::cri::{RemoteRuntime, RuntimeService, api};

const BUSYBOX: &str = "localhost/busybox:latest";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "unix:///run/containerd/containerd.sock".into());
    let log_root = PathBuf::from(args.next().unwrap_or_else(|| "/tmp/cri-demo-logs".into()));
    let cgroup_root = args.next().unwrap_or_else(|| "kubelet-demo".into());

    let rt = RemoteRuntime::builder(&endpoint).connect().await?;
    let v = rt.version().await?;
    println!(
        "runtime: {} {} (CRI {}) at {endpoint}",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );

    let uid = "demo-0000-0001";
    let log_dir = log_root.join(format!("default_demo_{uid}"));
    std::fs::create_dir_all(log_dir.join("app"))?;
    let cgroup_parent = format!("/{cgroup_root}/burstable/pod{uid}");
    let sandbox = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "demo".into(),
            namespace: "default".into(),
            uid: uid.into(),
            attempt: 0,
        }),
        hostname: "demo".into(),
        log_directory: log_dir.display().to_string(),
        labels: [
            ("io.kubernetes.pod.name".to_string(), "demo".to_string()),
            ("io.kubernetes.pod.namespace".into(), "default".into()),
            ("io.kubernetes.pod.uid".into(), uid.into()),
        ]
        .into(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox_id = rt.run_pod_sandbox(sandbox.clone(), "").await?;
    let status = rt.pod_sandbox_status(&sandbox_id, false).await?;
    let ip = status
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    println!("sandbox {} ready, pod IP {ip}", &sandbox_id[..12]);

    let container = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo hello from $(hostname); ip -4 addr show eth0 | grep inet; sleep 2".into(),
        ],
        log_path: "app/0.log".into(),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(api::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 256,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = rt.create_container(&sandbox_id, container, sandbox).await?;
    rt.start_container(&id).await?;
    println!("container app {} started", &id[..12]);

    let cgroup = PathBuf::from("/sys/fs/cgroup/memory")
        .join(cgroup_parent.trim_start_matches('/'))
        .join(&id)
        .join("memory.limit_in_bytes");
    match std::fs::read_to_string(&cgroup) {
        Ok(limit) => println!("{} = {}", cgroup.display(), limit.trim()),
        Err(e) => println!("{}: {e} (cgroup v2 host?)", cgroup.display()),
    }

    let exited = loop {
        let s = rt.container_status(&id, false).await?.status;
        match s {
            Some(s) if s.state() == api::ContainerState::ContainerExited => break s,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    println!(
        "container exited: code {} reason {}",
        exited.exit_code, exited.reason
    );
    println!("log {}:", exited.log_path);
    print!("{}", std::fs::read_to_string(&exited.log_path)?);

    rt.stop_pod_sandbox(&sandbox_id).await?;
    rt.remove_pod_sandbox(&sandbox_id).await?;
    println!("pod removed");
    Ok(())
}
