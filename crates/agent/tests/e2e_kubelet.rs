//! The standalone kubelet end to end against a real containerd from
//! `scripts/testbed`: static pod manifests in a directory, pods running for
//! real, observed through the CRI, the cgroup files and the kubelet's pod
//! statuses. Each test has its own containerd, cgroup root and directories.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubelet_agent::StatusManager;
use kubelet_agent::config::KubeletConfiguration;
use kubelet_agent::standalone::{self, StandaloneOptions};
use kubelet_cri_client::{RemoteRuntime, RuntimeService};
use kubelet_kuberuntime::config::ConfigOptions;
use kubelet_kuberuntime::{ContainerState, PodStatus, RunningPod, RuntimeManager, RuntimeReader};
use kubelet_testbed::{Testbed, read_trimmed as read, wait_for};

const NODE: &str = "e2e";

/// A kubelet running in this process on a test bed.
struct Node {
    bed: Testbed,
    manifests: PathBuf,
    root: PathBuf,
    statuses: Arc<StatusManager>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    cri: RemoteRuntime,
    runtime: RuntimeManager,
    api_port: u16,
    tweak: Arc<dyn Fn(&mut KubeletConfiguration) + Send + Sync>,
    /// A pod source standing in for the API server, when asked for.
    api: Option<Arc<std::sync::Mutex<Option<kubelet_podconfig::SourceSink>>>>,
}

impl Node {
    async fn start() -> Option<Node> {
        Self::start_with(|_| {}, false).await
    }

    /// A node whose configuration `tweak` changes, with an `api` pod source
    /// (pods from it are neither static nor critical) when `api` is set.
    async fn start_with(
        tweak: impl Fn(&mut KubeletConfiguration) + Send + Sync + 'static,
        api: bool,
    ) -> Option<Node> {
        kubelet_testbed::init_tracing();
        let bed = Testbed::start()?;
        let manifests = bed.dir().join("manifests");
        let root = bed.dir().join("root");
        std::fs::create_dir_all(&manifests).expect("manifests dir");
        let cri = RemoteRuntime::builder(bed.endpoint())
            .connect()
            .await
            .expect("connect");
        let runtime = RuntimeManager::new(
            Arc::new(cri.clone()),
            ConfigOptions::new(std::sync::Arc::new(kubelet_cm::StaticResources::default())),
        );
        let mut node = Node {
            bed,
            manifests,
            root,
            statuses: Arc::new(StatusManager::default()),
            stop: None,
            task: None,
            cri,
            runtime,
            api_port: free_port(),
            tweak: Arc::new(tweak),
            api: api.then(|| Arc::new(std::sync::Mutex::new(None))),
        };
        node.start_kubelet();
        Some(node)
    }

    fn config(&self) -> KubeletConfiguration {
        let mut config = KubeletConfiguration {
            static_pod_path: Some(self.manifests.clone()),
            container_runtime_endpoint: self.bed.endpoint(),
            cgroup_root: format!("/{}", self.bed.cgroup_root()),
            pod_logs_dir: self.bed.log_dir(),
            port: self.api_port,
            // Only memory pressure, and no image GC: a test machine's disk
            // may be nearly full, and reclaiming disk would delete the test
            // bed's images under the tests that use them.
            eviction_hard: [("memory.available".to_owned(), "100Mi".to_owned())].into(),
            image_gc_high_threshold_percent: 100,
            ..Default::default()
        };
        (self.tweak)(&mut config);
        config
    }

    /// The UID the file source gives the pod of `<name>.yaml` (decoded as
    /// the file source decodes it).
    fn manifest_uid(&self, name: &str) -> Option<String> {
        let path = self.manifests.join(format!("{name}.yaml"));
        let data = std::fs::read(&path).ok()?;
        let origin = kubelet_podconfig::ManifestOrigin::file(&path);
        kubelet_podconfig::decode_static_pod(&data, &origin, NODE)
            .ok()?
            .metadata
            .uid
    }

    /// Sets the pods of the `api` source.
    async fn set_api_pods(&self, pods: Vec<k8s_openapi::api::core::v1::Pod>) {
        let api = self.api.as_ref().expect("started with an api source");
        let sink = wait_for("the api source", Duration::from_secs(10), || async {
            api.lock().expect("lock").clone()
        })
        .await;
        sink.set(pods).await.expect("api pods");
    }

    /// A GET on the node API: status code and body.
    async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.api_port, path).await
    }

    fn start_kubelet(&mut self) {
        let config = self.config();
        config.validate().expect("valid config");
        let mut opts = StandaloneOptions::new(NODE);
        opts.root_dir = self.root.clone();
        opts.housekeeping_period = Duration::from_millis(500);
        // Terminated pods' sandboxes are removed by garbage collection.
        opts.container_gc_period = Duration::from_secs(1);
        self.statuses = Arc::new(StatusManager::default());
        opts.statuses = self.statuses.clone();
        if let Some(api) = &self.api {
            let api = api.clone();
            opts.pod_config_hook = Some(standalone::PodConfigHook(Arc::new(move |config| {
                *api.lock().expect("lock") = Some(config.channel("api"));
            })));
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = standalone::run(config, opts, shutdown).await {
                panic!("kubelet failed: {e}");
            }
        }));
    }

    /// Like `kill -9`: the kubelet disappears without any cleanup.
    fn kill_kubelet(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.stop = None;
    }

    fn write(&self, file: &str, yaml: &str) {
        // Write then rename, as editors and config managers do.
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, self.manifests.join(file)).expect("rename manifest");
    }

    async fn pod(&self, name: &str) -> Option<RunningPod> {
        let full = format!("{name}-{NODE}");
        self.runtime
            .get_pods(true)
            .await
            .expect("pods")
            .into_iter()
            .find(|p| p.name == full)
    }

    async fn pod_by_uid(&self, uid: &str) -> Option<RunningPod> {
        self.runtime
            .get_pods(true)
            .await
            .expect("pods")
            .into_iter()
            .find(|p| p.uid == uid)
    }

    async fn status_by_uid(&self, uid: &str) -> Option<PodStatus> {
        let pod = self.pod_by_uid(uid).await?;
        self.runtime
            .get_pod_status(&pod.uid, &pod.name, &pod.namespace)
            .await
            .ok()
    }

    async fn status(&self, name: &str) -> Option<PodStatus> {
        let pod = self.pod(name).await?;
        self.runtime
            .get_pod_status(&pod.uid, &pod.name, &pod.namespace)
            .await
            .ok()
    }

    fn phase(&self, uid: &str) -> Option<String> {
        self.statuses.get(uid).and_then(|s| s.phase)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_kubelet();
    }
}

