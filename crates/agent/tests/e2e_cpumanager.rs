//! The static CPU manager end to end on a real containerd (`scripts/testbed`):
//! a container started on the whole shared pool loses, within a few
//! reconcile periods, the CPU later handed to a Guaranteed pod, as read
//! from the cgroup (v1) `cpuset.cpus` files.
//!
//! Upstream: `pkg/kubelet/cm/cpumanager/cpu_manager.go` (`reconcileState`)
//! and its e2e `test/e2e_node/cpu_manager_test.go` ("should assign CPUs as
//! expected ... shared pool").

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubelet_agent::StatusManager;
use kubelet_agent::config::KubeletConfiguration;
use kubelet_agent::standalone::{self, StandaloneOptions};
use kubelet_cri_client::RemoteRuntime;
use kubelet_kuberuntime::config::ConfigOptions;
use kubelet_kuberuntime::{ContainerState, PodStatus, RuntimeManager, RuntimeReader};
use kubelet_testbed::Testbed;

const NODE: &str = "e2e";

/// A kubelet with the static CPU manager running in this process on a test bed.
struct Node {
    bed: Testbed,
    manifests: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    runtime: RuntimeManager,
}

impl Node {
    async fn start(reconcile_period: &str) -> Option<Node> {
        let bed = Testbed::start()?;
        // The test reads cgroup v1 files: a v2-only host cannot run it,
        // and under CI that is a failure, not a skip.
        assert!(
            !Testbed::is_cgroup_v2(),
            "this test reads cgroup v1 cpuset files; the host has cgroup v2 only"
        );
        let cpus = std::fs::read_to_string("/sys/fs/cgroup/cpuset/cpuset.cpus")
            .expect("the cpuset controller (cgroup v1)");
        assert_eq!(cpus.trim(), "0-1", "this test expects a 2-CPU machine");
        let manifests = bed.dir().join("manifests");
        let root = bed.dir().join("root");
        std::fs::create_dir_all(&manifests).expect("manifests dir");
        let cri = RemoteRuntime::builder(bed.endpoint())
            .connect()
            .await
            .expect("connect");
        let runtime = RuntimeManager::new(
            Arc::new(cri),
            ConfigOptions::new(std::sync::Arc::new(kubelet_cm::StaticResources::default())),
        );
        let config = KubeletConfiguration {
            static_pod_path: Some(manifests.clone()),
            container_runtime_endpoint: bed.endpoint(),
            cgroup_root: format!("/{}", bed.cgroup_root()),
            pod_logs_dir: bed.log_dir(),
            enable_server: false,
            // As the other e2e tests: memory pressure only, no image GC.
            eviction_hard: [("memory.available".to_owned(), "100Mi".to_owned())].into(),
            image_gc_high_threshold_percent: 100,
            cpu_manager_policy: "static".into(),
            reserved_system_cpus: "0".into(),
            cpu_manager_reconcile_period: reconcile_period.into(),
            ..Default::default()
        };
        config.validate().expect("valid config");
        let mut opts = StandaloneOptions::new(NODE);
        opts.root_dir = root;
        opts.housekeeping_period = Duration::from_millis(500);
        // Terminated pods' sandboxes are removed by garbage collection.
        opts.container_gc_period = Duration::from_secs(1);
        opts.statuses = Arc::new(StatusManager::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = standalone::run(config, opts, shutdown).await {
                panic!("kubelet failed: {e}");
            }
        });
        Some(Node {
            bed,
            manifests,
            stop: Some(tx),
            task: Some(task),
            runtime,
        })
    }

    fn write(&self, file: &str, yaml: &str) {
        // Write then rename, as editors and config managers do.
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, self.manifests.join(file)).expect("rename manifest");
    }

    /// The pod `name`'s runtime status once its `app` container runs.
    async fn running(&self, name: &str) -> Option<PodStatus> {
        let full = format!("{name}-{NODE}");
        let pod = self
            .runtime
            .get_pods(true)
            .await
            .expect("pods")
            .into_iter()
            .find(|p| p.name == full)?;
        let status = self
            .runtime
            .get_pod_status(&pod.uid, &pod.name, &pod.namespace)
            .await
            .ok()?;
        status
            .find_container_status_by_name("app")
            .is_some_and(|c| c.state == ContainerState::Running)
            .then_some(status)
    }

    /// `cpuset.cpus` of the pod's `app` container, under its QoS cgroup
    /// (`""` for Guaranteed pods, which sit right under kubepods).
    fn cpuset(&self, qos: &str, status: &PodStatus) -> String {
        let app = status.find_container_status_by_name("app").expect("app");
        let qos = if qos.is_empty() {
            String::new()
        } else {
            format!("{qos}/")
        };
        let cgroup = format!(
            "{}/kubepods/{qos}pod{}/{}",
            self.bed.cgroup_root(),
            status.uid,
            app.id
        );
        let path = Testbed::cgroup_v1_dir("cpuset", &cgroup).join("cpuset.cpus");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// Stops the kubelet as SIGTERM does and waits for it to return.
    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the kubelet returns after shutdown")
                .expect("the kubelet task");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const SHARED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
"#;

const EXCLUSIVE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: exclusive}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
    resources:
      requests: {cpu: "1", memory: 32Mi}
      limits: {cpu: "1", memory: 32Mi}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_container_loses_the_cpu_handed_out_exclusively() {
    let period = Duration::from_secs(1);
    let Some(mut node) = Node::start("1s").await else {
        return;
    };

    // A BestEffort pod first: it runs on the whole shared pool.
    node.write("shared.yaml", SHARED);
    let shared = wait_for("shared running", Duration::from_secs(60), || {
        node.running("shared")
    })
    .await;
    assert_eq!(node.cpuset("besteffort", &shared), "0-1");

    // A Guaranteed pod with one whole CPU: CPU 1 (0 is reserved), its own.
    let written = Instant::now();
    node.write("exclusive.yaml", EXCLUSIVE);
    let exclusive = wait_for("exclusive running", Duration::from_secs(60), || {
        node.running("exclusive")
    })
    .await;
    assert_eq!(node.cpuset("", &exclusive), "1");

    // Within a few reconcile periods the shared container is narrowed to
    // what is left of the shared pool.
    wait_for(
        "the shared container's cpuset narrowed to 0",
        period * 5,
        || async { (node.cpuset("besteffort", &shared) == "0").then_some(()) },
    )
    .await;
    eprintln!(
        "shared container narrowed within {:?} of the exclusive pod's manifest",
        written.elapsed()
    );
    // And it stays so; the exclusive container keeps its CPU.
    tokio::time::sleep(period * 2).await;
    assert_eq!(node.cpuset("besteffort", &shared), "0");
    assert_eq!(node.cpuset("", &exclusive), "1");

    // The kubelet (with its reconcile task) returns on shutdown.
    node.shutdown().await;
}
