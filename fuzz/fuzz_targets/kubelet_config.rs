//! The `KubeletConfiguration` file, as `--config` reads it, then its
//! validation: any text gives a configuration or an error naming a field.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(config) = kubelet_agent::config::KubeletConfiguration::from_yaml(text) {
        let _ = config.validate();
    }
});