/// A loopback port nobody listens on (the kubelet binds it next; tests
/// run in parallel, so each needs its own).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// HTTP/1.0 GET (no chunking, the server closes): status and body.
async fn http_get(port: u16, path: &str) -> (u16, String) {
    kubelet_testbed::http_get(port, path)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn running(status: &PodStatus, container: &str) -> bool {
    status
        .find_container_status_by_name(container)
        .is_some_and(|c| c.state == ContainerState::Running)
}

const SEED_004: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: frontend}
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_004_burstable_pod_gets_its_cgroup_limits() {
    let Some(node) = Node::start().await else {
        return;
    };
    node.write("frontend.yaml", SEED_004);
    let st = wait_for("frontend running", Duration::from_secs(30), || async {
        node.status("frontend").await.filter(|s| running(s, "app"))
    })
    .await;
    let app = st.find_container_status_by_name("app").expect("app");
    let cgroup = format!(
        "{}/kubepods/burstable/pod{}/{}",
        node.bed.cgroup_root(),
        st.uid,
        app.id
    );
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
    let api = wait_for("status Running", Duration::from_secs(10), || async {
        node.statuses
            .get(&st.uid)
            .filter(|s| s.phase.as_deref() == Some("Running"))
    })
    .await;
    assert_eq!(api.qos_class.as_deref(), Some("Burstable"));
}

/// `kubelet explain` predicts, without running the pod, exactly what lands
/// in the running pod's cgroup files and its process's `oom_score_adj`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_predicts_what_lands_in_the_cgroup_files() {
    let Some(node) = Node::start().await else {
        return;
    };
    let host = kubelet_agent::explain::Host::current().expect("host facts");
    node.write("frontend.yaml", SEED_004);
    let plan = kubelet_agent::explain::explain_manifest(
        &node.config(),
        &node.manifests.join("frontend.yaml"),
        NODE,
        &host,
    )
    .expect("explain");
    let st = wait_for("frontend running", Duration::from_secs(30), || async {
        node.status("frontend").await.filter(|s| running(s, "app"))
    })
    .await;
    assert_eq!(plan.uid, st.uid, "the explained pod is the running pod");
    assert_eq!(plan.qos_class, "Burstable");
    let app_plan = &plan.containers[0];
    let app = st.find_container_status_by_name("app").expect("app");
    let mut checked = 0;
    for file in plan.pod_cgroup.files.iter().chain(&app_plan.files) {
        let path = PathBuf::from(file.path.to_string_lossy().replace("<id>", &app.id));
        // Controllers this host does not mount (hugetlb sizes, say) have no file.
        if !path.parent().is_some_and(Path::is_dir) {
            continue;
        }
        assert_eq!(read(&path), file.value, "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} files checked");
    // The container's processes hold the predicted oom_score_adj.
    let memory_dir = PathBuf::from(
        app_plan.files[0]
            .path
            .to_string_lossy()
            .replace("<id>", &app.id)
            .replace("/cpu/", "/memory/"),
    );
    let procs = read(memory_dir.with_file_name("cgroup.procs"));
    let pid = procs.lines().next().expect("a process in the container");
    assert_eq!(
        read(Path::new(&format!("/proc/{pid}/oom_score_adj"))),
        app_plan.effective_oom_score_adj.to_string()
    );
}

const SEED_002: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: twins}
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{name: shared, emptyDir: {}}]
  containers:
  - name: writer
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "echo hello-from-writer > /data/msg; exec sleep 3600"]
    volumeMounts: [{name: shared, mountPath: /data}]
  - name: reader
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
    volumeMounts: [{name: shared, mountPath: /data}]
"#;

