//! Cluster mode end to end: this kubelet as the only node of a real
//! control plane (etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler v1.35 from `scripts/testbed`), on a real containerd, with
//! a node address on a veth pair of its own. Each test has its own control
//! plane, containerd, cgroup root and directories, and leaves nothing behind.
//!
//! What the API server shows is read with an admin client, as `kubectl`
//! would; what runs is read from the CRI.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubelet_agent::config::KubeletConfiguration;
use kubelet_agent::standalone::{self, StandaloneOptions};
use kubelet_cri_client::{RemoteRuntime, RuntimeService};
use kubelet_testbed::{ControlPlane, NodeNet, Testbed, wait_for};

/// At most this many control planes with their kubelets at once. With
/// three on this 2-core machine, `crash_loops_show_and_outages_restart_nothing`
/// failed in three full runs of five (a wait for the OutOfpods rejection or
/// the node's re-registration timing out); with two the whole binary takes
/// the same time (about 190 s) and passed.
static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// A kubelet in this process, registered with a control plane.
struct ClusterNode {
    name: String,
    bed: Testbed,
    cp: ControlPlane,
    net: NodeNet,
    manifests: PathBuf,
    root: PathBuf,
    port: u16,
    cri: RemoteRuntime,
    admin: kube::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    max_pods: i64,
    /// The kubelet's `syncFrequency`.
    sync_frequency: String,
    /// Held until everything above is stopped (see [`SLOTS`]); dropped
    /// last.
    _slot: tokio::sync::SemaphorePermit<'static>,
}

impl ClusterNode {
    /// Starts the control plane, containerd and the node network, then the
    /// kubelet; `None` (skip) outside CI when a part cannot run here.
    async fn start(name: &str) -> Option<ClusterNode> {
        Self::start_with(name, 110).await
    }

    /// [`ClusterNode::start`] with `maxPods: max_pods`.
    async fn start_with(name: &str, max_pods: i64) -> Option<ClusterNode> {
        Self::start_configured(name, max_pods, "1m").await
    }

