//! Benchmarks of the pod workers (issue 4):
//!
//! - `updates/1000x100`: 1,000 pods each receiving 100 updates against a
//!   no-op syncer and an always-fresh cache, timed from the first update
//!   until every worker has synced the newest version of its pod. Reported
//!   per update (throughput in elements = updates).
//! - `update_pod_call`: the caller-side cost of one `update_pod` call while
//!   the workers run.
//! - `pods_1000/adds_to_synced`: 1,000 pods created at once in a fresh
//!   pool, timed until every one has run `sync_pod` once (issue 17's
//!   1,000-pod goal, against the same no-op syncer: the pod workers' own
//!   cost, not the runtime's).
//! - `pods_1000/resync_unchanged`: 1,000 running pods, unchanged, each
//!   sent a `Sync` update (what the periodic resync does), timed until
//!   every one has synced again.
//! - `static_churn/100`: 100 running static pods replaced by new UIDs with
//!   the same names (kill the old, create the new); time until every new
//!   one has run `sync_pod`.
//! - memory per idle worker: printed once before the benchmarks, measured
//!   as the growth of the process's resident set (`/proc/self/statm`) when
//!   10,000 workers are created and left idle (pods allocated beforehand).
//!   The workspace forbids `unsafe`, so a counting global allocator (which
//!   needs `unsafe impl GlobalAlloc`) cannot be used here.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, Throughput};
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubelet_podworkers::{
    CONFIG_SOURCE_ANNOTATION, Error, KillPodOptions, PodStatusCache, PodSyncer, PodWorkerPool,
    PodWorkers, PodWorkersConfig, RuntimePod, SyncContext, SyncPodOutcome, SyncPodType,
    TerminatePodOptions, UpdatePodOptions,
};
use tokio::sync::Notify;

/// A syncer that does nothing but note the newest generation it synced
/// and count its syncs.
struct NoopSyncer {
    generation: Vec<AtomicI64>,
    new_running: AtomicUsize,
    /// `sync_pod` calls so far.
    syncs: AtomicUsize,
    /// `done` is notified when `syncs` reaches this.
    target: AtomicUsize,
    done: Notify,
}

impl NoopSyncer {
    fn new(pods: usize) -> Self {
        Self {
            generation: (0..pods).map(|_| AtomicI64::new(-1)).collect(),
            new_running: AtomicUsize::new(0),
            syncs: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            done: Notify::new(),
        }
    }

    /// Waits until `sync_pod` has run `target` times in all (without
    /// spinning: the waiting thread leaves both cores to the workers).
    async fn wait_for_syncs(&self, target: usize) {
        self.target.store(target, Ordering::SeqCst);
        // A permit left by an earlier round only costs one more check.
        while self.syncs.load(Ordering::SeqCst) < target {
            self.done.notified().await;
        }
    }
}

fn index(pod: &Pod) -> Option<usize> {
    pod.metadata.uid.as_deref()?.get(1..)?.parse().ok()
}

#[async_trait]
impl PodSyncer for NoopSyncer {
    type Status = ();

    async fn sync_pod(
        &self,
        _: &SyncContext,
        update_type: SyncPodType,
        pod: &Pod,
        _: Option<&Pod>,
        _: &(),
    ) -> Result<SyncPodOutcome, Error> {
        if let Some(g) = index(pod).and_then(|i| self.generation.get(i)) {
            g.store(pod.metadata.generation.unwrap_or(0), Ordering::Release);
        }
        // `notify_one` keeps a permit: a waiter that arrives after the last
        // sync still wakes.
        if self.syncs.fetch_add(1, Ordering::SeqCst) + 1 == self.target.load(Ordering::SeqCst) {
            self.done.notify_one();
        }
        if update_type == SyncPodType::Create
            && pod
                .metadata
                .uid
                .as_deref()
                .is_some_and(|u| u.starts_with('n'))
        {
            self.new_running.fetch_add(1, Ordering::AcqRel);
        }
        Ok(SyncPodOutcome::Running)
    }

    async fn sync_terminating_pod(
        &self,
        _: &SyncContext,
        _: &Pod,
        _: &(),
        _: i64,
        _: Option<&TerminatePodOptions>,
    ) -> Result<(), Error> {
        Ok(())
    }

    async fn sync_terminating_runtime_pod(
        &self,
        _: &SyncContext,
        _: &RuntimePod,
    ) -> Result<(), Error> {
        Ok(())
    }

    async fn sync_terminated_pod(&self, _: &SyncContext, _: &Pod, _: &()) -> Result<(), Error> {
        Ok(())
    }
}

/// A cache that always has fresh, empty status.
struct NoopCache;

#[async_trait]
impl PodStatusCache for NoopCache {
    type Status = ();

    async fn get_newer_than(&self, _: &str, _: Option<tokio::time::Instant>) -> Result<(), Error> {
        Ok(())
    }

    fn is_runtime_terminal(&self, _: &str) -> bool {
        true
    }
}

