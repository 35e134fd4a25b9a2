//! The node API server (work in progress by a helper).