async fn exec(cri: &RemoteRuntime, id: &str, cmd: &[&str]) -> String {
    let out = cri
        .exec_sync(
            id,
            cmd.iter().map(|s| s.to_string()).collect(),
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_shared_network_and_volume_and_a_restart_in_the_same_sandbox() {
    let Some(node) = Node::start().await else {
        return;
    };
    node.write("twins.yaml", SEED_002);
    let st = wait_for("twins running", Duration::from_secs(30), || async {
        node.status("twins")
            .await
            .filter(|s| running(s, "writer") && running(s, "reader"))
    })
    .await;
    let writer = st
        .find_container_status_by_name("writer")
        .expect("writer")
        .clone();
    let reader = st
        .find_container_status_by_name("reader")
        .expect("reader")
        .clone();
    let ip = |id: String| {
        let cri = node.cri.clone();
        async move {
            exec(
                &cri,
                &id,
                &["sh", "-c", "ip -o -4 addr show eth0 | awk '{print $4}'"],
            )
            .await
        }
    };
    let writer_ip = ip(writer.id.clone()).await;
    assert_eq!(
        writer_ip,
        ip(reader.id.clone()).await,
        "one network namespace"
    );
    assert_eq!(
        exec(&node.cri, &reader.id, &["cat", "/data/msg"]).await,
        "hello-from-writer"
    );

    // Kill the writer behind the kubelet's back: the PLEG sees it die and the
    // kubelet restarts it in the same sandbox, with the same IP.
    let sandbox = st.sandbox_statuses[0].id.clone();
    node.cri
        .stop_container(&writer.id, Duration::ZERO)
        .await
        .expect("stop");
    let after = wait_for("writer restarted", Duration::from_secs(30), || async {
        node.status("twins").await.filter(|s| {
            s.find_container_status_by_name("writer")
                .is_some_and(|c| c.state == ContainerState::Running && c.restart_count == 1)
        })
    })
    .await;
    assert_eq!(after.sandbox_statuses[0].id, sandbox, "same sandbox");
    let new_writer = after
        .find_container_status_by_name("writer")
        .expect("writer")
        .id
        .clone();
    assert_ne!(new_writer, writer.id);
    assert_eq!(ip(new_writer).await, writer_ip, "same IP");
    assert_eq!(
        after
            .find_container_status_by_name("reader")
            .map(|c| c.id.clone()),
        Some(reader.id),
        "the reader was left alone"
    );
    let api = wait_for(
        "restart count in the status",
        Duration::from_secs(10),
        || async {
            node.statuses.get(&st.uid).filter(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .any(|c| c.name == "writer" && c.restart_count == 1 && c.ready)
            })
        },
    )
    .await;
    assert_eq!(api.phase.as_deref(), Some("Running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_to_completion_pods_end_succeeded_or_failed_and_init_containers_go_in_order() {
    let Some(node) = Node::start().await else {
        return;
    };
    let pod = |name: &str, policy: &str, code: i32| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {policy}\n  containers:\n  - {{name: c, image: \"localhost/busybox:latest\", imagePullPolicy: IfNotPresent, command: [sh, -c, \"exit {code}\"]}}\n"
        )
    };
    node.write("never-ok.yaml", &pod("never-ok", "Never", 0));
    node.write("never-fail.yaml", &pod("never-fail", "Never", 3));
    node.write("onfailure-ok.yaml", &pod("onfailure-ok", "OnFailure", 0));
    // Init containers run in order and the app checks it.
    node.write(
        "ordered.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: ordered}
spec:
  restartPolicy: Never
  volumes: [{name: d, emptyDir: {}}]
  initContainers:
  - {name: first, image: "localhost/busybox:latest", imagePullPolicy: IfNotPresent, command: [sh, -c, "echo -n 1 >> /d/order"], volumeMounts: [{name: d, mountPath: /d}]}
  - {name: second, image: "localhost/busybox:latest", imagePullPolicy: IfNotPresent, command: [sh, -c, "echo -n 2 >> /d/order"], volumeMounts: [{name: d, mountPath: /d}]}
  containers:
  - {name: app, image: "localhost/busybox:latest", imagePullPolicy: IfNotPresent, command: [sh, -c, "test \"$(cat /d/order)\" = 12"], volumeMounts: [{name: d, mountPath: /d}]}
"#,
    );
    // A failing init container blocks the app container for good.
    node.write(
        "blocked.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: blocked}
spec:
  restartPolicy: Never
  initContainers:
  - {name: broken, image: "localhost/busybox:latest", imagePullPolicy: IfNotPresent, command: [sh, -c, "exit 1"]}
  containers:
  - {name: app, image: "localhost/busybox:latest", imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
"#,
    );
    for (name, want) in [
        ("never-ok", "Succeeded"),
        ("never-fail", "Failed"),
        ("onfailure-ok", "Succeeded"),
        ("ordered", "Succeeded"),
        ("blocked", "Failed"),
    ] {
        let uid = wait_for(
            &format!("{name} in the runtime"),
            Duration::from_secs(30),
            || async { node.pod(name).await.map(|p| p.uid) },
        )
        .await;
        wait_for(
            &format!("{name} {want}"),
            Duration::from_secs(30),
            || async { node.phase(&uid).filter(|p| p == want) },
        )
        .await;
    }
    let blocked = node.status("blocked").await.expect("blocked");
    assert!(
        blocked.find_container_status_by_name("app").is_none(),
        "app never created"
    );
}

const WEB_V1: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - {name: app, image: \"localhost/busybox:latest\", imagePullPolicy: IfNotPresent, command: [sleep, \"3600\"]}\n";
const WEB_V2: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - {name: app, image: \"localhost/busybox:latest\", imagePullPolicy: IfNotPresent, command: [sleep, \"7200\"]}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_pods_follow_their_manifest_files() {
    let Some(node) = Node::start().await else {
        return;
    };
    node.write("web.yaml", WEB_V1);
    let v1 = wait_for("web v1 running", Duration::from_secs(30), || async {
        node.status("web").await.filter(|s| running(s, "app"))
    })
    .await;
    assert!(
        node.root.join("pods").join(&v1.uid).is_dir(),
        "pod directory made"
    );
    let pod_cgroup = |uid: &str| {
        Testbed::cgroup_v1_dir(
            "memory",
            &format!("{}/kubepods/besteffort/pod{uid}", node.bed.cgroup_root()),
        )
    };
    assert!(
        pod_cgroup(&v1.uid).is_dir(),
        "the pod cgroup exists while it runs"
    );

    // Edited: a new UID (the manifest's hash); the old pod is replaced.
    node.write("web.yaml", WEB_V2);
    let v2 = wait_for("web v2 running", Duration::from_secs(30), || async {
        let pods = node.runtime.get_pods(true).await.ok()?;
        let new = pods
            .iter()
            .find(|p| p.name == format!("web-{NODE}") && p.uid != v1.uid && p.is_running())?;
        node.runtime
            .get_pod_status(&new.uid, &new.name, &new.namespace)
            .await
            .ok()
            .filter(|s| running(s, "app"))
    })
    .await;
    assert_ne!(v2.uid, v1.uid);
    wait_for("v1 gone", Duration::from_secs(30), || async {
        let pods = node.runtime.get_pods(true).await.ok()?;
        (!pods.iter().any(|p| p.uid == v1.uid)).then_some(())
    })
    .await;

    // Removed: the pod is killed, its sandbox and its directory are removed.
    std::fs::remove_file(node.manifests.join("web.yaml")).expect("rm");
    wait_for("web removed", Duration::from_secs(30), || async {
        let pods = node.runtime.get_pods(true).await.ok()?;
        (pods.is_empty() && !node.root.join("pods").join(&v2.uid).exists()).then_some(())
    })
    .await;
    assert!(!node.root.join("pods").join(&v1.uid).exists());
    wait_for("pod cgroups removed", Duration::from_secs(30), || async {
        (!pod_cgroup(&v1.uid).exists() && !pod_cgroup(&v2.uid).exists()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_manifest_does_not_stop_the_good_ones() {
    let Some(node) = Node::start().await else {
        return;
    };
    node.write("broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: broken}\nspec: {containers: [{name: x, image: busybox, resources: {limits: {memory: lots}}}]}\n");
    node.write("garbage.yaml", "{{{{ not yaml");
    node.write("web.yaml", WEB_V1);
    wait_for("web running", Duration::from_secs(30), || async {
        node.status("web").await.filter(|s| running(s, "app"))
    })
    .await;
    assert!(node.pod("broken").await.is_none());
    assert!(
        node.task.as_ref().is_some_and(|t| !t.is_finished()),
        "the kubelet still runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_kubelet_restarts_no_container() {
    let Some(mut node) = Node::start().await else {
        return;
    };
    node.write("frontend.yaml", SEED_004);
    node.write("twins.yaml", SEED_002);
    wait_for("both pods running", Duration::from_secs(30), || async {
        let a = node
            .status("frontend")
            .await
            .filter(|s| running(s, "app"))?;
        let b = node
            .status("twins")
            .await
            .filter(|s| running(s, "writer") && running(s, "reader"))?;
        Some((a, b))
    })
    .await;
    let snapshot = |pods: Vec<RunningPod>| {
        let mut ids: Vec<(String, String)> = pods
            .into_iter()
            .flat_map(|p| {
                p.containers
                    .into_iter()
                    .map(|c| (c.id, format!("{:?}", c.state)))
            })
            .collect();
        ids.sort();
        ids
    };
    let before = snapshot(node.runtime.get_pods(true).await.expect("pods"));

    node.kill_kubelet();
    node.start_kubelet();
    // Let the new kubelet sync every pod and run housekeeping a few times.
    let uid = node.pod("twins").await.expect("twins").uid;
    // Usually within a few seconds; about one run in five under load the
    // new kubelet's first Running status for this pod came only after 30 s
    // (not reproduced with tracing on, not yet explained): up to one
    // resync period (60 s) plus its jitter is waited for.
    wait_for(
        "the new kubelet's status",
        Duration::from_secs(100),
        || async { node.phase(&uid).filter(|p| p == "Running") },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = snapshot(node.runtime.get_pods(true).await.expect("pods"));
    assert_eq!(
        before, after,
        "no container was created, restarted or removed"
    );
    let twins = node.status("twins").await.expect("twins");
    assert!(
        twins
            .container_statuses
            .iter()
            .all(|c| c.restart_count == 0)
    );
}

const OOM: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: hog
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [dd, if=/dev/zero, of=/dev/null, bs=200M, count=1]
    resources:
      limits: {memory: 64Mi}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_killed_container_restarts_with_crash_loop_backoff() {
    let Some(node) = Node::start().await else {
        return;
    };
    node.write("hog.yaml", OOM);
    let uid = wait_for("hog in the runtime", Duration::from_secs(30), || async {
        node.pod("hog").await.map(|p| p.uid)
    })
    .await;
    // Watch the restart count climb and note when each restart happens.
    let mut restarts: Vec<(i32, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut oom_seen = false;
    while restarts.len() < 4 && Instant::now() < deadline {
        if let Some(st) = node.status("hog").await {
            for c in st.container_statuses.iter().filter(|c| c.name == "hog") {
                oom_seen |= c.state == ContainerState::Exited
                    && (c.reason == "OOMKilled" || c.exit_code == 137);
            }
            if let Some(newest) = st.find_container_status_by_name("hog")
                && restarts
                    .last()
                    .is_none_or(|(n, _)| *n < newest.restart_count)
            {
                restarts.push((newest.restart_count, Instant::now()));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(oom_seen, "the kernel OOM-killed the container");
    assert_eq!(
        restarts.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "four runs within 120 s"
    );
    // Run 0 crashes and run 1 follows at once; then the backoff doubles:
    // run 2 waits out 10 s, run 3 20 s (upstream's crash-loop backoff).
    let gaps: Vec<Duration> = restarts.windows(2).map(|w| w[1].1 - w[0].1).collect();
    eprintln!("restart gaps: {gaps:?}");
    assert!(
        gaps[1] >= Duration::from_secs(10),
        "second restart after {:?}",
        gaps[1]
    );
    assert!(
        gaps[2] >= Duration::from_secs(20),
        "third restart after {:?}",
        gaps[2]
    );
    assert!(gaps[2] > gaps[1], "the backoff grows");
    let api = node.statuses.get(&uid).expect("status");
    let c = api
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .next()
        .expect("hog");
    let reason = c
        .last_state
        .and_then(|l| l.terminated)
        .and_then(|t| t.reason)
        .unwrap_or_default();
    assert_eq!(reason, "OOMKilled", "lastState names the OOM kill");
}

const VOLUMES: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: vols, labels: {app: demo}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 32Mi}}
  - {name: info, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}
  - {name: host, hostPath: {path: HOSTDIR, type: Directory}}
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "dd if=/dev/zero of=/mem/fill bs=1M count=20 && touch /mem/done && exec sleep 3600"]
    resources: {limits: {memory: 128Mi}}
    volumeMounts:
    - {name: mem, mountPath: /mem}
    - {name: info, mountPath: /info}
    - {name: host, mountPath: /data, subPath: inside}
"#;

const ESCAPE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: escape}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: host, hostPath: {path: HOSTDIR, type: Directory}}
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
    volumeMounts: [{name: host, mountPath: /data, subPath: link}]
  - name: expr
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "echo from-expr > /data/out && exec sleep 3600"]
    env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    volumeMounts: [{name: host, mountPath: /data, subPathExpr: "logs/$(POD_NAME)"}]
"#;

/// Memory-backed emptyDir (a tmpfs of sizeLimit, charged to the pod's
/// memory cgroup), downward API files, the managed /etc/hosts, a subPath
/// that works and one whose symlink leads out of its volume, which is
/// refused for its container only while the pod's other container runs
/// with a `subPathExpr` made from its environment; removing the pods
/// leaves nothing mounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_tmpfs_downward_api_hosts_and_safe_subpaths() {
    let Some(node) = Node::start().await else {
        return;
    };
    let host = node.bed.dir().join("hostvol");
    std::fs::create_dir_all(host.join("inside")).expect("inside");
    std::fs::write(host.join("inside/in.txt"), "inside").expect("in.txt");
    let outside = node.bed.dir().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(outside.join("secret"), "secret").expect("secret");
    std::os::unix::fs::symlink(&outside, host.join("link")).expect("symlink");
    let host_str = host.to_str().expect("utf8");
    node.write("escape.yaml", &ESCAPE.replace("HOSTDIR", host_str));
    node.write("vols.yaml", &VOLUMES.replace("HOSTDIR", host_str));

    let st = wait_for("vols running", Duration::from_secs(30), || async {
        node.status("vols").await.filter(|s| running(s, "app"))
    })
    .await;
    let app = st
        .find_container_status_by_name("app")
        .expect("app")
        .id
        .clone();
    wait_for(
        "20 MiB written to the tmpfs",
        Duration::from_secs(20),
        || async {
            let out = exec(&node.cri, &app, &["ls", "/mem"]).await;
            out.contains("done").then_some(())
        },
    )
    .await;
    let mounts = exec(&node.cri, &app, &["cat", "/proc/mounts"]).await;
    let mem = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/mem"))
        .unwrap_or_else(|| panic!("/mem not mounted: {mounts}"));
    assert!(mem.starts_with("tmpfs "), "{mem}");
    assert!(
        mem.contains("size=32768k"),
        "sizeLimit is the tmpfs size: {mem}"
    );
    // The tmpfs pages are charged to the pod's memory cgroup (Burstable:
    // a memory limit, no cpu).
    let usage: u64 = read(
        Testbed::cgroup_v1_dir(
            "memory",
            &format!(
                "{}/kubepods/burstable/pod{}",
                node.bed.cgroup_root(),
                st.uid
            ),
        )
        .join("memory.usage_in_bytes"),
    )
    .parse()
    .expect("usage");
    assert!(usage >= 20 << 20, "pod memory usage {usage} < 20 MiB");
    // sizeLimit is enforced.
    let full = node
        .cri
        .exec_sync(
            &app,
            [
                "sh",
                "-c",
                "dd if=/dev/zero of=/mem/more bs=1M count=40 2>&1; echo rc=$?",
            ]
            .map(String::from)
            .to_vec(),
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    let text = String::from_utf8_lossy(&full.stdout);
    assert!(text.contains("No space left"), "{text}");

    assert_eq!(
        exec(&node.cri, &app, &["cat", "/info/labels"]).await.trim(),
        "app=\"demo\""
    );
    let hosts = exec(&node.cri, &app, &["cat", "/etc/hosts"]).await;
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n"),
        "{hosts}"
    );
    let ip = st.ips.first().expect("pod IP");
    assert!(
        hosts.lines().any(|l| l == format!("{ip}\tvols-{NODE}")),
        "{hosts}"
    );
    assert_eq!(
        exec(&node.cri, &app, &["cat", "/data/in.txt"]).await,
        "inside"
    );

    // The escaping pod never gets a container, and nothing of `outside`
    // was exposed.
    let escape_uid = node.manifest_uid("escape").expect("escape's UID");
    let reason = wait_for(
        "escape's waiting reason",
        Duration::from_secs(10),
        || async {
            let s = node.statuses.get(&escape_uid)?;
            let c = s
                .container_statuses?
                .into_iter()
                .find(|c| c.name == "app")?;
            c.state?.waiting?.reason
        },
    )
    .await;
    assert_eq!(reason, "CreateContainerConfigError");
    // The other container runs, its subPathExpr expanded from its own
    // environment and made in the volume (upstream `makeMounts`).
    let out = host.join(format!("logs/escape-{NODE}/out"));
    wait_for(
        "expr wrote through its subPathExpr",
        Duration::from_secs(30),
        || async {
            std::fs::read_to_string(&out)
                .ok()
                .filter(|s| s == "from-expr\n")
        },
    )
    .await;
    let escape = node.pod("escape").await.expect("escape's sandbox");
    let names: Vec<&str> = escape.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["expr"],
        "a container was created for a subPath leading out of its volume"
    );

    // Removing the pods unmounts their tmpfs and subpath binds.
    std::fs::remove_file(node.manifests.join("vols.yaml")).expect("rm");
    std::fs::remove_file(node.manifests.join("escape.yaml")).expect("rm");
    let pods_dir = node.root.join("pods");
    wait_for("pod dirs removed", Duration::from_secs(30), || async {
        let left = std::fs::read_dir(&pods_dir).map(|d| d.count()).unwrap_or(0);
        (left == 0).then_some(())
    })
    .await;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mountinfo.contains(pods_dir.to_str().expect("utf8")),
        "mounts left under {}",
        pods_dir.display()
    );
    assert_eq!(read(outside.join("secret")), "secret");
    assert_eq!(read(host.join("inside/in.txt")), "inside");
}

fn api_status(node: &Node, name: &str) -> Option<k8s_openapi::api::core::v1::PodStatus> {
    node.statuses.get(&node.manifest_uid(name)?)
}

fn condition(s: &k8s_openapi::api::core::v1::PodStatus, kind: &str) -> Option<String> {
    s.conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

fn container_field(
    s: &k8s_openapi::api::core::v1::PodStatus,
    name: &str,
) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    s.container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
        .cloned()
}

const LIVENESS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: liveness}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "touch /tmp/healthy; sleep 4; rm /tmp/healthy; exec sleep 3600"]
    livenessProbe: {exec: {command: [cat, /tmp/healthy]}, periodSeconds: 1, failureThreshold: 2}
"#;

const READINESS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: readiness}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "mkdir -p /www && echo ok > /www/ready && exec httpd -f -p 127.0.0.1:PORT -h /www"]
    readinessProbe: {httpGet: {host: 127.0.0.1, port: PORT, path: /ready}, periodSeconds: 1}
    livenessProbe: {tcpSocket: {host: 127.0.0.1, port: PORT}, periodSeconds: 1, failureThreshold: 1}
"#;

const STARTUP: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: startup}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: slow
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "sleep 5; touch /tmp/started; exec sleep 3600"]
    startupProbe: {exec: {command: [cat, /tmp/started]}, periodSeconds: 1, failureThreshold: 60}
    readinessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
