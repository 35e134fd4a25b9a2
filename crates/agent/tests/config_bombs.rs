//! Hostile YAML against the `KubeletConfiguration` reader: an alias bomb
//! ("billion laughs") and 100,000-deep nesting are refused quickly, with an
//! error naming the file, within bounded memory (the process's peak
//! resident memory, reset before each case through `/proc/self/clear_refs`)
//! and without deep recursion (the reader runs on a 1 MiB stack, half a
//! thread's default, where unbounded recursion would overflow and abort the
//! test).

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kubelet_agent::config::KubeletConfiguration;

/// The peak is process-wide: one measurement at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A `/proc/self/status` field in bytes.
fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map(|kb| kb * 1024)
        .expect("status field")
}

fn assert_refused(body: String, what: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubelet-config.yaml");
    std::fs::write(
        &path,
        format!("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{body}"),
    )
    .expect("write");
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let base = status_bytes("VmRSS:");
    let started = Instant::now();
    let read = path.clone();
    let err = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || KubeletConfiguration::from_file(&read).map(drop))
        .unwrap()
        .join()
        .expect("reader thread must not overflow its stack or panic")
        .expect_err("hostile input must be refused");
    let elapsed = started.elapsed();
    let peak = status_bytes("VmHWM:").saturating_sub(base);
    let msg = err.to_string();
    assert_eq!(err.field, "--config", "{what}: {msg}");
    assert!(
        err.reason.starts_with(&path.display().to_string()),
        "{what}: error must name the file: {msg}"
    );
    assert!(elapsed < Duration::from_secs(5), "{what}: took {elapsed:?}");
    assert!(peak < 64 << 20, "{what}: peak {} MiB", peak >> 20);
    eprintln!(
        "{what}: refused in {elapsed:?}, peak {} KiB: {msg}",
        peak >> 10
    );
}

#[test]
fn an_alias_bomb_is_refused() {
    let mut body = String::from(
        "l0: &l0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..=9 {
        let prev = format!("*l{}", i - 1);
        let items = [prev.as_str(); 9].join(",");
        body.push_str(&format!("l{i}: &l{i} [{items}]\n"));
    }
    body.push_str("featureGates: *l9\n");
    assert_refused(body, "billion laughs");
}

#[test]
fn deep_flow_nesting_is_refused() {
    assert_refused(
        format!("kubeReserved: {}", "[".repeat(100_000)),
        "100,000 [",
    );
}

#[test]
fn deep_block_nesting_is_refused() {
    assert_refused(
        format!("kubeReserved:\n{}x\n", "- ".repeat(100_000)),
        "100,000 '- '",
    );
}

#[test]
fn a_config_with_anchors_still_reads() {
    let c = KubeletConfiguration::from_yaml(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nkubeReserved: &r {memory: 100Mi}\nsystemReserved: *r\n",
    )
    .expect("anchors");
    assert_eq!(c.kube_reserved, c.system_reserved);
}
