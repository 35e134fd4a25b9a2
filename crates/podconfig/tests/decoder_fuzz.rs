//! A fuzz target for the manifest decoder, as proptest over arbitrary bytes
//! and over mutations of valid manifests: the decoder never panics, and
//! whatever it accepts is a valid, defaulted static pod.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kubelet_podconfig::{
    CONFIG_HASH_ANNOTATION, ManifestOrigin, decode_static_pod, decode_static_pods,
    validate_static_pod,
};
use proptest::prelude::*;

const NODE: &str = "node-1";

const SEEDS: [&str; 4] = [
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n    resources:\n      requests:\n        cpu: 100m\n      limits:\n        cpu: \"1\"\n",
    r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","labels":{"x":"y"}},"spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"i"}]}}"#,
    r#"{"apiVersion":"v1","kind":"PodList","items":[{"metadata":{"name":"a"},"spec":{"containers":[{"name":"c","image":"i"}]}}]}"#,
    "a: &a [*a, *a]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b, *b]\n",
];

fn check(data: &[u8]) {
    let file = ManifestOrigin::File("/m/x.yaml".into());
    let url = ManifestOrigin::Url("http://127.0.0.1/x".into());
    if let Ok(pod) = decode_static_pod(data, &file, NODE) {
        assert!(validate_static_pod(&pod).is_empty());
        assert!(pod.metadata.name.as_deref().unwrap().ends_with("-node-1"));
        let uid = pod.metadata.uid.clone().unwrap();
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION],
            uid
        );
    }
    if let Ok(pods) = decode_static_pods(data, &url, NODE) {
        for pod in pods {
            assert!(validate_static_pod(&pod).is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&data);
    }

    #[test]
    fn mutated_manifests_never_panic(
        seed in 0usize..SEEDS.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut data = SEEDS[seed].as_bytes().to_vec();
        for (at, byte, kind) in edits {
            if data.is_empty() {
                data.push(byte);
                continue;
            }
            let i = at.index(data.len());
            match kind {
                0 => data[i] = byte,
                1 => data.insert(i, byte),
                _ => { data.remove(i); }
            }
        }
        check(&data);
    }

    #[test]
    fn arbitrary_strings_as_fields_never_panic(name in ".{0,80}", image in ".{0,20}", qty in ".{0,12}") {
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": image, "resources": {"limits": {"cpu": qty}}}]}
        });
        check(doc.to_string().as_bytes());
    }
}

#[test]
fn deep_nesting_and_alias_bombs_are_errors_not_crashes() {
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    check(deep_json.as_bytes());
    let deep_yaml = "- ".repeat(50_000);
    check(deep_yaml.as_bytes());
    let mut bomb = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    for i in 0..12 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("l{}", i - 1)
        };
        bomb.push_str(&format!("l{i}: &l{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    check(bomb.as_bytes());
    for seed in SEEDS {
        check(seed.as_bytes());
    }
}