"#;

/// Probes end to end: a failing exec liveness probe restarts the container;
/// an HTTP readiness probe on a host-network pod clears and sets Ready as
/// its file comes and goes, while a passing TCP liveness probe restarts
/// nothing; a startup probe holds `started` and readiness back until it
/// passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_restart_gate_readiness_and_hold_back_until_started() {
    let Some(node) = Node::start().await else {
        return;
    };
    let port = free_port();
    node.write("liveness.yaml", LIVENESS);
    node.write(
        "readiness.yaml",
        &READINESS.replace("PORT", &port.to_string()),
    );
    node.write("startup.yaml", STARTUP);
    let t0 = Instant::now();

    // Startup: not started (and not ready) while the probe fails.
    let st = wait_for("startup running", Duration::from_secs(30), || async {
        api_status(&node, "startup").filter(|s| {
            container_field(s, "slow")
                .and_then(|c| c.state?.running)
                .is_some()
        })
    })
    .await;
    let c = container_field(&st, "slow").expect("slow");
    if t0.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            c.started,
            Some(false),
            "started before the startup probe passed"
        );
        assert!(!c.ready, "ready before the startup probe passed");
    }
    let started = wait_for("startup probe passes", Duration::from_secs(30), || async {
        let s = api_status(&node, "startup")?;
        let c = container_field(&s, "slow")?;
        (c.started == Some(true) && c.ready && condition(&s, "Ready").as_deref() == Some("True"))
            .then(|| t0.elapsed())
    })
    .await;
    eprintln!("startup: started and ready {started:?} after the manifest was written");
    assert!(
        started >= Duration::from_secs(5),
        "started before /tmp/started existed"
    );

    // Readiness follows the HTTP endpoint.
    wait_for("readiness Ready", Duration::from_secs(30), || async {
        let s = api_status(&node, "readiness")?;
        (condition(&s, "Ready").as_deref() == Some("True")).then_some(())
    })
    .await;
    let web = node
        .status("readiness")
        .await
        .and_then(|s| s.find_container_status_by_name("web").map(|c| c.id.clone()))
        .expect("web container");
    exec(&node.cri, &web, &["rm", "/www/ready"]).await;
    wait_for("Ready cleared", Duration::from_secs(20), || async {
        let s = api_status(&node, "readiness")?;
        (condition(&s, "Ready").as_deref() == Some("False") && !container_field(&s, "web")?.ready)
            .then_some(())
    })
    .await;
    exec(&node.cri, &web, &["sh", "-c", "echo ok > /www/ready"]).await;
    wait_for("Ready again", Duration::from_secs(20), || async {
        let s = api_status(&node, "readiness")?;
        (condition(&s, "Ready").as_deref() == Some("True")).then_some(())
    })
    .await;

    // Liveness: restarted once the file is gone.
    let restarted = wait_for("liveness restart", Duration::from_secs(60), || async {
        let s = node.status("liveness").await?;
        let running = s
            .container_statuses
            .iter()
            .filter(|c| c.name == "app" && c.state == ContainerState::Running)
            .count();
        let all = s
            .container_statuses
            .iter()
            .filter(|c| c.name == "app")
            .count();
        (all >= 2 && running == 1).then_some(all)
    })
    .await;
    assert!(restarted >= 2);
    let api = api_status(&node, "liveness").expect("status");
    assert!(container_field(&api, "app").expect("app").restart_count >= 1);
    // The TCP liveness probe of the web server passed all along.
    let web_status = node.status("readiness").await.expect("readiness");
    assert_eq!(
        web_status
            .container_statuses
            .iter()
            .filter(|c| c.name == "web")
            .count(),
        1,
        "a passing TCP liveness probe restarted the container"
    );
}

