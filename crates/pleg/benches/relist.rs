//! Relist benchmark (being written).
fn main() {}
