//! Hostile YAML against the manifest decoder: an alias bomb ("billion
//! laughs") and 100,000-deep nesting are refused quickly, with an error
//! naming the file, within bounded memory (the process's peak resident
//! memory, reset before each case through `/proc/self/clear_refs`) and
//! without deep recursion (the decoder runs on a 1 MiB stack, half a
//! thread's default, where unbounded recursion would overflow and abort the
//! test).

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kubelet_podconfig::{Error, ManifestOrigin, decode_static_pod, decode_static_pods};

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

/// Resets the peak resident size to the current one (Linux `clear_refs` 5).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

const FILE: &str = "/etc/kubernetes/manifests/bomb.yaml";

/// Decodes `data` on a small stack; returns the error, the time taken and
/// how far the peak resident size rose.
fn decode_hostile(data: Vec<u8>, list: bool) -> (Error, Duration, usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let origin = ManifestOrigin::File(FILE.into());
    reset_peak();
    let base = status_bytes("VmRSS:");
    let started = Instant::now();
    let err = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || {
            if list {
                decode_static_pods(&data, &origin, "node").map(drop)
            } else {
                decode_static_pod(&data, &origin, "node").map(drop)
            }
        })
        .unwrap()
        .join()
        .expect("decoder thread must not overflow its stack or panic")
        .expect_err("hostile input must be refused");
    let elapsed = started.elapsed();
    let peak = status_bytes("VmHWM:").saturating_sub(base);
    (err, elapsed, peak)
}

fn assert_refused(data: Vec<u8>, what: &str) {
    for list in [false, true] {
        let (err, elapsed, peak) = decode_hostile(data.clone(), list);
        let msg = err.to_string();
        assert!(matches!(err, Error::Decode { .. }), "{what}: {err:?}");
        assert!(
            msg.starts_with(FILE),
            "{what}: error must name the file: {msg}"
        );
        assert!(
            elapsed < Duration::from_secs(5),
            "{what}: took {elapsed:?} ({msg})"
        );
        assert!(
            peak < 64 << 20,
            "{what}: peak {} MiB while decoding ({msg})",
            peak >> 20
        );
        eprintln!(
            "{what}: refused in {elapsed:?}, peak {} KiB: {msg}",
            peak >> 10
        );
    }
}

/// Nine levels of nine aliases: 9^9 (387 million) strings if expanded.
fn billion_laughs() -> Vec<u8> {
    let mut doc = String::from("apiVersion: v1\nkind: Pod\nmetadata:\n  name: lol\n");
    doc.push_str(
        "l0: &l0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..=9 {
        let prev = format!("*l{}", i - 1);
        let items = [prev.as_str(); 9].join(",");
        doc.push_str(&format!("l{i}: &l{i} [{items}]\n"));
    }
    doc.into_bytes()
}

#[test]
fn an_alias_bomb_is_refused() {
    assert_refused(billion_laughs(), "billion laughs");
}

#[test]
fn deep_flow_nesting_is_refused() {
    let mut doc = b"apiVersion: v1\nkind: Pod\nspec: ".to_vec();
    doc.extend(std::iter::repeat_n(b'[', 100_000));
    assert_refused(doc, "100,000 [");
}

#[test]
fn deep_block_nesting_is_refused() {
    let mut doc = b"apiVersion: v1\nkind: Pod\nspec:\n".to_vec();
    doc.extend(std::iter::repeat_n(*b"- ", 100_000).flatten());
    doc.extend(b"x\n");
    assert_refused(doc, "100,000 '- '");
}

#[test]
fn deep_json_nesting_is_refused() {
    let mut doc = br#"{"apiVersion":"v1","kind":"Pod","spec":"#.to_vec();
    doc.extend(std::iter::repeat_n(b'[', 100_000));
    doc.extend(std::iter::repeat_n(b']', 100_000));
    doc.push(b'}');
    assert_refused(doc, "100,000 [] in JSON");
}

#[test]
fn a_manifest_with_a_few_anchors_still_decodes() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: anchors\nspec:\n  containers:\n  - name: a\n    image: busybox\n    env: &env\n    - {name: A, value: \"1\"}\n    - {name: B, value: \"2\"}\n  - name: b\n    image: busybox\n    env: *env\n";
    let origin = ManifestOrigin::File(FILE.into());
    let pod = decode_static_pod(yaml.as_bytes(), &origin, "node").unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.containers[1].env.as_ref().map(Vec::len), Some(2));
}
