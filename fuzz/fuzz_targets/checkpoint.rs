//! The CPU and memory managers' checkpoint files, as read after a restart:
//! a corrupt file is an error that names it, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("state");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let cpu = kubelet_cm::checkpoint::Checkpoint::new(path.clone(), "cpu_manager_state");
    let _ = cpu.load::<kubelet_cm::cpumanager::CpuManagerState>();
    let memory = kubelet_cm::checkpoint::Checkpoint::new(path, "memory_manager_state");
    let _ = memory.load::<kubelet_cm::memorymanager::MemoryManagerState>();
});