    /// [`ClusterNode::start_with`] with `syncFrequency: sync_frequency`.
    async fn start_configured(
        name: &str,
        max_pods: i64,
        sync_frequency: &str,
    ) -> Option<ClusterNode> {
        let slot = SLOTS.acquire().await.expect("the slots are never closed");
        kubelet_testbed::init_tracing();
        let bed = Testbed::start()?;
        let cp = ControlPlane::start(name)?;
        let net = NodeNet::up(name)?;
        let manifests = bed.dir().join("manifests");
        let root = bed.dir().join("root");
        std::fs::create_dir_all(&manifests).expect("manifests dir");
        let cri = RemoteRuntime::builder(bed.endpoint())
            .connect()
            .await
            .expect("connect to containerd");
        let kubeconfig =
            kube::config::Kubeconfig::read_from(cp.admin_kubeconfig()).expect("admin kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("admin config");
        let admin = kube::Client::try_from(config).expect("admin client");
        let mut node = ClusterNode {
            _slot: slot,
            name: name.to_owned(),
            bed,
            cp,
            net,
            manifests,
            root,
            port: free_port(),
            cri,
            admin,
            stop: None,
            task: None,
            max_pods,
            sync_frequency: sync_frequency.to_owned(),
        };
        node.start_kubelet();
        Some(node)
    }

    fn config(&self) -> KubeletConfiguration {
        // A serving certificate from the cluster CA, which the API server
        // verifies kubelets against, and its client certificates accepted
        // (as a kubeadm node, after TLS bootstrap).
        let (cert, key) = self
            .cp
            .kubelet_serving_cert(IpAddr::V4(self.net.address()))
            .expect("kubelet serving certificate");
        let mut authentication = kubelet_agent::config::KubeletAuthentication::default();
        authentication.x509.client_ca_file = self.cp.ca_cert().display().to_string();
        KubeletConfiguration {
            tls_cert_file: cert.display().to_string(),
            tls_private_key_file: key.display().to_string(),
            authentication,
            static_pod_path: Some(self.manifests.clone()),
            container_runtime_endpoint: self.bed.endpoint(),
            cgroup_root: format!("/{}", self.bed.cgroup_root()),
            pod_logs_dir: self.bed.log_dir(),
            port: self.port,
            // Memory only, no image GC: the disk of a test machine may be
            // nearly full, and the test bed's images are the only copies.
            eviction_hard: [("memory.available".to_owned(), "100Mi".to_owned())].into(),
            image_gc_high_threshold_percent: 100,
            node_status_update_frequency: "2s".into(),
            max_pods: self.max_pods,
            // Cluster DNS as kubeadm configures it (nothing answers there:
            // the tests only read the pods' resolv.conf).
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            sync_frequency: self.sync_frequency.clone(),
            ..Default::default()
        }
    }

    fn start_kubelet(&mut self) {
        let config = self.config();
        config.validate().expect("valid config");
        let mut opts = StandaloneOptions::new(self.name.clone());
        opts.root_dir = self.root.clone();
        opts.housekeeping_period = Duration::from_millis(500);
        // Terminated pods' sandboxes are removed by garbage collection.
        opts.container_gc_period = Duration::from_secs(1);
        opts.kubeconfig = Some(self.cp.node_kubeconfig());
        opts.node_ips = vec![IpAddr::V4(self.net.address())];
        opts.node_labels = BTreeMap::from([("e2e".to_owned(), "cluster".to_owned())]);
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

    /// Stops the kubelet as SIGTERM does (pods keep running).
    async fn stop_kubelet(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("kubelet task");
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), "default")
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.admin.clone())
    }

    async fn node(&self) -> Option<Node> {
        self.nodes().get_opt(&self.name).await.ok().flatten()
    }

    /// The node's Ready condition status (`True`, `False`, `Unknown`).
    async fn ready(&self) -> Option<String> {
        let node = self.node().await?;
        node.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status)
    }

    async fn wait_ready(&self, want: &str, limit: Duration) {
        wait_for(&format!("node Ready={want}"), limit, || async {
            (self.ready().await.as_deref() == Some(want)).then_some(())
        })
        .await;
    }

    /// The CRI's pod sandboxes of API pod `name` (any state).
    async fn sandboxes(&self, name: &str) -> usize {
        self.cri
            .list_pod_sandbox(None)
            .await
            .expect("list sandboxes")
            .into_iter()
            .filter(|s| s.metadata.as_ref().is_some_and(|m| m.name == name))
            .count()
    }

    /// Running container IDs, by pod name and container name.
    async fn running_containers(&self) -> BTreeMap<(String, String), String> {
        self.cri
            .list_containers(None)
            .await
            .expect("list containers")
            .into_iter()
            .filter(|c| c.state == 1)
            .filter_map(|c| {
                let pod = c.labels.get("io.kubernetes.pod.name")?.clone();
                let name = c.metadata.as_ref()?.name.clone();
                Some(((pod, name), c.id))
            })
            .collect()
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.cp
            .kubectl(args)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    fn write_manifest(&self, file: &str, yaml: &str) {
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, self.manifests.join(file)).expect("rename manifest");
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn condition(pod: &Pod, kind: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

/// The pods of `app=<app>` in namespace default.
async fn app_pods(node: &ClusterNode, app: &str) -> Vec<Pod> {
    node.pods()
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

const STATIC_POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: static-web, namespace: default}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command: [sleep, '3600']
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_registers_runs_api_pods_and_mirrors_static_pods() {
    let Some(node) = ClusterNode::start("e2e-cluster-a").await else {
        return;
    };
    node.write_manifest("static-web.yaml", STATIC_POD);

    // The node registers and turns Ready, with what upstream reports.
    node.wait_ready("True", Duration::from_secs(60)).await;
    let n = node.node().await.expect("the node");
    let labels = n.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("kubernetes.io/hostname"), Some(&node.name));
    assert_eq!(
        labels.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );
    assert_eq!(labels.get("e2e").map(String::as_str), Some("cluster"));
    let status = n.status.clone().expect("node status");
    let capacity = status.capacity.clone().expect("capacity");
    for r in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(capacity.contains_key(r), "capacity lacks {r}: {capacity:?}");
    }
    assert_eq!(capacity["pods"].0, "110");
    let allocatable = status.allocatable.clone().expect("allocatable");
    assert!(allocatable.contains_key("memory"), "{allocatable:?}");
    let info = status.node_info.clone().expect("nodeInfo");
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{info:?}"
    );
    assert!(
        !info.boot_id.is_empty() && !info.kernel_version.is_empty(),
        "{info:?}"
    );
    let addresses = status.addresses.clone().unwrap_or_default();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == node.net.address().to_string()),
        "{addresses:?}"
    );
    assert_eq!(
        status
            .daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port),
        Some(i32::from(node.port))
    );
    let yaml = node.kubectl(&["get", "node", &node.name, "-o", "yaml"]);
    assert!(yaml.contains("kubeletVersion"), "{yaml}");

    // The node's events, in default about the Node as upstream records
    // them: Starting (BirthCry) and the pressure conditions leaving Unknown
    // at registration. The Ready condition is new then, which upstream
    // adds without an event; NodeReady follows a transition (see the
    // restart in `crash_loops_show_and_outages_restart_nothing`).
    let events: Api<Event> = Api::namespaced(node.admin.clone(), "default");
    let has_node_events = async |reasons: &[&str]| {
        let fields = format!("involvedObject.kind=Node,involvedObject.name={}", node.name);
        let list = events
            .list(&ListParams::default().fields(&fields))
            .await
            .ok()?;
        reasons
            .iter()
            .all(|reason| {
                list.items.iter().any(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object.uid.as_deref() == Some(node.name.as_str())
                        && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("kubelet")
                })
            })
            .then_some(())
    };
    wait_for(
        "the node's Starting and NodeHasSufficientMemory events",
        Duration::from_secs(30),
        || {
            has_node_events(&[
                "Starting",
                "NodeHasSufficientMemory",
                "NodeHasNoDiskPressure",
                "NodeHasSufficientPID",
            ])
        },
    )
    .await;

    // A pod whose secret does not exist never starts and says why: a
    // FailedMount Warning, as upstream's volume manager words it.
    node.pods()
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "no-secret"},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "app", "image": "localhost/busybox:latest",
                        "imagePullPolicy": "Never", "command": ["sleep", "3600"],
                        "volumeMounts": [{"name": "creds", "mountPath": "/creds"}]
                    }],
                    "volumes": [{"name": "creds", "secret": {"secretName": "does-not-exist"}}]
                }
            }))
            .expect("pod"),
        )
        .await
        .expect("create no-secret");
    let failed_mount = ListParams::default()
        .fields("involvedObject.kind=Pod,involvedObject.name=no-secret,reason=FailedMount");
    let message = wait_for(
        "a FailedMount event for no-secret",
        Duration::from_secs(30),
        || async {
            let list = events.list(&failed_mount).await.ok()?;
            let e = list.items.into_iter().next()?;
            (e.type_.as_deref() == Some("Warning")).then_some(e.message.unwrap_or_default())
        },
    )
    .await;
    assert_eq!(
        message,
        "MountVolume.SetUp failed for volume \"creds\" : secret \"does-not-exist\" not found"
    );
    let p = node.pods().get("no-secret").await.expect("no-secret");
    assert_eq!(phase(&p), Some("Pending"));
    node.pods()
        .delete("no-secret", &DeleteParams::default())
        .await
        .expect("delete no-secret");
    wait_for("no-secret deleted", Duration::from_secs(60), || async {
        node.pods()
            .get_opt("no-secret")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;

    // The lease in kube-node-lease, owned by the Node, renews.
    let leases: Api<Lease> = Api::namespaced(node.admin.clone(), "kube-node-lease");
    let first = wait_for("the node lease", Duration::from_secs(30), || async {
        leases.get_opt(&node.name).await.ok().flatten()
    })
    .await;
    let spec = first.spec.clone().expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(node.name.as_str()));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let renewed = spec.renew_time.clone();
    wait_for("a lease renewal", Duration::from_secs(30), || async {
        let lease = leases.get_opt(&node.name).await.ok().flatten()?;
        let owned = lease
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.kind == "Node" && r.name == node.name));
        (owned && lease.spec?.renew_time != renewed).then_some(())
    })
    .await;

    // The static pod has a mirror pod showing its status.
    let mirror_name = format!("static-web-{}", node.name);
    let mirror = wait_for(
        "the mirror pod Running",
        Duration::from_secs(60),
        || async {
            let pod = node.pods().get_opt(&mirror_name).await.ok().flatten()?;
            (phase(&pod) == Some("Running")).then_some(pod)
        },
    )
    .await;
    let annotations = mirror.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations.contains_key("kubernetes.io/config.mirror"));
    let static_id =
        node.running_containers().await[&(mirror_name.clone(), "app".to_owned())].clone();
    // A user deletes it: it comes back with a new UID, the pod untouched.
    node.pods()
        .delete(&mirror_name, &DeleteParams::default())
        .await
        .expect("delete the mirror pod");
    let old_uid = mirror.metadata.uid.clone();
    wait_for(
        "the mirror pod recreated",
        Duration::from_secs(60),
        || async {
            let pod = node.pods().get_opt(&mirror_name).await.ok().flatten()?;
            (pod.metadata.uid != old_uid && pod.metadata.deletion_timestamp.is_none()).then_some(())
        },
    )
    .await;
    assert_eq!(
        node.running_containers().await[&(mirror_name.clone(), "app".to_owned())],
        static_id,
        "the static pod kept its container"
    );

    // A Deployment of three: the scheduler binds them here, they run, and
    // the API shows them Running with IPs, container statuses and Ready.
    node.kubectl(&[
        "create",
        "deployment",
        "sleepers",
        "--image=localhost/busybox:latest",
        "--replicas=3",
        "--",
        "sleep",
        "3600",
    ]);
    let deployments: Api<Deployment> = Api::namespaced(node.admin.clone(), "default");
    // busybox `sleep` as PID 1 ignores SIGTERM: a short grace period keeps
    // the scale-down quick. Patched before the scheduler has bound the
    // first pods or after: either way three of the new template run.
    deployments
        .patch(
            "sleepers",
            &PatchParams::default(),
            &Patch::Strategic(serde_json::json!({
                "spec": {"template": {"spec": {
                    "terminationGracePeriodSeconds": 2,
                    // `:latest` defaults to Always, and no registry is
                    // reachable here: use the test bed's imported image.
                    "containers": [{"name": "busybox", "imagePullPolicy": "IfNotPresent"}]
                }}}
            })),
        )
        .await
        .expect("patch the deployment");
    let running = wait_for(
        "3 pods Running and Ready",
        Duration::from_secs(120),
        || async {
            let pods: Vec<Pod> = app_pods(&node, "sleepers")
                .await
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    phase(p) == Some("Running") && condition(p, "Ready").as_deref() == Some("True")
                })
                .collect();
            (pods.len() == 3).then_some(pods)
        },
    )
    .await;
    for pod in &running {
        let st = pod.status.as_ref().expect("status");
        assert!(st.pod_ip.is_some(), "{:?}", pod.metadata.name);
        assert_eq!(
            st.host_ip.as_deref(),
            Some(node.net.address().to_string().as_str())
        );
        let cs = &st.container_statuses.as_ref().expect("container statuses")[0];
        assert!(cs.ready && cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
        assert!(
            cs.container_id
                .as_deref()
                .is_some_and(|id| id.starts_with("containerd://"))
        );
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(node.name.as_str())
        );
    }

    // Scale to one: two go through the graceful deletion handshake and
    // their sandboxes are removed.
    node.kubectl(&["scale", "deployment", "sleepers", "--replicas=1"]);
    wait_for(
        "two pods deleted from the API",
        Duration::from_secs(120),
        || async { (app_pods(&node, "sleepers").await.len() == 1).then_some(()) },
    )
    .await;
    let kept = app_pods(&node, "sleepers").await;
    let gone: Vec<String> = running
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .filter(|n| kept.iter().all(|k| k.metadata.name.as_ref() != Some(n)))
        .collect();
    assert_eq!(gone.len(), 2, "{gone:?}");
    for name in &gone {
        let running = node.running_containers().await;
        assert!(
            !running.keys().any(|(pod, _)| pod == name),
            "{name} still runs: {running:?}"
        );
        wait_for(
            &format!("{name}'s sandbox removed"),
            Duration::from_secs(60),
            || async { (node.sandboxes(name).await == 0).then_some(()) },
        )
        .await;
    }

    // Cleanup: the deployment and the static pod go; the mirror pod too.
    node.kubectl(&["delete", "deployment", "sleepers", "--wait=false"]);
    std::fs::remove_file(node.manifests.join("static-web.yaml")).expect("remove manifest");
    wait_for(
        "the mirror pod deleted",
        Duration::from_secs(60),
        || async {
            node.pods()
                .get_opt(&mirror_name)
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        },
    )
    .await;
    let _ = PostParams::default();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_loops_show_and_outages_restart_nothing() {
    let Some(mut node) = ClusterNode::start_with("e2e-cluster-b", 4).await else {
        return;
    };
    node.wait_ready("True", Duration::from_secs(60)).await;
    let pod = |name: &str, command: &[&str]| -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 2,
                "containers": [{
                    "name": "app",
                    "image": "localhost/busybox:latest",
                    "imagePullPolicy": "Never",
                    "command": command,
                }],
            },
        }))
        .expect("pod")
    };
    let pp = PostParams::default();
    node.pods()
        .create(&pp, &pod("crasher", &["sh", "-c", "exit 3"]))
        .await
        .expect("create crasher");
    node.pods()
        .create(&pp, &pod("steady", &["sleep", "3600"]))
        .await
        .expect("create steady");

    // The crash loop shows in the API as upstream shows it.
    wait_for(
        "CrashLoopBackOff in the API",
        Duration::from_secs(120),
        || async {
            let p = node.pods().get_opt("crasher").await.ok().flatten()?;
            let cs = p.status?.container_statuses?.into_iter().next()?;
            let waiting = cs.state?.waiting?;
            (waiting.reason.as_deref() == Some("CrashLoopBackOff") && cs.restart_count >= 1)
                .then_some(())
        },
    )
    .await;
    // ... and `kubectl describe` has the BackOff events that say why.
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(node.admin.clone(), "default");
    wait_for(
        "BackOff and Started events for crasher",
        Duration::from_secs(60),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            let of = |reason: &str| {
                list.items.iter().any(|e| {
                    e.involved_object.name.as_deref() == Some("crasher")
                        && e.reason.as_deref() == Some(reason)
                        && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("kubelet")
                })
            };
            (of("BackOff") && of("Started") && of("Created")).then_some(())
        },
    )
    .await;
    wait_for("steady Running", Duration::from_secs(60), || async {
        let p = node.pods().get_opt("steady").await.ok().flatten()?;
        (phase(&p) == Some("Running")).then_some(())
    })
    .await;
    let before = node.running_containers().await;
    let steady_id = before[&("steady".to_owned(), "app".to_owned())].clone();

    // The API server dies and comes back: nothing restarts, statuses catch up.
    node.cp.stop_apiserver().expect("stop the API server");
    tokio::time::sleep(Duration::from_secs(5)).await;
    node.cp.start_apiserver().expect("start the API server");
    node.pods()
        .create(&pp, &pod("after-outage", &["sleep", "3600"]))
        .await
        .expect("create after the outage");
    wait_for(
        "a pod created after the outage runs",
        Duration::from_secs(90),
        || async {
            let p = node.pods().get_opt("after-outage").await.ok().flatten()?;
            (phase(&p) == Some("Running")).then_some(())
        },
    )
    .await;
    assert_eq!(
        node.running_containers().await[&("steady".to_owned(), "app".to_owned())],
        steady_id,
        "steady was not restarted by the API server's outage"
    );

    // The kubelet stops: the node controller marks the node NotReady
    // (Unknown) once the lease lapses; the pods keep running; after a
    // restart nothing restarts and the node is Ready again.
    node.stop_kubelet().await;
    node.wait_ready("Unknown", Duration::from_secs(120)).await;
    assert_eq!(
        node.running_containers().await[&("steady".to_owned(), "app".to_owned())],
        steady_id
    );
    node.start_kubelet();
    node.wait_ready("True", Duration::from_secs(60)).await;
    // Ready went from the node controller's Unknown to True: the kubelet
    // records NodeReady on the Node (upstream `ReadyCondition`).
    wait_for("a NodeReady event", Duration::from_secs(30), || async {
        let fields = format!(
            "involvedObject.kind=Node,involvedObject.name={},reason=NodeReady",
            node.name
        );
        let list = events
            .list(&ListParams::default().fields(&fields))
            .await
            .ok()?;
        let e = list.items.into_iter().next()?;
        (e.message.as_deref() == Some(&format!("Node {} status is now: NodeReady", node.name)))
            .then_some(())
    })
    .await;
    wait_for(
        "steady Running after the restart",
        Duration::from_secs(60),
        || async {
            let p = node.pods().get_opt("steady").await.ok().flatten()?;
            let cs = p
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .clone();
            (phase(&p) == Some("Running") && cs.restart_count == 0).then_some(())
        },
    )
    .await;
    assert_eq!(
        node.running_containers().await[&("steady".to_owned(), "app".to_owned())],
        steady_id,
        "the kubelet's restart restarted nothing"
    );

    // A pod bound here by hand past the scheduler that asks for more CPU
    // than the node has is rejected at admission (upstream's predicate
    // admission): Failed with OutOfcpu in the API, and a Warning event.
    let mut greedy = pod("greedy", &["sleep", "3600"]);
    {
        let spec = greedy.spec.as_mut().expect("spec");
        spec.node_name = Some(node.name.clone());
        spec.containers[0].resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "cpu".to_owned(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1000".into()),
            )])),
            ..Default::default()
        });
    }
    node.pods()
        .create(&pp, &greedy)
        .await
        .expect("create greedy");
    let rejected = wait_for("greedy Failed", Duration::from_secs(60), || async {
        let p = node.pods().get_opt("greedy").await.ok().flatten()?;
        (phase(&p) == Some("Failed")).then_some(p)
    })
    .await;
    let st = rejected.status.expect("status");
    assert_eq!(st.reason.as_deref(), Some("OutOfcpu"), "{st:?}");
    assert!(
        st.message.as_deref().is_some_and(|m| m.starts_with(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: "
        )),
        "{st:?}"
    );
    wait_for(
        "an OutOfcpu event for greedy",
        Duration::from_secs(30),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.involved_object.name.as_deref() == Some("greedy")
                        && e.reason.as_deref() == Some("OutOfcpu")
                        && e.type_.as_deref() == Some("Warning")
                })
                .then_some(())
        },
    )
    .await;

    // A pod beyond maxPods (4), bound here by hand past the scheduler, is
    // rejected at admission and shown Failed with upstream's reason.
    node.pods()
        .create(&pp, &pod("fourth", &["sleep", "3600"]))
        .await
        .expect("create fourth");
    wait_for("fourth Running", Duration::from_secs(60), || async {
        let p = node.pods().get_opt("fourth").await.ok().flatten()?;
        (phase(&p) == Some("Running")).then_some(())
    })
    .await;
    let mut fifth = pod("fifth", &["sleep", "3600"]);
    fifth.spec.as_mut().expect("spec").node_name = Some(node.name.clone());
    node.pods().create(&pp, &fifth).await.expect("create fifth");
    let rejected = wait_for("fifth Failed", Duration::from_secs(60), || async {
        let p = node.pods().get_opt("fifth").await.ok().flatten()?;
        (phase(&p) == Some("Failed")).then_some(p)
    })
    .await;
    let st = rejected.status.expect("status");
    assert_eq!(st.reason.as_deref(), Some("OutOfpods"), "{st:?}");
    assert!(
        st.message.as_deref().is_some_and(|m| m.contains("pods")),
        "{st:?}"
    );
    assert!(
        !node
            .running_containers()
            .await
            .keys()
            .any(|(p, _)| p == "fifth")
    );

    // An admin deletes the Node: the kubelet registers it again.
    let old_uid = node.node().await.and_then(|n| n.metadata.uid);
    node.nodes()
        .delete(&node.name, &DeleteParams::default())
        .await
        .expect("delete the node");
    wait_for(
        "the node registered again",
        Duration::from_secs(60),
        || async {
            let n = node.node().await?;
            (n.metadata.uid != old_uid).then_some(())
        },
    )
    .await;
    node.wait_ready("True", Duration::from_secs(60)).await;
    assert_eq!(
        node.running_containers().await[&("steady".to_owned(), "app".to_owned())],
        steady_id,
        "re-registering restarted nothing"
    );
    let _ = Arc::new(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_pods_run_before_the_api_server_answers_and_the_node_registers_later() {
    let Some(mut node) = ClusterNode::start("e2e-cluster-c").await else {
        return;
    };
    // Restart the kubelet with the API server down and a static pod.
    node.stop_kubelet().await;
    node.cp.stop_apiserver().expect("stop the API server");
    node.write_manifest("static-web.yaml", STATIC_POD);
    node.start_kubelet();
    let mirror_name = format!("static-web-{}", node.name);
    wait_for(
        "the static pod runs without an API server",
        Duration::from_secs(60),
        || async {
            node.running_containers()
                .await
                .contains_key(&(mirror_name.clone(), "app".to_owned()))
                .then_some(())
        },
    )
    .await;
    let id = node.running_containers().await[&(mirror_name.clone(), "app".to_owned())].clone();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The API server comes up: the node registers (its retries back off to
    // 7 s), turns Ready and mirrors the static pod, which keeps running.
    node.cp.start_apiserver().expect("start the API server");
    node.wait_ready("True", Duration::from_secs(90)).await;
    wait_for(
        "the mirror pod Running",
        Duration::from_secs(60),
        || async {
            let pod = node.pods().get_opt(&mirror_name).await.ok().flatten()?;
            (phase(&pod) == Some("Running")).then_some(())
        },
    )
    .await;
    assert_eq!(
        node.running_containers().await[&(mirror_name.clone(), "app".to_owned())],
        id,
        "the static pod was not restarted"
    );
}

/// The container's log under the test bed's pod log dir
/// (`<ns>_<name>_<uid>/<container>/0.log`), its CRI line prefixes removed.
fn container_log(node: &ClusterNode, pod: &str, container: &str) -> Option<String> {
    let prefix = format!("default_{pod}_");
    let dir = std::fs::read_dir(node.bed.log_dir())
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))?;
    let text = std::fs::read_to_string(dir.path().join(container).join("0.log")).ok()?;
    // `<time> stdout F <line>`.
    Some(
        text.lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Upstream `makeEnvironmentVariables` against a real API server: a key
/// of a Secret, a ConfigMap through `envFrom` with a prefix, the node's
/// address as `status.hostIP`, and `$(VAR)` in the command; a pod whose
/// Secret is missing waits with `CreateContainerConfigError` (upstream's
/// message, a `Failed` event) until the Secret is created, then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn env_reads_secrets_config_maps_and_the_node_address() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let Some(node) = ClusterNode::start("e2e-cluster-env").await else {
        return;
    };
    node.wait_ready("True", Duration::from_secs(90)).await;
    let secrets: Api<Secret> = Api::namespaced(node.admin.clone(), "default");
    let config_maps: Api<ConfigMap> = Api::namespaced(node.admin.clone(), "default");
    let pp = PostParams::default();
    let secret = |name: &str| -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "stringData": {"password": format!("pw-of-{name}")}
        }))
        .expect("secret")
    };
    secrets
        .create(&pp, &secret("db"))
        .await
        .expect("create secret db");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "settings"},
        "data": {"MODE": "fast", "LEVEL": "debug"}
    }))
    .expect("configmap");
    config_maps
        .create(&pp, &cm)
        .await
        .expect("create configmap");
    let env_pod = |name: &str, secret: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "nodeName": node.name,
                "terminationGracePeriodSeconds": 2,
                "containers": [{
                    "name": "app",
                    "image": "localhost/busybox:latest",
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "echo arg=$(PW); env | sort; sleep 3600"],
                    "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                    "env": [
                        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}},
                        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                        {"name": "CFG_MODE", "value": "overridden-$(CFG_LEVEL)"}
                    ]
                }]
            }
        }))
        .expect("pod")
    };
    node.pods()
        .create(&pp, &env_pod("env-ok", "db"))
        .await
        .expect("create env-ok");
    node.pods()
        .create(&pp, &env_pod("env-late", "late"))
        .await
        .expect("create env-late");

    let log = wait_for(
        "env-ok's environment in its log",
        Duration::from_secs(90),
        || async { container_log(&node, "env-ok", "app").filter(|l| l.contains("HOST_IP=")) },
    )
    .await;
    let lines: Vec<&str> = log.lines().collect();
    let host_ip = format!("HOST_IP={}", node.net.address());
    for want in [
        "arg=pw-of-db",
        "PW=pw-of-db",
        "CFG_LEVEL=debug",
        "CFG_MODE=overridden-debug",
        host_ip.as_str(),
    ] {
        assert!(lines.contains(&want), "{want} not in the log:\n{log}");
    }

    // The missing secret: upstream's reason and message in the API status.
    let waiting = |p: &Pod| {
        let w = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find(|c| c.name == "app")?
            .state
            .as_ref()?
            .waiting
            .clone()?;
        Some((w.reason?, w.message.unwrap_or_default()))
    };
    let (reason, message) = wait_for(
        "env-late waiting with CreateContainerConfigError",
        Duration::from_secs(60),
        || async {
            let p = node.pods().get_opt("env-late").await.ok().flatten()?;
            waiting(&p).filter(|(r, _)| r == "CreateContainerConfigError")
        },
    )
    .await;
    assert_eq!(reason, "CreateContainerConfigError");
    assert_eq!(message, r#"secret "late" not found"#);
    // Events are written apart from the status (their own client and rate
    // limit): the Failed event may land a moment after the status.
    wait_for(
        "the Failed event of env-late",
        Duration::from_secs(30),
        || async {
            let events = node.kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=env-late,reason=Failed",
                "-o",
                "jsonpath={.items[*].message}",
            ]);
            events
                .contains(r#"Error: secret "late" not found"#)
                .then_some(())
        },
    )
    .await;

    // The secret appears: the next sync starts the container.
    secrets
        .create(&pp, &secret("late"))
        .await
        .expect("create secret late");
    wait_for("env-late Running", Duration::from_secs(90), || async {
        let p = node.pods().get_opt("env-late").await.ok().flatten()?;
        (phase(&p) == Some("Running")).then_some(())
    })
    .await;
    let log = wait_for("env-late's log", Duration::from_secs(30), || async {
        container_log(&node, "env-late", "app").filter(|l| l.contains("PW="))
    })
    .await;
    assert!(log.lines().any(|l| l == "PW=pw-of-late"), "{log}");
}