fn make_pod(prefix: char, i: usize, generation: i64, name: &str, is_static: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            uid: Some(format!("{prefix}{i}")),
            name: Some(name.to_owned()),
            namespace: Some("default".into()),
            generation: Some(generation),
            annotations: is_static.then(|| {
                BTreeMap::from([(CONFIG_SOURCE_ANNOTATION.to_owned(), "file".to_owned())])
            }),
            ..Default::default()
        },
        spec: Some(PodSpec {
            termination_grace_period_seconds: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    }
}

const PODS: usize = 1_000;
const UPDATES: usize = 100;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    while !done() {
        tokio::task::yield_now().await;
    }
}

fn bench_updates(c: &mut Criterion) {
    let rt = runtime();
    // pods[g][i]: generation g of pod i, built once outside the timing
    let pods: Vec<Vec<Arc<Pod>>> = (0..UPDATES)
        .map(|g| {
            (0..PODS)
                .map(|i| Arc::new(make_pod('p', i, g as i64, &format!("p{i}"), false)))
                .collect()
        })
        .collect();
    let mut group = c.benchmark_group("updates");
    group.throughput(Throughput::Elements((PODS * UPDATES) as u64));
    group.sample_size(10);
    group.bench_function("1000x100", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(async {
                    let pool = PodWorkerPool::builder(NoopSyncer::new(PODS), NoopCache)
                        .build()
                        .expect("pool");
                    let start = Instant::now();
                    for (g, round) in pods.iter().enumerate() {
                        for pod in round {
                            let opts = if g == 0 {
                                UpdatePodOptions::create(Arc::clone(pod))
                            } else {
                                UpdatePodOptions::update(Arc::clone(pod))
                            };
                            pool.update_pod(opts);
                        }
                    }
                    let last = (UPDATES - 1) as i64;
                    wait_until(|| {
                        pool.syncer()
                            .generation
                            .iter()
                            .all(|g| g.load(Ordering::Acquire) == last)
                    })
                    .await;
                    let elapsed = start.elapsed();
                    drop(pool);
                    elapsed
                });
            }
            total
        })
    });
    group.finish();

    let mut group = c.benchmark_group("update_pod_call");
    group.throughput(Throughput::Elements(1));
    group.bench_function("update_of_running_pod", |b| {
        let pool = rt.block_on(async {
            let pool = PodWorkerPool::builder(NoopSyncer::new(PODS), NoopCache)
                .build()
                .expect("pool");
            for pod in &pods[0] {
                pool.update_pod(UpdatePodOptions::create(Arc::clone(pod)));
            }
            pool
        });
        let _guard = rt.enter();
        let mut n = 0usize;
        b.iter(|| {
            let pod = &pods[1 + n % (UPDATES - 1)][n % PODS];
            n += 1;
            pool.update_pod(black_box(UpdatePodOptions::update(Arc::clone(pod))));
        });
        drop(pool);
    });
    group.finish();
}

/// Starts `old`, then replaces every one by the `new` pod of the same name
/// (kill the old UID, create the new one, as the kubelet does on a REMOVE
/// and an ADD) and returns the time until every new pod has run, measured
/// on the runtime's clock (virtual when paused).
///
/// With `paused_clock` the wait sleeps (so the paused clock can advance to a
/// retry timer if one were needed); otherwise it yields, to measure real
/// latency below the timer resolution.
async fn static_churn(old: &[Arc<Pod>], new: &[Arc<Pod>], paused_clock: bool) -> Duration {
    let pool = PodWorkerPool::builder(NoopSyncer::new(old.len()), NoopCache)
        .build()
        .expect("pool");
    for p in old {
        pool.update_pod(UpdatePodOptions::create(Arc::clone(p)));
    }
    wait_until(|| {
        pool.syncer()
            .generation
            .iter()
            .all(|g| g.load(Ordering::Acquire) == 0)
    })
    .await;
    let start = tokio::time::Instant::now();
    for (o, n) in old.iter().zip(new) {
        pool.update_pod(UpdatePodOptions::kill(
            Arc::clone(o),
            KillPodOptions::default(),
        ));
        pool.update_pod(UpdatePodOptions::create(Arc::clone(n)));
    }
    let want = new.len();
    while pool.syncer().new_running.load(Ordering::Acquire) < want {
        if paused_clock {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    start.elapsed()
}

fn churn_pods() -> (Vec<Arc<Pod>>, Vec<Arc<Pod>>) {
    const N: usize = 100;
    let old = (0..N)
        .map(|i| Arc::new(make_pod('o', i, 0, &format!("static-{i}"), true)))
        .collect();
    let new = (0..N)
        .map(|i| Arc::new(make_pod('n', i, 0, &format!("static-{i}"), true)))
        .collect();
    (old, new)
}

/// A pool whose workers never resync on their own during a benchmark.
fn quiet_pool(pods: usize) -> PodWorkerPool<NoopSyncer, NoopCache> {
    PodWorkerPool::builder(NoopSyncer::new(pods), NoopCache)
        .config(PodWorkersConfig {
            resync_interval: Duration::from_secs(3600),
            ..Default::default()
        })
        .build()
        .expect("pool")
}

/// CPU time of the whole process so far (user + system, every thread,
/// finished ones included: `CLOCK_PROCESS_CPUTIME_ID`).
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or_default(),
        u32::try_from(t.tv_nsec).unwrap_or_default(),
    )
}

