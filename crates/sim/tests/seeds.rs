//! The simulation's seeds: a few hundred in CI, one replayed with
//! `SIM_SEED`, many with `SIM_SEEDS`, and an hour of a 110-pod node.

use std::time::Instant;

use kubelet_sim::{SimConfig, run};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// `SIM_SEEDS` seeds (default 200) from `SIM_FIRST_SEED` (default 1): each
/// must hold every invariant. A failure prints the seed and its replay
/// command.
#[test]
fn many_seeds() {
    let n = env_u64("SIM_SEEDS").unwrap_or(200);
    let first = env_u64("SIM_FIRST_SEED").unwrap_or(1);
    let config = SimConfig::ci();
    let started = Instant::now();
    let mut steps = 0;
    let mut failures = Vec::new();
    for seed in first..first + n {
        match run(seed, &config) {
            Ok(trace) => steps += trace.steps,
            Err(f) => {
                eprintln!("{f}\n");
                failures.push(f.seed);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{n} seeds, {steps} steps in {secs:.1} s: {:.1} seeds/s, {:.0} steps/s",
        n as f64 / secs,
        steps as f64 / secs
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

/// Replays `SIM_SEED` (with `SIM_STEPS` steps, default the CI run's), or
/// does nothing without it.
#[test]
fn replay() {
    if std::env::var("SIM_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("SIM_LOG"))
            .without_time()
            .try_init();
    }
    let Some(seed) = env_u64("SIM_SEED") else {
        return;
    };
    let mut config = SimConfig::ci();
    if let Some(steps) = env_u64("SIM_STEPS") {
        config.steps = usize::try_from(steps).unwrap_or(usize::MAX);
    }
    // Runs replay exactly when tokio is seeded (see the crate docs); a
    // build without `--cfg tokio_unstable` may need a few runs to show a
    // failure again.
    let repeat = env_u64("SIM_REPEAT").unwrap_or(1).max(1);
    for attempt in 1..=repeat {
        match run(seed, &config) {
            Ok(trace) => eprintln!(
                "seed {seed} holds (run {attempt} of {repeat}): {} steps, {:?} virtual, trace hash {:#x}, actions {:?}",
                trace.steps, trace.virtual_time, trace.hash, trace.actions
            ),
            Err(f) => panic!("run {attempt} of {repeat}: {f}"),
        }
    }
}

/// How many first steps must replay exactly when tokio's generator is not
/// seeded (a build without `--cfg tokio_unstable`, see the crate docs):
/// before it was seeded, two runs of seeds 1 to 30 first parted at step 47
/// at the earliest.
const UNSEEDED_EXACT_PREFIX: usize = 40;

/// One seed, run twice, takes the same actions and reaches the same runtime
/// and kubelet state after every step, quiet points and kubelet restarts
/// included; a different seed does not. Seeds 5, 12 and 21 each parted
/// between two runs before the kubelet's iteration orders were fixed and
/// tokio's generator seeded (at steps 61, 101 and 61).
#[test]
fn one_seed_replays_exactly() {
    let config = SimConfig::ci();
    if !kubelet_sim::SEEDS_TOKIO {
        eprintln!(
            "built without --cfg tokio_unstable: tokio's select! is not seeded, only the first {UNSEEDED_EXACT_PREFIX} steps are compared"
        );
    }
    for seed in [5, 12, 21] {
        let a = run(seed, &config).unwrap_or_else(|f| panic!("{f}"));
        let b = run(seed, &config).unwrap_or_else(|f| panic!("{f}"));
        assert!(
            a.actions.get("kubelet-restart").is_some_and(|n| *n > 0),
            "seed {seed} no longer restarts the kubelet: pick another"
        );
        if kubelet_sim::SEEDS_TOKIO {
            let parted = a
                .step_hashes
                .iter()
                .zip(&b.step_hashes)
                .position(|(x, y)| x != y);
            assert_eq!(
                parted,
                None,
                "seed {seed}: the two runs parted at step {:?}",
                parted.map(|i| i + 1)
            );
            assert_eq!(a, b, "seed {seed} did not replay");
        } else {
            assert_eq!(
                a.step_hashes[..UNSEEDED_EXACT_PREFIX],
                b.step_hashes[..UNSEEDED_EXACT_PREFIX],
                "seed {seed} did not replay"
            );
        }
        let other = run(seed + 1, &config).unwrap_or_else(|f| panic!("{f}"));
        assert_ne!(a.step_hashes[..10], other.step_hashes[..10]);
    }
}

/// An hour of a 110-pod node: prints how many steps it took and how fast.
#[test]
#[ignore = "long: run with --ignored --nocapture, preferably --release"]
fn node_hour() {
    let seed = env_u64("SIM_SEED").unwrap_or(1);
    let started = Instant::now();
    let trace = run(seed, &SimConfig::node_hour()).unwrap_or_else(|f| panic!("{f}"));
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "seed {seed}: {} steps for {:?} of a 110-pod node in {secs:.1} s ({:.0} steps/s), trace hash {:#x}; actions {:?}",
        trace.steps,
        trace.virtual_time,
        trace.steps as f64 / secs,
        trace.hash,
        trace.actions
    );
}

/// How many of `SIM_SEEDS` seeds (default 50, from `SIM_FIRST_SEED`,
/// default 1) give the same trace twice in a row (a measurement, not a
/// check).
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn determinism_rate() {
    let n = env_u64("SIM_SEEDS").unwrap_or(50);
    let first = env_u64("SIM_FIRST_SEED").unwrap_or(1);
    let mut config = SimConfig::ci();
    config.kubelet_restarts = env_u64("SIM_KUBELET_RESTARTS").unwrap_or(1) != 0;
    config.faults = env_u64("SIM_FAULTS").unwrap_or(1) != 0;
    let mut same = 0;
    let mut differ = Vec::new();
    for seed in first..first + n {
        let a = run(seed, &config).map_err(|f| f.step);
        let b = run(seed, &config).map_err(|f| f.step);
        match (a, b) {
            (Ok(a), Ok(b)) if a == b => same += 1,
            (Ok(a), Ok(b)) => {
                let first = a
                    .step_hashes
                    .iter()
                    .zip(&b.step_hashes)
                    .position(|(x, y)| x != y)
                    .map_or(0, |i| i + 1);
                differ.push((seed, first));
            }
            _ => differ.push((seed, 0)),
        }
    }
    eprintln!(
        "{same} of {n} seeds replayed to the same trace (tokio seeded: {}); differing (seed, first step that differs): {differ:?}",
        kubelet_sim::SEEDS_TOKIO
    );
}

/// Seed 925, once open (see the crate docs, "What it found"): events armed
/// to be lost before a quiet point were lost during its wait, and the quiet
/// comparison failed though the kubelet did as upstream does. The quiet
/// point now disarms them.
#[test]
fn seed_925_a_quiet_point_loses_no_event() {
    // Without probes, which came later: the seed's actions as they were.
    let config = SimConfig {
        probes: false,
        ..SimConfig::ci()
    };
    if let Err(f) = run(925, &config) {
        panic!("{f}");
    }
}