/// The resolv.conf lines of `container` in pod `pod`, read with `cat`
/// through the CRI.
async fn resolv_conf_lines(node: &ClusterNode, pod: &str) -> Vec<String> {
    let id = node.running_containers().await[&(pod.to_owned(), "app".to_owned())].clone();
    let out = node
        .cri
        .exec_sync(
            &id,
            vec!["cat".into(), "/etc/resolv.conf".into()],
            Duration::from_secs(10),
        )
        .await
        .expect("exec cat /etc/resolv.conf");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_resolv_conf_follows_their_dns_policy() {
    let Some(node) = ClusterNode::start("e2e-cluster-d").await else {
        return;
    };
    node.wait_ready("True", Duration::from_secs(60)).await;
    let pod = |name: &str, dns: serde_json::Value| -> Pod {
        let mut spec = serde_json::json!({
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "app",
                "image": "localhost/busybox:latest",
                "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
            }],
        });
        if let (Some(spec), Some(dns)) = (spec.as_object_mut(), dns.as_object()) {
            spec.extend(dns.clone());
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": spec,
        }))
        .expect("pod")
    };
    let pp = PostParams::default();
    let pods = [
        // The API server defaults dnsPolicy to ClusterFirst.
        pod("dns-cluster-first", serde_json::json!({})),
        pod(
            "dns-none",
            serde_json::json!({
                "dnsPolicy": "None",
                "dnsConfig": {
                    "nameservers": ["192.0.2.53", "192.0.2.54"],
                    "searches": ["example.test", "corp.example.test"],
                    "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
                },
            }),
        ),
        pod("dns-default", serde_json::json!({"dnsPolicy": "Default"})),
    ];
    for p in &pods {
        node.pods().create(&pp, p).await.expect("create pod");
    }
    for p in &pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        wait_for(
            &format!("{name} Running"),
            Duration::from_secs(120),
            || async {
                let p = node.pods().get_opt(&name).await.ok().flatten()?;
                (phase(&p) == Some("Running")).then_some(())
            },
        )
        .await;
    }

    // ClusterFirst: the cluster DNS server only, the cluster search path
    // first (then the host's searches), ndots:5.
    let lines = resolv_conf_lines(&node, "dns-cluster-first").await;
    let nameservers: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("nameserver"))
        .collect();
    assert_eq!(nameservers, ["nameserver 10.96.0.10"], "{lines:?}");
    let search = lines
        .iter()
        .find(|l| l.starts_with("search "))
        .expect("a search line");
    assert!(
        search.starts_with("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{lines:?}"
    );
    assert!(lines.contains(&"options ndots:5".to_owned()), "{lines:?}");

    // None with dnsConfig: exactly the pod's configuration.
    let mut lines = resolv_conf_lines(&node, "dns-none").await;
    lines.sort();
    assert_eq!(
        lines,
        [
            "nameserver 192.0.2.53",
            "nameserver 192.0.2.54",
            "options ndots:2 edns0",
            "search example.test corp.example.test",
        ],
    );

    // Default: the host's nameservers, no ndots:5 of its own.
    let host = kubelet_kuberuntime::dns::read_resolv_conf(std::path::Path::new("/etc/resolv.conf"))
        .expect("the host's resolv.conf");
    let lines = resolv_conf_lines(&node, "dns-default").await;
    let nameservers: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .map(|s| s.trim().to_owned())
        .collect();
    let want: Vec<String> = host.nameservers.iter().take(3).cloned().collect();
    assert_eq!(nameservers, want, "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("svc.cluster.local")),
        "{lines:?}"
    );

    for p in &pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        let _ = node.pods().delete(&name, &DeleteParams::default()).await;
    }
}