/// 1,000 pods created at once, until every one has synced: the time.
async fn adds_to_synced(pods: &[Arc<Pod>]) -> Duration {
    let pool = quiet_pool(pods.len());
    let start = Instant::now();
    for pod in pods {
        pool.update_pod(UpdatePodOptions::create(Arc::clone(pod)));
    }
    pool.syncer().wait_for_syncs(pods.len()).await;
    let elapsed = start.elapsed();
    drop(pool);
    elapsed
}

/// A `Sync` update to every one of `pods` (running, unchanged) until every
/// one has synced again: the time.
async fn resync_unchanged(
    pool: &PodWorkerPool<NoopSyncer, NoopCache>,
    pods: &[Arc<Pod>],
) -> Duration {
    let target = pool.syncer().syncs.load(Ordering::SeqCst) + pods.len();
    let start = Instant::now();
    for pod in pods {
        pool.update_pod(UpdatePodOptions::sync(Arc::clone(pod)));
    }
    pool.syncer().wait_for_syncs(target).await;
    start.elapsed()
}

fn bench_thousand(c: &mut Criterion) {
    let rt = runtime();
    let pods: Vec<Arc<Pod>> = (0..PODS)
        .map(|i| Arc::new(make_pod('p', i, 0, &format!("p{i}"), false)))
        .collect();
    let pool = rt.block_on(async {
        let pool = quiet_pool(PODS);
        for pod in &pods {
            pool.update_pod(UpdatePodOptions::create(Arc::clone(pod)));
        }
        pool.syncer().wait_for_syncs(PODS).await;
        pool
    });

    // Process CPU time (both workers and the caller), over many rounds.
    const ROUNDS: u32 = 50;
    let cpu = process_cpu();
    for _ in 0..ROUNDS {
        rt.block_on(adds_to_synced(&pods));
    }
    let adds_cpu = process_cpu().saturating_sub(cpu) / ROUNDS;
    let cpu = process_cpu();
    for _ in 0..ROUNDS {
        rt.block_on(resync_unchanged(&pool, &pods));
    }
    let resync_cpu = process_cpu().saturating_sub(cpu) / ROUNDS;
    println!(
        "pods_1000, process CPU time per round ({ROUNDS} rounds): adds_to_synced {adds_cpu:?}, resync_unchanged {resync_cpu:?}"
    );

    let mut group = c.benchmark_group("pods_1000");
    group.throughput(Throughput::Elements(PODS as u64));
    group.sample_size(20);
    group.bench_function("adds_to_synced", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(adds_to_synced(&pods))).sum())
    });
    group.bench_function("resync_unchanged", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rt.block_on(resync_unchanged(&pool, &pods)))
                .sum()
        })
    });
    group.finish();
    drop(pool);
}

fn bench_static_churn(c: &mut Criterion) {
    let rt = runtime();
    let (old, new) = churn_pods();
    let mut group = c.benchmark_group("static_churn");
    group.sample_size(20);
    group.bench_function("100", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(static_churn(&old, &new, false));
            }
            total
        })
    });
    group.finish();
}

/// The same churn on a paused clock: the virtual time the new pods wait.
/// Upstream leaves a waiting static pod to its 10-15 s work-queue retry;
/// this crate wakes it when the old pod is cleaned up.
fn report_static_churn_virtual_time() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    let (old, new) = churn_pods();
    let waited = rt.block_on(static_churn(&old, &new, true));
    println!(
        "static churn, 100 pods, virtual time until all new pods run: {waited:?} (1 ms = one poll step)"
    );
}

/// Resident set size in bytes.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn report_idle_worker_memory() {
    const N: usize = 10_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let pods: Vec<Arc<Pod>> = (0..N)
        .map(|i| Arc::new(make_pod('p', i, 0, &format!("p{i}"), false)))
        .collect();
    let before = rss_bytes();
    let pool = rt.block_on(async {
        let pool = PodWorkerPool::builder(NoopSyncer::new(N), NoopCache)
            .build()
            .expect("pool");
        for pod in &pods {
            pool.update_pod(UpdatePodOptions::create(Arc::clone(pod)));
        }
        wait_until(|| {
            pool.syncer()
                .generation
                .iter()
                .all(|g| g.load(Ordering::Acquire) == 0)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        pool
    });
    let after = rss_bytes();
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "memory per idle worker: {} bytes (RSS growth {} KiB over {N} idle workers, {} live)",
            a.saturating_sub(b) / N as u64,
            a.saturating_sub(b) / 1024,
            pool.live_workers()
        );
    }
    drop(pool);
}

fn bench_reports(_: &mut Criterion) {
    report_idle_worker_memory();
    report_static_churn_virtual_time();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_reports(&mut c);
    bench_updates(&mut c);
    bench_thousand(&mut c);
    bench_static_churn(&mut c);
    c.final_summary();
}
