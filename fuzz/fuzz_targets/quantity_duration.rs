//! The one quantity parser and the Go duration parser: any string gives a
//! value or an error, never a panic or an overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = kubelet_container::quantity::value(text);
    let _ = kubelet_container::quantity::milli_value(text);
    let _ = kubelet_container::duration::parse_go_duration(text);
});