/// Runs `cmd` in a container through the CRI; its stdout.
async fn exec(node: &ClusterNode, id: &str, cmd: &str) -> String {
    let out = node
        .cri
        .exec_sync(
            id,
            vec!["sh".into(), "-c".into(), cmd.into()],
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("exec {cmd:?}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Secret, configMap (items, modes) and projected volumes (a service
/// account token, `kube-root-ca.crt`, downward API) hold what upstream's
/// plugins write (`pkg/volume/secret`, `configmap`, `projected`): files as
/// `key -> ..data/key` links, the modes asked for, the secret on a tmpfs,
/// all mounted read-only; the token authenticates to the API server as the
/// pod's service account, bound to the pod; an edited ConfigMap reaches the
/// volume, and a reader of one `..data` generation never sees a mix of old
/// and new keys (`atomic_writer.go`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_volumes_hold_upstreams_files_and_the_token_authenticates() {
    use k8s_openapi::api::authentication::v1::TokenReview;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let Some(node) = ClusterNode::start("e2e-cluster-vol").await else {
        return;
    };
    node.wait_ready("True", Duration::from_secs(90)).await;
    let pp = PostParams::default();
    let secrets: Api<Secret> = Api::namespaced(node.admin.clone(), "default");
    let config_maps: Api<ConfigMap> = Api::namespaced(node.admin.clone(), "default");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "creds"},
        "stringData": {"username": "admin", "password": "s3cret"}
    }))
    .expect("secret");
    secrets.create(&pp, &secret).await.expect("create secret");
    let cm = |generation: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "settings"},
            "data": {"mode": "fast", "a": generation, "b": generation}
        }))
        .expect("configmap")
    };
    config_maps
        .create(&pp, &cm("v1"))
        .await
        .expect("create configmap");
    // Reads both keys of one `..data` generation again and again; a pair
    // that differs is a torn update.
    let reader = "n=0; while true; do d=$(readlink /etc/settings/..data); \
        a=$(cat /etc/settings/$d/a 2>/dev/null); b=$(cat /etc/settings/$d/b 2>/dev/null); \
        if [ -n \"$a\" ] && [ -n \"$b\" ] && [ \"$a\" != \"$b\" ]; then echo \"$a $b\" >> /tmp/mix; fi; \
        n=$((n+1)); echo $n > /tmp/reads; sleep 0.02; done";
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vols", "namespace": "default", "labels": {"app": "vols"}},
        "spec": {
            "nodeName": node.name,
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "volumes": [
                {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                {"name": "settings", "configMap": {"name": "settings", "items": [
                    {"key": "mode", "path": "conf/mode", "mode": 0o600},
                    {"key": "a", "path": "a"}, {"key": "b", "path": "b"}]}},
                {"name": "token", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
                ]}}
            ],
            "containers": [{
                "name": "app",
                "image": "localhost/busybox:latest",
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", reader],
                "env": [
                    {"name": "CRED_USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "username"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}}
                ],
                "volumeMounts": [
                    {"name": "creds", "mountPath": "/etc/creds"},
                    {"name": "settings", "mountPath": "/etc/settings"},
                    {"name": "token", "mountPath": "/var/run/secrets/tokens"}
                ]
            }]
        }
    }))
    .expect("pod");
    node.pods().create(&pp, &pod).await.expect("create vols");
    let id = wait_for("vols running", Duration::from_secs(90), || async {
        node.running_containers()
            .await
            .remove(&("vols".to_owned(), "app".to_owned()))
    })
    .await;

    // The files, their links and modes, as upstream writes them.
    assert_eq!(exec(&node, &id, "cat /etc/creds/password").await, "s3cret");
    assert_eq!(exec(&node, &id, "cat /etc/creds/username").await, "admin");
    let listing = exec(&node, &id, "ls -a /etc/creds").await;
    let names: Vec<&str> = listing.split_whitespace().collect();
    assert!(names.contains(&"..data"), "{listing}");
    assert_eq!(
        exec(&node, &id, "readlink /etc/creds/password")
            .await
            .trim(),
        "..data/password"
    );
    let perms = |path: &'static str| {
        let node = &node;
        let id = &id;
        async move {
            let line = exec(node, id, &format!("ls -lLn {path}")).await;
            line.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        }
    };
    assert_eq!(perms("/etc/creds/password").await, "-r--------");
    assert_eq!(
        exec(&node, &id, "cat /etc/settings/conf/mode").await,
        "fast"
    );
    assert_eq!(perms("/etc/settings/conf/mode").await, "-rw-------");
    assert_eq!(perms("/etc/settings/a").await, "-rw-r--r--");
    assert_eq!(
        exec(&node, &id, "ls /etc/settings")
            .await
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["a", "b", "conf"],
        "only the items asked for"
    );
    let ca = exec(&node, &id, "cat /var/run/secrets/tokens/ca.crt").await;
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert_eq!(
        exec(&node, &id, "cat /var/run/secrets/tokens/labels").await,
        "app=\"vols\""
    );
    let mounts = exec(&node, &id, "cat /proc/mounts").await;
    let mount = |at: &str| {
        mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(at))
            .unwrap_or_else(|| panic!("{at} not mounted: {mounts}"))
            .to_owned()
    };
    for at in ["/etc/creds", "/etc/settings", "/var/run/secrets/tokens"] {
        let line = mount(at);
        let options = line.split(' ').nth(3).unwrap_or_default();
        assert!(
            options.split(',').any(|o| o == "ro"),
            "{at} not read-only: {line}"
        );
    }
    assert!(
        mount("/etc/creds").starts_with("tmpfs "),
        "the secret is on a tmpfs"
    );
    let env = exec(&node, &id, "env").await;
    for want in ["CRED_USER=admin", "MODE=fast"] {
        assert!(env.lines().any(|l| l == want), "{want} not in:\n{env}");
    }

    // The token is the pod's service account's, bound to the pod.
    let token = exec(&node, &id, "cat /var/run/secrets/tokens/token").await;
    let review: TokenReview = serde_json::from_value(serde_json::json!({
        "spec": {"token": token}
    }))
    .expect("review");
    let reviews: Api<TokenReview> = Api::all(node.admin.clone());
    let status = reviews
        .create(&pp, &review)
        .await
        .expect("TokenReview")
        .status
        .expect("review status");
    assert_eq!(status.authenticated, Some(true), "{:?}", status.error);
    let user = status.user.expect("user");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:default")
    );
    let extra = user.extra.unwrap_or_default();
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["vols".to_owned()]),
        "bound to the pod: {extra:?}"
    );

    // An edit reaches the volume, all keys at once.
    config_maps
        .replace("settings", &pp, &{
            let mut next = cm("v2");
            next.metadata.resource_version = config_maps
                .get("settings")
                .await
                .expect("get configmap")
                .metadata
                .resource_version;
            next
        })
        .await
        .expect("edit configmap");
    wait_for(
        "the edited ConfigMap in the volume",
        Duration::from_secs(150),
        || async {
            (exec(&node, &id, "cat /etc/settings/a /etc/settings/b").await == "v2v2").then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reads: u64 = exec(&node, &id, "cat /tmp/reads")
        .await
        .trim()
        .parse()
        .expect("the reader ran");
    assert!(reads > 10, "the reader ran {reads} times");
    assert_eq!(
        exec(&node, &id, "cat /tmp/mix 2>/dev/null").await,
        "",
        "a reader saw a torn update"
    );
    node.pods()
        .delete("vols", &DeleteParams::default())
        .await
        .expect("delete vols");
    wait_for("vols gone", Duration::from_secs(60), || async {
        node.pods()
            .get_opt("vols")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
}

/// The node API as a cluster uses it (upstream `pkg/kubelet/server`): TLS
/// with a certificate the API server trusts, the API server's client
/// certificate authenticated and authorized through SubjectAccessReview,
/// so `kubectl logs` and the API server's node proxy work; a request
/// without credentials is `401`, a service account without rights `403`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_api_serves_the_api_server_and_refuses_strangers() {
    let Some(node) = ClusterNode::start("e2e-cluster-api").await else {
        return;
    };
    node.wait_ready("True", Duration::from_secs(90)).await;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "talker", "namespace": "default"},
        "spec": {
            "nodeName": node.name,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app",
                "image": "localhost/busybox:latest",
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo hello-from-talker; exec sleep 3600"]
            }]
        }
    }))
    .expect("pod");
    node.pods()
        .create(&PostParams::default(), &pod)
        .await
        .expect("create talker");
    wait_for("talker running", Duration::from_secs(90), || async {
        node.running_containers()
            .await
            .remove(&("talker".to_owned(), "app".to_owned()))
    })
    .await;

    // kubectl logs: API server -> kubelet /containerLogs, with its client
    // certificate, authorized by SubjectAccessReview.
    let logs = wait_for("kubectl logs talker", Duration::from_secs(30), || async {
        node.cp
            .kubectl(&["logs", "talker"])
            .ok()
            .filter(|l| l.contains("hello-from-talker"))
    })
    .await;
    assert_eq!(logs, "hello-from-talker\n");
    // kubectl exec: API server -> kubelet /exec, upgraded and proxied to
    // containerd's streaming server; stdout and stderr come back apart.
    let out = node.kubectl(&[
        "exec",
        "talker",
        "--",
        "sh",
        "-c",
        "echo out-$((6*7)); echo err >&2",
    ]);
    assert_eq!(out, "out-42\n");
    let failed = node
        .cp
        .kubectl(&["exec", "talker", "--", "sh", "-c", "exit 3"])
        .expect_err("exit 3");
    assert!(
        failed.contains("exit code 3") || failed.contains("status 3"),
        "{failed}"
    );
    // The node proxy: /pods through the API server.
    let pods = node.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/pods", node.name),
    ]);
    assert!(pods.contains("\"talker\""), "{pods}");

    // Straight to the node API: no credentials, and a token of a service
    // account with no rights.
    let direct = |token: Option<String>| {
        let mut config = kube::Config::new(
            format!("https://{}:{}", node.net.address(), node.port)
                .parse()
                .expect("url"),
        );
        config.accept_invalid_certs = true;
        if let Some(t) = token {
            config.auth_info.token = Some(t.into());
        }
        kube::Client::try_from(config).expect("client")
    };
    let status_of = |r: Result<String, kube::Error>| match r {
        Ok(body) => panic!("served: {body}"),
        Err(kube::Error::Api(e)) => e.code,
        Err(e) => panic!("{e}"),
    };
    let anonymous = direct(None)
        .request_text(http::Request::get("/pods").body(Vec::new()).expect("req"))
        .await;
    assert_eq!(status_of(anonymous), 401);
    node.kubectl(&["create", "serviceaccount", "nobody"]);
    let token = node
        .kubectl(&["create", "token", "nobody"])
        .trim()
        .to_owned();
    let nobody = direct(Some(token.clone()));
    for path in [
        "/pods",
        "/containerLogs/default/talker/app",
        "/stats/summary",
    ] {
        let r = nobody
            .request_text(http::Request::get(path).body(Vec::new()).expect("req"))
            .await;
        assert_eq!(status_of(r), 403, "{path}");
    }
    let stolen = direct(Some(format!("{token}x")))
        .request_text(http::Request::get("/pods").body(Vec::new()).expect("req"))
        .await;
    assert_eq!(status_of(stolen), 401);
}

