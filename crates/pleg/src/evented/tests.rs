//! The status an event produces, and event timestamps.

use kubelet_container::RunningPod;

use super::*;

/// A runtime that holds no pods and builds a container's status from the
/// CRI's as the runtime manager does for what these tests look at (ID,
/// name, state, times, exit code).
struct Reader;

#[async_trait]
impl RuntimeReader for Reader {
    async fn get_pods(&self, _all: bool) -> Result<Vec<RunningPod>, kubelet_container::Error> {
        Ok(Vec::new())
    }

    async fn get_pod_status(
        &self,
        uid: &str,
        name: &str,
        namespace: &str,
    ) -> Result<PodStatus, kubelet_container::Error> {
        Ok(PodStatus {
            uid: uid.into(),
            name: name.into(),
            namespace: namespace.into(),
            ..PodStatus::default()
        })
    }

    fn container_status_from_cri(&self, s: &api::ContainerStatus) -> ContainerStatus {
        ContainerStatus {
            id: s.id.clone(),
            name: s
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            state: s.state().into(),
            created_at: s.created_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            exit_code: s.exit_code,
            image: String::new(),
            image_ref: s.image_ref.clone(),
            hash: None,
            restart_count: 0,
            reason: s.reason.clone(),
            message: s.message.clone(),
            container_type: kubelet_container::ContainerType::Regular,
            pod_termination_grace_period: None,
        }
    }
}

fn sandbox(id: &str, ready: bool, created_at: i64, ip: &str) -> api::PodSandboxStatus {
    api::PodSandboxStatus {
        id: id.into(),
        metadata: Some(api::PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid-1".into(),
            attempt: 0,
        }),
        state: if ready {
            api::PodSandboxState::SandboxReady
        } else {
            api::PodSandboxState::SandboxNotready
        } as i32,
        created_at,
        network: Some(api::PodSandboxNetworkStatus {
            ip: ip.into(),
            additional_ips: Vec::new(),
        }),
        ..Default::default()
    }
}

fn container(id: &str, state: api::ContainerState, created_at: i64) -> api::ContainerStatus {
    api::ContainerStatus {
        id: id.into(),
        metadata: Some(api::ContainerMetadata {
            name: format!("name-{id}"),
            attempt: 0,
        }),
        state: state as i32,
        created_at,
        exit_code: if state == api::ContainerState::ContainerExited {
            3
        } else {
            0
        },
        ..Default::default()
    }
}

fn event(
    kind: ContainerEventType,
    id: &str,
    sandbox: Option<api::PodSandboxStatus>,
    containers: Vec<api::ContainerStatus>,
) -> ContainerEventResponse {
    ContainerEventResponse {
        container_id: id.into(),
        container_event_type: kind as i32,
        created_at: 0,
        pod_sandbox_status: sandbox,
        containers_statuses: containers,
    }
}

#[tokio::test(start_paused = true)]
async fn event_times_map_to_instants_by_one_offset() {
    let base = ClockBase::now();
    let wall = |d: i64| {
        i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_nanos(),
        )
        .expect("nanos")
            + d
    };
    let now = Instant::now();
    let at = base.instant_of(wall(-5_000_000_000));
    let age = now - at;
    assert!(
        age >= Duration::from_millis(4900) && age < Duration::from_secs(6),
        "{age:?}"
    );
    // Order is kept between two events, however late they are read.
    let (a, b) = (wall(-2_000_000), wall(-1_000_000));
    assert!(base.instant_of(a) < base.instant_of(b));
    assert_eq!(base.instant_of(-1), now);
    assert_eq!(base.instant_of(i64::MAX), now, "the future is now");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(base.instant_of(wall(0)) <= Instant::now());
}

#[tokio::test(start_paused = true)]
async fn stale_events_change_nothing_and_send_nothing() {
    let fake = kubelet_cri_client::FakeRuntime::new();
    let cache = Arc::new(PodCache::new());
    let pleg = EventedPleg::new(
        Arc::new(Reader),
        Arc::new(fake),
        cache.clone(),
        EventedConfig::default(),
    );
    let mut rx = pleg.watch().expect("receiver");
    let base = ClockBase::now();
    let wall_now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos(),
    )
    .expect("nanos");
    let mut sb = sandbox("s1", true, 1, "10.0.0.5");
    sb.labels
        .insert(kubelet_container::pod::POD_UID_LABEL.into(), "uid-1".into());
    let mut stopped = event(
        ContainerEventType::ContainerStoppedEvent,
        "c1",
        Some(sb.clone()),
        vec![container("c1", api::ContainerState::ContainerExited, 2)],
    );
    stopped.created_at = wall_now - 1_000_000_000;
    // The cache already holds something newer (a relist, say).
    cache.set("uid-1", Ok(Arc::new(PodStatus::default())), Instant::now());
    pleg.inner.process(&stopped, &base);
    assert!(rx.try_recv().is_err(), "stale: nothing sent");
    assert!(
        cache
            .get("uid-1")
            .expect("status")
            .container_statuses
            .is_empty()
    );
    // A newer one is taken and sent.
    tokio::time::advance(Duration::from_secs(1)).await;
    let base = ClockBase::now();
    stopped.created_at = wall_now + 1;
    pleg.inner.process(&stopped, &base);
    let e = rx.try_recv().expect("event");
    assert_eq!(
        (e.pod_uid.as_str(), e.kind, e.data.as_str()),
        ("uid-1", PodLifecycleEventType::ContainerDied, "c1")
    );
    assert_eq!(
        cache.get("uid-1").expect("status").container_statuses.len(),
        1
    );
    // No sandbox status and a container nobody knows: dropped.
    let orphan = event(
        ContainerEventType::ContainerDeletedEvent,
        "zzz",
        None,
        vec![],
    );
    pleg.inner.process(&orphan, &base);
    assert!(rx.try_recv().is_err());
    // No sandbox status, but the cache knows the container: attributed.
    let mut deleted = event(
        ContainerEventType::ContainerDeletedEvent,
        "c1",
        None,
        vec![],
    );
    deleted.created_at = wall_now + 2;
    pleg.inner.process(&deleted, &base);
    let kinds: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            PodLifecycleEventType::ContainerDied,
            PodLifecycleEventType::ContainerRemoved
        ]
    );
    // The sandbox deleted too: nothing left, the entry goes.
    let mut gone = event(
        ContainerEventType::ContainerDeletedEvent,
        "s1",
        Some(sb),
        vec![],
    );
    gone.created_at = wall_now + 3;
    pleg.inner.process(&gone, &base);
    assert!(cache.is_empty());
}
