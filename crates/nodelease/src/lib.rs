//! The node lease (upstream `pkg/kubelet/nodelease`,
//! `component-helpers/apimachinery/lease`). Work in progress.