const LOGGER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: logger}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "echo hello-from-logger; echo second-line >&2; exec sleep 3600"]
"#;

/// The node API on a running kubelet: `/pods` parses with k8s-openapi and
/// with Debian's kubectl, `/metrics` is Prometheus text with upstream's
/// names, `/containerLogs` returns the container's output and refuses `..`
/// and a symlinked log file, `/healthz` and `/stats/summary` answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_api_serves_pods_metrics_logs_health_and_stats() {
    let Some(node) = Node::start().await else {
        return;
    };
    node.write("logger.yaml", LOGGER);
    let st = wait_for("logger running", Duration::from_secs(30), || async {
        node.status("logger").await.filter(|s| running(s, "app"))
    })
    .await;
    let full = format!("logger-{NODE}");

    let (code, body) = node.get("/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok"));

    let pods = wait_for(
        "/pods shows the pod Running",
        Duration::from_secs(20),
        || async {
            let (code, body) = node.get("/pods").await;
            assert_eq!(code, 200, "{body}");
            let list: k8s_openapi::List<k8s_openapi::api::core::v1::Pod> =
                serde_json::from_str(&body).expect("a PodList");
            list.items
                .iter()
                .any(|p| {
                    p.metadata.name.as_deref() == Some(full.as_str())
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .then_some(body)
        },
    )
    .await;
    assert!(pods.contains("\"kind\":\"PodList\""));
    // Without kubectl only this part is skipped (outside CI).
    if let Some(kubectl) = kubelet_testbed::require("kubectl", kubelet_testbed::kubectl_path()) {
        let out = tokio::process::Command::new(&kubectl)
            .args(["--server", &format!("http://127.0.0.1:{}", node.api_port)])
            .args(["get", "--raw", "/pods"])
            .env("KUBECONFIG", "/dev/null")
            .output()
            .await
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: k8s_openapi::List<k8s_openapi::api::core::v1::Pod> =
            serde_json::from_slice(&out.stdout).expect("kubectl's output is a PodList");
        assert!(
            list.items
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(full.as_str()))
        );
    }

    let (code, metrics) = node.get("/metrics").await;
    assert_eq!(code, 200);
    for line in metrics
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, value) = line.rsplit_once(' ').expect("`name value`");
        assert!(!name.is_empty(), "{line}");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
    }
    for name in [
        "kubelet_running_pods",
        "kubelet_running_containers",
        "kubelet_pod_start_duration_seconds",
        "kubelet_pod_worker_duration_seconds",
        "kubelet_runtime_operations_duration_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name} missing"
        );
    }
    wait_for(
        "kubelet_running_pods counts the pod",
        Duration::from_secs(20),
        || async {
            let (_, m) = node.get("/metrics").await;
            m.lines()
                .find_map(|l| l.strip_prefix("kubelet_running_pods "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| *v >= 1.0)
        },
    )
    .await;
    assert!(
        metrics.contains(
            "kubelet_runtime_operations_duration_seconds_count{operation_type=\"run_podsandbox\"}"
        ),
        "runtime operations are recorded"
    );

    let logs_path = format!("/containerLogs/default/{full}/app");
    let logs = wait_for("container output", Duration::from_secs(20), || async {
        let (code, body) = node.get(&logs_path).await;
        (code == 200 && body.contains("second-line")).then_some(body)
    })
    .await;
    assert!(logs.contains("hello-from-logger\n"), "{logs}");
    let (code, _) = node
        .get(&format!("/containerLogs/default/{full}/app?tailLines=1"))
        .await;
    assert_eq!(code, 200);
    for bad in [
        "/containerLogs/default/../app".to_owned(),
        format!("/containerLogs/default/{full}/..%2F..%2Fetc"),
        format!("/containerLogs/default/{full}/%2E%2E"),
    ] {
        let (code, body) = node.get(&bad).await;
        assert!(code == 400 || code == 404, "{bad}: {code} {body}");
    }
    // A log file swapped for a symlink is refused, and its target not served.
    let app = st.find_container_status_by_name("app").expect("app");
    let log_path = node
        .cri
        .container_status(&app.id, false)
        .await
        .expect("status")
        .status
        .expect("status body")
        .log_path;
    let secret = node.bed.dir().join("secret.txt");
    std::fs::write(&secret, "TOPSECRET\n").expect("secret");
    std::fs::rename(&log_path, format!("{log_path}.real")).expect("move the log");
    std::os::unix::fs::symlink(&secret, &log_path).expect("symlink");
    let (code, body) = node.get(&logs_path).await;
    assert_ne!(code, 200, "{body}");
    assert!(!body.contains("TOPSECRET"), "{body}");

    let (code, body) = node.get("/stats/summary").await;
    assert_eq!(code, 200, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(summary["node"]["nodeName"], NODE);
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{body}"
    );
    assert!(
        summary["node"]["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{body}"
    );
    let pod = summary["pods"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["podRef"]["name"] == full.as_str()))
        .unwrap_or_else(|| panic!("pod missing: {body}"));
    assert_eq!(pod["podRef"]["uid"], st.uid.as_str());
    // Streaming: a pod that does not exist, and a real exec without the
    // connection upgrade (the runtime gave a URL, the proxy needs the
    // upgrade: upstream's answers).
    let (code, body) = node.get("/exec/default/x/app?command=ls&output=1").await;
    assert_eq!((code, body.as_str()), (404, "pod does not exist"));
    let (code, body) = node
        .get(&format!("/exec/default/{full}/app?command=true&output=1"))
        .await;
    assert_eq!((code, body.as_str()), (400, "Upgrade request required"));
}