/// What `kubectl debug --target` does, against a real API server: an
/// ephemeral container added through the `pods/ephemeralcontainers`
/// subresource reaches the kubelet as an UPDATE, runs in the pod's
/// sandbox and in its target's PID namespace (its `ps` shows the target's
/// `sleep`), shows in `ephemeralContainerStatuses` running then
/// terminated with its exit code, and is not restarted (upstream
/// `computePodActions`, `SyncPod` step 5, `getTargetID`,
/// `convertToAPIContainerStatuses`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ephemeral_container_debugs_its_target_once() {
    let Some(node) = ClusterNode::start("e2e-cluster-dbg").await else {
        return;
    };
    node.wait_ready("True", Duration::from_secs(90)).await;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "debugged", "namespace": "default"},
        "spec": {
            "nodeName": node.name,
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "app",
                "image": "localhost/busybox:latest",
                "imagePullPolicy": "Never",
                "command": ["sleep", "3600"]
            }]
        }
    }))
    .expect("pod");
    node.pods()
        .create(&PostParams::default(), &pod)
        .await
        .expect("create debugged");
    wait_for("debugged Running", Duration::from_secs(90), || async {
        let p = node.pods().get_opt("debugged").await.ok().flatten()?;
        (phase(&p) == Some("Running")).then_some(())
    })
    .await;

    let patch = serde_json::json!({
        "spec": {"ephemeralContainers": [{
            "name": "debug",
            "image": "localhost/busybox:latest",
            "imagePullPolicy": "Never",
            "targetContainerName": "app",
            "command": ["sh", "-c", "ps -o pid,args; sleep 8; exit 3"],
            "terminationMessagePolicy": "File"
        }]}
    });
    node.pods()
        .patch_ephemeral_containers(
            "debugged",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .expect("add the ephemeral container");

    let ephemeral_state = |p: &Pod| {
        p.status
            .as_ref()?
            .ephemeral_container_statuses
            .as_ref()?
            .iter()
            .find(|c| c.name == "debug")
            .cloned()
    };
    let running = wait_for(
        "debug running in ephemeralContainerStatuses",
        Duration::from_secs(60),
        || async {
            let p = node.pods().get_opt("debugged").await.ok().flatten()?;
            ephemeral_state(&p).filter(|s| s.state.as_ref().is_some_and(|s| s.running.is_some()))
        },
    )
    .await;
    assert!(!running.ready, "ephemeral containers are never ready");
    assert_eq!(running.restart_count, 0);

    // In the pod's sandbox, beside the app.
    let containers = node.cri.list_containers(None).await.expect("list");
    let of = |name: &str| {
        containers
            .iter()
            .filter(|c| {
                c.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some("debugged")
                    && c.metadata.as_ref().is_some_and(|m| m.name == name)
            })
            .map(|c| (c.id.clone(), c.pod_sandbox_id.clone()))
            .collect::<Vec<_>>()
    };
    let (app, debug) = (of("app"), of("debug"));
    assert_eq!(app.len(), 1, "{app:?}");
    assert_eq!(debug.len(), 1, "{debug:?}");
    assert_eq!(app[0].1, debug[0].1, "same sandbox");
    assert_eq!(
        running.container_id.as_deref(),
        Some(format!("containerd://{}", debug[0].0).as_str())
    );

    // In the target's PID namespace: the app's sleep is PID 1 there.
    let log = wait_for("debug's ps output", Duration::from_secs(30), || async {
        container_log(&node, "debugged", "debug").filter(|l| l.contains("sleep 3600"))
    })
    .await;
    assert!(
        log.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "sleep", "3600"]),
        "the target's sleep is not PID 1 in:\n{log}"
    );

    // It exits 3: terminated with that code, and never restarted.
    let done = wait_for(
        "debug terminated in ephemeralContainerStatuses",
        Duration::from_secs(60),
        || async {
            let p = node.pods().get_opt("debugged").await.ok().flatten()?;
            ephemeral_state(&p)?
                .state?
                .terminated
                .map(|t| (t.exit_code, p))
        },
    )
    .await;
    assert_eq!(done.0, 3);
    assert_eq!(phase(&done.1), Some("Running"), "the pod runs on");
    assert_eq!(condition(&done.1, "Ready").as_deref(), Some("True"));
    // Several syncs later (housekeeping every 500 ms): still the one run.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let containers = node.cri.list_containers(None).await.expect("list");
    let debug_runs = containers
        .iter()
        .filter(|c| {
            c.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some("debugged")
                && c.metadata.as_ref().is_some_and(|m| m.name == "debug")
        })
        .count();
    assert_eq!(debug_runs, 1, "the ephemeral container was restarted");
    let p = node.pods().get("debugged").await.expect("get debugged");
    let last = ephemeral_state(&p).expect("status");
    assert_eq!(last.restart_count, 0);
    assert_eq!(
        last.state.and_then(|s| s.terminated).map(|t| t.exit_code),
        Some(3)
    );
    assert_eq!(
        node.running_containers()
            .await
            .get(&("debugged".to_owned(), "app".to_owned())),
        Some(&app[0].0),
        "the target was not touched"
    );
}

