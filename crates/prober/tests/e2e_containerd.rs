//! Exec probes against a real containerd started by `scripts/testbed`. Under
//! CI they fail when the test bed is missing; elsewhere they skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kubelet_cri_client::{RemoteRuntime, RuntimeService};
use kubelet_prober::probe::{Outcome, exec};
use kubelet_testbed::{Testbed, cri};

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

#[tokio::test]
async fn exec_probes_against_containerd() {
    let Some(bed) = Testbed::start() else { return };
    let rt = RemoteRuntime::builder(bed.endpoint())
        .connect_timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("connect to the test bed's containerd");
    let uid = "probe-uid";
    let sandbox = cri::sandbox_config(
        &bed,
        "probe",
        uid,
        &format!("/{}/pod{uid}", bed.cgroup_root()),
    );
    let sb = rt
        .run_pod_sandbox(sandbox.clone(), "")
        .await
        .expect("RunPodSandbox");
    let config = cri::busybox_container(&sandbox, "app", &["sleep", "3600"], None);
    let id = rt
        .create_container(&sb, config, sandbox)
        .await
        .expect("CreateContainer");
    rt.start_container(&id).await.expect("StartContainer");

    let t = Duration::from_secs(5);
    let (o, out) = exec::probe(&rt, &id, sh("echo healthy"), t).await.unwrap();
    assert_eq!((o, out.as_str()), (Outcome::Success, "healthy\n"));
    let (o, out) = exec::probe(&rt, &id, sh("echo sick >&2; exit 1"), t)
        .await
        .unwrap();
    assert_eq!((o, out.as_str()), (Outcome::Failure, "sick\n"));
    let (o, out) = exec::probe(&rt, &id, sh("head -c 100000 /dev/zero"), t)
        .await
        .unwrap();
    assert_eq!(o, Outcome::Success);
    assert_eq!(out.len(), kubelet_prober::probe::MAX_OUTPUT_LENGTH);
    let (o, out) = exec::probe(&rt, &id, sh("sleep 30"), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Failure, "{out}");

    rt.stop_pod_sandbox(&sb).await.expect("StopPodSandbox");
    rt.remove_pod_sandbox(&sb).await.expect("RemovePodSandbox");
}