fn api_pod(name: &str, spec: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("api-{name}")},
        "spec": spec,
    }))
    .expect("pod")
}

/// Node-pressure eviction end to end: the pods cgroup is limited to 512 MiB
/// (system-reserved is the rest of the machine), the hard threshold is
/// `memory.available<200Mi` (and so `allocatableMemory.available<200Mi`).
/// A BestEffort pod filling memory-backed volumes is evicted (Failed,
/// Evicted) while a Burstable pod within its request keeps running, and a
/// BestEffort pod submitted while the MemoryPressure condition holds is
/// rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_evicts_the_pod_over_its_request_and_rejects_best_effort() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let total_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal");
    let reserved = total_kb * 1024 - (512 << 20);
    let Some(node) = Node::start_with(
        move |c| {
            c.system_reserved = [("memory".to_owned(), reserved.to_string())].into();
            c.eviction_hard = [("memory.available".to_owned(), "200Mi".to_owned())].into();
        },
        true,
    )
    .await
    else {
        return;
    };
    let steady = api_pod(
        "steady",
        serde_json::json!({
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "localhost/busybox:latest", "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
                "resources": {"requests": {"memory": "64Mi"}}}]
        }),
    );
    let hog = api_pod(
        "hog",
        serde_json::json!({
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "a", "emptyDir": {"medium": "Memory"}}, {"name": "b", "emptyDir": {"medium": "Memory"}}],
            "containers": [{"name": "app", "image": "localhost/busybox:latest", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "sleep 2; for d in /a /b; do i=0; while [ $i -lt 20 ]; do dd if=/dev/zero of=$d/f$i bs=1M count=10 2>/dev/null; i=$((i+1)); sleep 0.1; done; done; exec sleep 3600"],
                "volumeMounts": [{"name": "a", "mountPath": "/a"}, {"name": "b", "mountPath": "/b"}]}]
        }),
    );
    node.set_api_pods(vec![steady.clone(), hog.clone()]).await;
    let kubepods =
        Testbed::cgroup_v1_dir("memory", &format!("{}/kubepods", node.bed.cgroup_root()));
    let limit: u64 = wait_for("the pods cgroup", Duration::from_secs(10), || async {
        std::fs::read_to_string(kubepods.join("memory.limit_in_bytes"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .await;
    assert!(
        limit <= 600 << 20,
        "pods cgroup limit {limit} is not node allocatable"
    );

    let t0 = Instant::now();
    let evicted = wait_for("hog evicted", Duration::from_secs(90), || async {
        node.statuses
            .get("api-hog")
            .filter(|s| s.reason.as_deref() == Some("Evicted"))
    })
    .await;
    eprintln!(
        "hog evicted {:?} after the pods were submitted",
        t0.elapsed()
    );
    assert_eq!(evicted.phase.as_deref(), Some("Failed"));
    assert!(
        evicted
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("memory"),
        "{:?}",
        evicted.message
    );
    wait_for(
        "hog's containers stopped",
        Duration::from_secs(30),
        || async {
            let pod = node.pod_by_uid("api-hog").await?;
            pod.containers
                .iter()
                .all(|c| c.state != ContainerState::Running)
                .then_some(())
        },
    )
    .await;
    let steady_status = node.status_by_uid("api-steady").await.expect("steady");
    assert!(
        running(&steady_status, "app"),
        "the pod within its request keeps running"
    );

    let late = api_pod(
        "late",
        serde_json::json!({
            "containers": [{"name": "app", "image": "localhost/busybox:latest", "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"]}]
        }),
    );
    node.set_api_pods(vec![steady, hog, late]).await;
    let rejected = wait_for("late rejected", Duration::from_secs(20), || async {
        node.statuses
            .get("api-late")
            .filter(|s| s.phase.as_deref() == Some("Failed"))
    })
    .await;
    assert_eq!(rejected.reason.as_deref(), Some("Evicted"));
    assert!(
        rejected
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("MemoryPressure"),
        "{:?}",
        rejected.message
    );
    assert!(
        node.pod_by_uid("api-late").await.is_none(),
        "a rejected pod gets no sandbox"
    );
    let steady_status = node.status_by_uid("api-steady").await.expect("steady");
    assert!(running(&steady_status, "app"));
}

/// One exec session over WebSocket (`v4.channel.k8s.io`, as kubectl's
/// fallback and containerd's streaming server speak it): connect, then
/// read frames until the server closes. The v4 error channel (3) carries
/// the exit status; a `Success` status is required.
async fn ws_exec(url: &str) -> Duration {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let started = Instant::now();
    let mut request = url.into_client_request().expect("ws request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("ws connect {url}: {e}"));
    let mut status = String::new();
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(tokio_tungstenite::tungstenite::Message::Binary(b)) if b.first() == Some(&3) => {
                status.push_str(&String::from_utf8_lossy(&b[1..]));
            }
            Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert!(
        status.contains("Success"),
        "exec status {status:?} from {url}"
    );
    started.elapsed()
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).saturating_sub(1)]
}

/// Issue 15's measures of the node API's streaming, against the runtime's
/// own streaming server in the same run:
/// - `exec -- true`: a WebSocket session through the kubelet's `/exec`
///   (which asks the CRI for the session and proxies to it) against the
///   same session asked of the CRI and opened straight on containerd's
///   streaming server; alternated, 30 of each;
/// - `/containerLogs` of 10 MiB of output: throughput through the kubelet
///   (which parses the CRI log format) against reading the log file.
///
/// `CI=true cargo test --release -p kubelet-agent --test e2e_kubelet -- --ignored --nocapture streaming_measure`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn streaming_measure() {
    let Some(node) = Node::start_with(|c| c.container_log_max_size = "200Mi".into(), false).await
    else {
        return;
    };
    const LOG_BYTES: usize = 10 << 20;
    node.write(
        "talk.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: talk}}\nspec:\n  containers:\n  - name: app\n    image: localhost/busybox:latest\n    imagePullPolicy: Never\n    command: [sh, -c, 'yes 0123456789012345678901234567890123456789012345678901234567890123456789 | head -c {LOG_BYTES}; echo; echo log-done; exec sleep 3600']\n"
        ),
    );
    let full = format!("talk-{NODE}");
    let path = format!("/containerLogs/default/{full}/app");
    wait_for("the node API", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", node.api_port))
            .await
            .ok()
            .map(drop)
    })
    .await;
    wait_for("all the log written", Duration::from_secs(120), || async {
        let (code, body) = node.get(&path).await;
        (code == 200 && body.ends_with("log-done\n")).then_some(())
    })
    .await;
    let container_id = node
        .pod("talk")
        .await
        .and_then(|p| p.containers.into_iter().find(|c| c.name == "app"))
        .map(|c| c.id)
        .expect("the container");

    // exec -- true, alternated.
    let mut direct = Vec::new();
    let mut kubelet = Vec::new();
    let via_kubelet = format!(
        "ws://127.0.0.1:{}/exec/default/{full}/app?command=true&output=1&error=1",
        node.api_port
    );
    for i in 0..32 {
        let t = Instant::now();
        let url = node
            .cri
            .exec(kubelet_cri_client::api::ExecRequest {
                container_id: container_id.clone(),
                cmd: vec!["true".into()],
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await
            .expect("CRI Exec");
        let url = url.replacen("http://", "ws://", 1);
        ws_exec(&url).await;
        let d = t.elapsed();
        let k = ws_exec(&via_kubelet).await;
        // The first two of each warm connections and caches.
        if i >= 2 {
            direct.push(d);
            kubelet.push(k);
        }
    }
    let (d50, k50) = (
        percentile(direct.clone(), 0.5),
        percentile(kubelet.clone(), 0.5),
    );
    let (d90, k90) = (percentile(direct, 0.9), percentile(kubelet, 0.9));
    println!(
        "exec -- true, 30 each: direct to the CRI p50 {d50:?} p90 {d90:?}; through the kubelet p50 {k50:?} p90 {k90:?}; the kubelet adds {:?} at p50",
        k50.saturating_sub(d50)
    );

    // 10 MiB of logs.
    let file = node
        .bed
        .log_dir()
        .read_dir()
        .expect("pod logs dir")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().contains(&full))
        .map(|e| e.path().join("app/0.log"))
        .expect("the log file");
    let mut read = Vec::new();
    let mut served = Vec::new();
    let mut size = (0, 0);
    for _ in 0..5 {
        let t = Instant::now();
        let raw = std::fs::read(&file).expect("read the log file");
        read.push(t.elapsed());
        let t = Instant::now();
        let body = {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", node.api_port))
                .await
                .expect("connect");
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: node\r\n\r\n").as_bytes())
                .await
                .expect("request");
            let mut body = Vec::with_capacity(raw.len());
            s.read_to_end(&mut body).await.expect("response");
            body
        };
        served.push(t.elapsed());
        assert!(body.starts_with(b"HTTP/1.0 200 OK"));
        assert!(body.ends_with(b"log-done\n"));
        size = (raw.len(), body.len());
    }
    let mib = |bytes: usize, d: Duration| bytes as f64 / (1 << 20) as f64 / d.as_secs_f64();
    let (r, s) = (percentile(read, 0.5), percentile(served, 0.5));
    println!(
        "logs: the file {} bytes read in {r:?} ({:.0} MiB/s); /containerLogs {} bytes (the payload and a response head) in {s:?} ({:.0} MiB/s)",
        size.0,
        mib(size.0, r),
        size.1,
        mib(size.1, s)
    );
}