/// Every container of API pod `pod` the CRI knows, running or exited:
/// (container name, ID, state, finishedAt in ns).
async fn pod_containers(node: &ClusterNode, pod: &str) -> Vec<(String, String, i32, i64)> {
    let mut out = Vec::new();
    let Ok(list) = node.cri.list_containers(None).await else {
        return out;
    };
    for c in list {
        if c.labels.get("io.kubernetes.pod.name").map(String::as_str) != Some(pod) {
            continue;
        }
        let Some(name) = c.metadata.as_ref().map(|m| m.name.clone()) else {
            continue;
        };
        let finished = match node.cri.container_status(&c.id, false).await {
            Ok(r) => r.status.map_or(0, |s| s.finished_at),
            Err(_) => continue,
        };
        out.push((name, c.id.clone(), c.state, finished));
    }
    out
}

/// Native sidecars (KEP-753, upstream `computeInitContainerActions` and
/// `terminationOrdering`) on a real cluster: the sidecar starts first and
/// passes its startup probe, then the app container starts; both run,
/// and the pod is Initialized and Ready with the sidecar's status
/// `started` and `ready`. A sidecar stopped through the CRI is restarted
/// alone (its restart count rises, the app container is untouched).
/// Deleting the pod stops the app container before the sidecar, though
/// the app container takes 3 s to exit and the sidecar less than 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sidecars_run_beside_the_app_restart_alone_and_stop_last() {
    let Some(node) = ClusterNode::start("e2e-cluster-sidecar").await else {
        return;
    };
    node.wait_ready("True", Duration::from_secs(90)).await;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "with-sidecar", "namespace": "default"},
        "spec": {
            "nodeName": node.name,
            "terminationGracePeriodSeconds": 20,
            "initContainers": [{
                "name": "sidecar",
                "image": "localhost/busybox:latest",
                "imagePullPolicy": "Never",
                "restartPolicy": "Always",
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                "startupProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}
            }],
            "containers": [{
                "name": "app",
                "image": "localhost/busybox:latest",
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "trap 'sleep 3; exit 0' TERM; while true; do sleep 1; done"]
            }]
        }
    }))
    .expect("pod");
    node.pods()
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");

    let init_status = |p: &Pod| {
        p.status
            .as_ref()?
            .init_container_statuses
            .as_ref()?
            .first()
            .cloned()
    };
    let ready = wait_for(
        "with-sidecar Running and Ready",
        Duration::from_secs(90),
        || async {
            let p = node.pods().get_opt("with-sidecar").await.ok().flatten()?;
            (phase(&p) == Some("Running") && condition(&p, "Ready").as_deref() == Some("True"))
                .then_some(p)
        },
    )
    .await;
    assert_eq!(condition(&ready, "Initialized").as_deref(), Some("True"));
    assert_eq!(
        condition(&ready, "ContainersReady").as_deref(),
        Some("True")
    );
    let side = init_status(&ready).expect("sidecar status");
    assert!(
        side.state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some(),
        "{side:?}"
    );
    assert_eq!((side.started, side.ready), (Some(true), true), "{side:?}");
    let running = node.running_containers().await;
    let key = |c: &str| ("with-sidecar".to_owned(), c.to_owned());
    let sidecar_id = running.get(&key("sidecar")).cloned().expect("sidecar runs");
    let app_id = running.get(&key("app")).cloned().expect("app runs");

    // The sidecar is stopped behind the kubelet's back: only it restarts.
    node.cri
        .stop_container(&sidecar_id, Duration::from_secs(5))
        .await
        .expect("stop the sidecar");
    let restarted = wait_for("the sidecar restarted", Duration::from_secs(60), || async {
        let p = node.pods().get_opt("with-sidecar").await.ok().flatten()?;
        let s = init_status(&p)?;
        let new_id = node
            .running_containers()
            .await
            .get(&key("sidecar"))
            .cloned()?;
        (s.restart_count >= 1 && new_id != sidecar_id && s.state.as_ref()?.running.is_some())
            .then_some((p, new_id))
    })
    .await;
    let (p, new_sidecar_id) = restarted;
    assert_eq!(
        node.running_containers().await.get(&key("app")),
        Some(&app_id),
        "the app container kept running"
    );
    let app_status = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|v| v.first())
        .cloned()
        .expect("app status");
    assert_eq!(app_status.restart_count, 0);
    assert!(
        app_status
            .container_id
            .as_deref()
            .is_some_and(|id| id.ends_with(&app_id)),
        "{app_status:?}"
    );

    // Deletion: the app container stops first, then the sidecar.
    node.pods()
        .delete("with-sidecar", &DeleteParams::default())
        .await
        .expect("delete pod");
    let mut finished: BTreeMap<String, i64> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline
        && !(finished.contains_key(&app_id) && finished.contains_key(&new_sidecar_id))
    {
        for (_, id, state, at) in pod_containers(&node, "with-sidecar").await {
            // CONTAINER_EXITED
            if state == 2 && at > 0 {
                finished.insert(id, at);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app_done = finished
        .get(&app_id)
        .copied()
        .expect("the app container exited");
    let sidecar_done = finished
        .get(&new_sidecar_id)
        .copied()
        .expect("the sidecar exited");
    assert!(
        app_done < sidecar_done,
        "app finished at {app_done}, sidecar at {sidecar_done}"
    );
    wait_for("with-sidecar gone", Duration::from_secs(60), || async {
        node.pods()
            .get_opt("with-sidecar")
            .await
            .ok()
            .map(|p| p.is_none())
            .filter(|gone| *gone)
    })
    .await;
}

/// The watch-based configMap manager and the periodic sync together
/// (upstream: a changed ConfigMap reaches a pod's volume on the pod's
/// next sync, `syncFrequency` plus jitter, from the manager's watch), and
/// the service env variables (upstream `getServiceEnvVarMap`): the
/// master service `kubernetes` and a Service created in the pod's
/// namespace before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_map_edits_reach_mounted_volumes_and_services_reach_env() {
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    const SYNC: Duration = Duration::from_secs(4);
    let Some(node) = ClusterNode::start_configured("e2e-cluster-objcache", 110, "4s").await else {
        return;
    };
    node.wait_ready("True", Duration::from_secs(90)).await;
    let pp = PostParams::default();
    let services: Api<Service> = Api::namespaced(node.admin.clone(), "default");
    let backend: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "backend"},
        "spec": {"ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
    }))
    .expect("service");
    let backend_ip = services
        .create(&pp, &backend)
        .await
        .expect("create service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a cluster IP");
    let master_ip = wait_for(
        "the kubernetes service",
        Duration::from_secs(30),
        || async {
            services
                .get_opt("kubernetes")
                .await
                .ok()
                .flatten()?
                .spec?
                .cluster_ip
        },
    )
    .await;
    let config_maps: Api<ConfigMap> = Api::namespaced(node.admin.clone(), "default");
    let cm = |greeting: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app-config"},
            "data": {"greeting": greeting}
        }))
        .expect("configmap")
    };
    config_maps
        .create(&pp, &cm("hello"))
        .await
        .expect("create configmap");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "cm-watch", "namespace": "default"},
        "spec": {
            "nodeName": node.name,
            "terminationGracePeriodSeconds": 2,
            "automountServiceAccountToken": false,
            "volumes": [{"name": "config", "configMap": {"name": "app-config"}}],
            "containers": [{
                "name": "app",
                "image": "localhost/busybox:latest",
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "env | sort; sleep 3600"],
                "env": [{"name": "BACKEND_SERVICE_PORT", "value": "mine"}],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]
            }]
        }
    }))
    .expect("pod");
    let uid = node
        .pods()
        .create(&pp, &pod)
        .await
        .expect("create pod")
        .metadata
        .uid
        .expect("uid");
    let log = wait_for(
        "cm-watch's environment",
        Duration::from_secs(90),
        || async { container_log(&node, "cm-watch", "app").filter(|l| l.contains("HOSTNAME=")) },
    )
    .await;
    let lines: Vec<&str> = log.lines().collect();
    for want in [
        format!("KUBERNETES_SERVICE_HOST={master_ip}"),
        "KUBERNETES_SERVICE_PORT=443".to_owned(),
        format!("KUBERNETES_PORT=tcp://{master_ip}:443"),
        format!("BACKEND_SERVICE_HOST={backend_ip}"),
        "BACKEND_SERVICE_PORT_HTTP=8080".to_owned(),
        format!("BACKEND_PORT=tcp://{backend_ip}:8080"),
        format!("BACKEND_PORT_8080_TCP_ADDR={backend_ip}"),
        // The pod's own variable wins over the service's.
        "BACKEND_SERVICE_PORT=mine".to_owned(),
    ] {
        assert!(
            lines.contains(&want.as_str()),
            "{want} not in the env:\n{log}"
        );
    }

    // The mounted file, read in the container.
    let read_greeting = || async {
        let id = node
            .running_containers()
            .await
            .get(&("cm-watch".to_owned(), "app".to_owned()))?
            .clone();
        let out = node
            .cri
            .exec_sync(
                &id,
                vec!["cat".into(), "/etc/app/greeting".into()],
                Duration::from_secs(10),
            )
            .await
            .ok()?;
        (out.exit_code == 0).then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(
        wait_for("the greeting", Duration::from_secs(30), || async {
            read_greeting().await
        })
        .await,
        "hello"
    );
    let data_link = node
        .root
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~configmap/config/..data");
    let before = std::fs::read_link(&data_link).expect("..data is a symlink");

    // The edit: seen by the kubelet's watch, written on the pod's next
    // periodic sync (syncFrequency 4 s, up to 6 s with the jitter).
    config_maps
        .replace("app-config", &pp, &{
            let mut c = config_maps.get("app-config").await.expect("get configmap");
            c.data = Some([("greeting".to_owned(), "goodbye".to_owned())].into());
            c
        })
        .await
        .expect("edit configmap");
    let edited = std::time::Instant::now();
    wait_for("the new greeting in the container", SYNC * 5, || async {
        read_greeting().await.filter(|g| g == "goodbye")
    })
    .await;
    let delay = edited.elapsed();
    println!("configmap edit reached the container after {delay:?} (syncFrequency {SYNC:?})");
    assert!(
        delay <= SYNC * 3 / 2 + Duration::from_secs(3),
        "the edit took {delay:?}, more than syncFrequency × 1.5 and the write"
    );
    let after = std::fs::read_link(&data_link).expect("..data is a symlink");
    assert_ne!(before, after, "the atomic writer swapped ..data");

    // The pod goes: its references go with it (no watch left behind is
    // checked by the unit tests; here the pod's volume directory goes).
    node.pods()
        .delete("cm-watch", &Default::default())
        .await
        .expect("delete pod");
    wait_for("cm-watch gone", Duration::from_secs(60), || async {
        node.pods()
            .get_opt("cm-watch")
            .await
            .ok()
            .map(|p| p.is_none().then_some(()))?
    })
    .await;
}

