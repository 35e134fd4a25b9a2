//! Container log files in the CRI format and the `/containerLogs` query:
//! the first line of the input is the query string, the rest the file.
//! Any file and query give an answer or a 400, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (query, log) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let now = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("a time");
    let query = String::from_utf8_lossy(query);
    if let Ok(opts) = kubelet_server::logs::LogOptions::from_query(Some(&query), now) {
        let _ = kubelet_server::logs::render(log, &opts);
    }
    for line in log.split(|&b| b == b'\n') {
        let _ = kubelet_server::logs::parse_cri_line(line);
    }
});
