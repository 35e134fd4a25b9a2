//! Probes: see the module docs (work in progress by a helper).