/// A `kubectl` child with the admin kubeconfig, its stdin and stdout piped.
fn kubectl_child(node: &ClusterNode, args: &[&str]) -> std::process::Child {
    std::process::Command::new(node.cp.kubectl_path())
        .arg("--kubeconfig")
        .arg(node.cp.admin_kubeconfig())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

/// Lines of a child's stdout, each with when it arrived, on a thread.
fn lines_of(
    child: &mut std::process::Child,
) -> std::sync::mpsc::Receiver<(std::time::Instant, String)> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((std::time::Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line that contains `want`, within `limit`.
fn next_line_with(
    lines: &std::sync::mpsc::Receiver<(std::time::Instant, String)>,
    want: &str,
    limit: Duration,
) -> (std::time::Instant, String) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok((at, line)) if line.contains(want) => return (at, line),
            Ok(_) => {}
            Err(e) => panic!("no line with {want:?} within {limit:?}: {e}"),
        }
    }
}

/// Stops a kubectl child and reaps it.
fn stop_child(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// What users do with `kubectl` against a node, through the API server and
/// this kubelet's node API (upstream `pkg/kubelet/server/server.go`):
/// `logs -f` while lines are written, `exec` with stdin, `attach` to a
/// container's stdin and stdout, `port-forward` to a busybox httpd, `run -i
/// --rm`, and `/run`, `/metrics/resource` and `/metrics/probes` through the
/// node proxy. Then the refusals a namespaced user meets: with
/// `pods/exec` in its own namespace only, the kubelet answers 403 to its
/// exec into a pod of another namespace (node subresources are
/// cluster-scoped, so no namespaced role can grant them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_streams_through_the_node_api() {
    use std::io::Write;
    let Some(node) = ClusterNode::start("e2e-cluster-kctl").await else {
        return;
    };
    node.wait_ready("True", Duration::from_secs(90)).await;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "streams", "namespace": "default"},
        "spec": {
            "nodeName": node.name,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "ticker",
                    "image": "localhost/busybox:latest",
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c",
                        "i=0; while true; do echo tick-$i-$(date +%s); i=$((i+1)); sleep 1; done"]
                },
                {
                    "name": "echo",
                    "image": "localhost/busybox:latest",
                    "imagePullPolicy": "Never",
                    "stdin": true,
                    "command": ["sh", "-c", "while read l; do echo echo-$l; done"]
                },
                {
                    "name": "web",
                    "image": "localhost/busybox:latest",
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c",
                        "mkdir -p /www && echo served-by-httpd > /www/index.html && exec httpd -f -p 8080 -h /www"],
                    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}
                }
            ]
        }
    }))
    .expect("pod");
    node.pods()
        .create(&PostParams::default(), &pod)
        .await
        .expect("create streams");
    wait_for("streams Ready", Duration::from_secs(90), || async {
        let p = node.pods().get_opt("streams").await.ok().flatten()?;
        (condition(&p, "Ready").as_deref() == Some("True")).then_some(())
    })
    .await;

    // kubectl logs -f: lines arrive while they are written, a second apart
    // (what was written before the follow started comes at once).
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    };
    let tick = |line: &str| -> (u64, u64) {
        let mut parts = line.trim().split('-').skip(1);
        let n = parts.next().and_then(|n| n.parse().ok());
        let ts = parts.next().and_then(|n| n.parse().ok());
        n.zip(ts).unwrap_or_else(|| panic!("bad tick {line:?}"))
    };
    let started = unix_now();
    let mut follow = kubectl_child(&node, &["logs", "-f", "streams", "-c", "ticker"]);
    let lines = lines_of(&mut follow);
    let (a, n) = loop {
        let (at, line) = next_line_with(&lines, "tick-", Duration::from_secs(30));
        let (n, written) = tick(&line);
        if written >= started + 2 {
            break (at, n);
        }
    };
    let (b, line) = next_line_with(&lines, &format!("tick-{}-", n + 2), Duration::from_secs(15));
    assert!(
        b.duration_since(a) >= Duration::from_millis(1200),
        "two ticks written 2 s apart arrived {:?} apart: not streamed",
        b.duration_since(a)
    );
    let (_, written) = tick(&line);
    let now = unix_now();
    assert!(
        now.saturating_sub(written) <= 5,
        "a line written at {written} arrived at {now}"
    );
    assert!(follow.try_wait().expect("wait").is_none(), "logs -f ended");
    stop_child(follow);

    // kubectl exec: the pod's hostname, and stdin with -i.
    assert_eq!(
        node.kubectl(&[
            "exec",
            "streams",
            "-c",
            "ticker",
            "--",
            "sh",
            "-c",
            "echo $HOSTNAME"
        ]),
        "streams\n"
    );
    let mut exec = kubectl_child(
        &node,
        &[
            "exec",
            "-i",
            "streams",
            "-c",
            "ticker",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z",
        ],
    );
    exec.stdin
        .take()
        .expect("stdin")
        .write_all(b"shout from stdin\n")
        .expect("write stdin");
    let out = exec.wait_with_output().expect("exec -i");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SHOUT FROM STDIN\n");

    // kubectl attach -i: to the echo container's own stdin and stdout.
    let mut attach = kubectl_child(&node, &["attach", "-i", "streams", "-c", "echo"]);
    let lines = lines_of(&mut attach);
    let mut stdin = attach.stdin.take().expect("stdin");
    // The session may take a moment to be wired: say it until it answers.
    let got = wait_for("attach echoes", Duration::from_secs(30), || {
        let _ = stdin.write_all(b"marco\n");
        let _ = stdin.flush();
        let got = lines
            .recv_timeout(Duration::from_secs(1))
            .ok()
            .filter(|(_, l)| l.contains("echo-marco"))
            .map(|(_, l)| l);
        async move { got }
    })
    .await;
    assert_eq!(got, "echo-marco");
    drop(stdin);
    stop_child(attach);

    // kubectl port-forward to busybox httpd in the pod.
    let mut forward = kubectl_child(&node, &["port-forward", "pod/streams", ":8080"]);
    let lines = lines_of(&mut forward);
    let (_, line) = next_line_with(
        &lines,
        "Forwarding from 127.0.0.1:",
        Duration::from_secs(30),
    );
    let port: u16 = line
        .trim_start_matches("Forwarding from 127.0.0.1:")
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("port in {line:?}"));
    let body = wait_for(
        "httpd through port-forward",
        Duration::from_secs(20),
        || async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            s.write_all(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")
                .await
                .ok()?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.ok()?;
            let text = String::from_utf8_lossy(&buf).into_owned();
            text.contains("served-by-httpd").then_some(text)
        },
    )
    .await;
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    stop_child(forward);

    // kubectl run -it --rm, on a terminal (`script` gives kubectl a pty):
    // scheduled here, attached with a TTY, then deleted.
    let command = format!(
        "{} --kubeconfig {} run oneshot -it --rm --restart=Never \
         --image=localhost/busybox:latest --image-pull-policy=Never \
         -- sh -c 'read x; echo ran-$x-$(tty)'",
        node.cp.kubectl_path().display(),
        node.cp.admin_kubeconfig().display()
    );
    let mut run = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script");
    let lines = lines_of(&mut run);
    let mut stdin = run.stdin.take().expect("stdin");
    let (_, line) = wait_for("kubectl run -it answers", Duration::from_secs(90), || {
        let _ = stdin.write_all(b"abc\n");
        let _ = stdin.flush();
        let got = lines
            .recv_timeout(Duration::from_secs(1))
            .ok()
            .filter(|(_, l)| l.contains("ran-abc-"));
        async move { got }
    })
    .await;
    assert!(line.contains("ran-abc-/dev/pts/"), "not a TTY: {line:?}");
    let _ = run.wait();
    drop(stdin);
    wait_for("oneshot deleted", Duration::from_secs(60), || async {
        node.pods()
            .get_opt("oneshot")
            .await
            .ok()
            .and_then(|p| p.is_none().then_some(()))
    })
    .await;

    // Through the node proxy: /run, /metrics/resource, /metrics/probes.
    let proxy = |path: &str| format!("/api/v1/nodes/{}/proxy{path}", node.name);
    let ran = node
        .admin
        .request_text(
            http::Request::post(proxy("/run/default/streams/ticker?cmd=echo%20run-works"))
                .body(Vec::new())
                .expect("req"),
        )
        .await
        .expect("POST /run");
    assert_eq!(ran, "run-works\n");
    let resource = wait_for(
        "the pod in /metrics/resource",
        Duration::from_secs(60),
        || async {
            let text = node
                .cp
                .kubectl(&["get", "--raw", &proxy("/metrics/resource")])
                .ok()?;
            text.lines()
                .any(|l| {
                    l.starts_with("container_memory_working_set_bytes{")
                        && l.contains("container=\"ticker\"")
                        && l.contains("pod=\"streams\"")
                })
                .then_some(text)
        },
    )
    .await;
    for name in [
        "node_cpu_usage_seconds_total",
        "node_memory_working_set_bytes",
        "container_cpu_usage_seconds_total",
        "container_start_time_seconds",
        "pod_memory_working_set_bytes",
    ] {
        assert!(
            resource.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{resource}"
        );
    }
    let probes = node.kubectl(&["get", "--raw", &proxy("/metrics/probes")]);
    assert!(
        probes.lines().any(|l| l.starts_with("prober_probe_total{")
            && l.contains("container=\"web\"")
            && l.contains("probe_type=\"Readiness\"")
            && l.contains("result=\"successful\"")),
        "{probes}"
    );

    // A namespaced user: pods/exec in team-a only. The API server refuses
    // its exec into default; straight to the kubelet, 403 too.
    node.kubectl(&["create", "namespace", "team-a"]);
    node.kubectl(&["-n", "team-a", "create", "serviceaccount", "dev"]);
    node.kubectl(&[
        "-n",
        "team-a",
        "create",
        "role",
        "exec",
        "--verb=get,create",
        "--resource=pods,pods/exec",
    ]);
    node.kubectl(&[
        "-n",
        "team-a",
        "create",
        "rolebinding",
        "dev-exec",
        "--role=exec",
        "--serviceaccount=team-a:dev",
    ]);
    let token = node
        .kubectl(&["-n", "team-a", "create", "token", "dev"])
        .trim()
        .to_owned();
    let dev_kubeconfig = node.root.join("dev.kubeconfig");
    std::fs::write(
        &dev_kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: dev\n  user:\n    token: {token}\ncontexts:\n- name: dev\n  context: {{cluster: c, user: dev}}\ncurrent-context: dev\n",
            node.cp.server(),
            node.cp.ca_cert().display()
        ),
    )
    .expect("dev kubeconfig");
    assert!(
        node.cp
            .kubectl_as(
                &dev_kubeconfig,
                &["-n", "team-a", "auth", "can-i", "create", "pods/exec"]
            )
            .is_ok_and(|o| o.trim() == "yes"),
        "dev may exec in team-a"
    );
    let refused = node
        .cp
        .kubectl_as(
            &dev_kubeconfig,
            &["exec", "streams", "-c", "ticker", "--", "id"],
        )
        .expect_err("exec into default");
    assert!(refused.contains("forbidden"), "{refused}");
    let mut config = kube::Config::new(
        format!("https://{}:{}", node.net.address(), node.port)
            .parse()
            .expect("url"),
    );
    config.accept_invalid_certs = true;
    config.auth_info.token = Some(token.into());
    let dev = kube::Client::try_from(config).expect("client");
    for (method, path) in [
        ("POST", "/exec/default/streams/ticker?command=id&output=1"),
        ("POST", "/run/default/streams/ticker?cmd=id"),
        ("GET", "/portForward/default/streams"),
        ("GET", "/containerLogs/default/streams/ticker"),
    ] {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .body(Vec::new())
            .expect("req");
        match dev.request_text(req).await {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{method} {path}"),
            other => panic!("{method} {path}: {other:?}"),
        }
    }
}
