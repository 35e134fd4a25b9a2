//! Node registration and node status (upstream `pkg/kubelet/nodestatus`,
//! `pkg/kubelet/kubelet_node_status.go`). Work in progress.
