//! Static pod manifests (YAML or JSON, single pods and pod lists), as the
//! file and HTTP sources decode them: any bytes give a pod or an error,
//! never a panic, a hang or unbounded memory (alias bombs, deep nesting).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let origin = kubelet_podconfig::ManifestOrigin::file("/etc/kubernetes/manifests/fuzz.yaml");
    let _ = kubelet_podconfig::decode_static_pod(data, &origin, "fuzz-node");
    let _ = kubelet_podconfig::decode_static_pods(data, &origin, "fuzz-node");
});
