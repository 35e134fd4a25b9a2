//! The volumes a pod's containers mount, as the volume manager hands them
//! to the runtime manager, with the sources of their environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the volume manager prepared for a pod, by host path, for the
/// runtime manager to mount (upstream `kubecontainer.VolumeMap`: the volume
/// manager's mounted volumes plus the kubelet's `makeMounts` inputs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodVolumes {
    /// Each volume of the pod by name: its directory (or file) on the host.
    pub volumes: HashMap<String, PathBuf>,
    /// What prepares a container's `subPath` and `subPathExpr` mounts when
    /// the container is created (the volume manager's safe subpaths);
    /// `None`: a container with one fails with `CreateContainerConfigError`.
    pub subpaths: Option<Subpaths>,
    /// Where the managed `/etc/hosts` file of the pod lives (upstream
    /// `<pod dir>/etc-hosts`); `None`: containers keep the image's.
    pub etc_hosts: Option<PathBuf>,
    /// The pod's directory (upstream `<root dir>/pods/<uid>`): each
    /// container's termination-message file is created as
    /// `<pod_dir>/containers/<container>/<8 random hex>` and bind-mounted at
    /// its `terminationMessagePath` (by `kubelet-kuberuntime`); `None`: no
    /// termination-message file is mounted.
    pub pod_dir: Option<PathBuf>,
    /// Volumes mounted read-only whatever `volumeMounts[].readOnly` says:
    /// secret, configMap, projected and downwardAPI (upstream's plugins
    /// report `ReadOnly` for them), so a container cannot rewrite its
    /// token or secrets.
    pub read_only: std::collections::HashSet<String>,
    /// What the containers' environment reads beyond the pod spec: the
    /// Secrets and ConfigMaps it refers to, fetched before the sync, the
    /// node's IPs and allocatable (upstream: the secret and configMap
    /// managers and the node, as `makeEnvironmentVariables` reads them).
    /// The default is a standalone kubelet's: no API server.
    pub env: crate::env::EnvSources,
}

/// One `subPath` mount to prepare (upstream `subpath.Subpath`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subpath<'a> {
    /// The container that mounts it.
    pub container: &'a str,
    /// The mount's index in the container's `volumeMounts`.
    pub index: usize,
    /// The volume's name.
    pub volume: &'a str,
    /// The volume's directory on the host.
    pub volume_path: &'a Path,
    /// The path inside the volume: `subPath`, or `subPathExpr` once
    /// expanded; relative, without `..` (checked by the caller).
    pub path: &'a str,
}

/// Prepares `subPath` mounts at container creation, as upstream
/// `makeMounts` calls `subpath.Interface.PrepareSafeSubpath`
/// (`pkg/kubelet/kubelet_pods.go`): the runtime is handed a host path that
/// holds exactly what the subpath named inside its volume at that moment,
/// never the volume path joined with the string, which a symlink planted by
/// a container could redirect out of the volume.
pub trait PrepareSubpath: Send + Sync {
    /// The host path to mount for `subpath`. The error's text is logged,
    /// not shown in the pod's status: like upstream, the caller reports a
    /// plain "failed to prepare subPath" so host details do not leak.
    fn prepare(
        &self,
        subpath: &Subpath<'_>,
    ) -> Result<PathBuf, Box<dyn std::error::Error + Send + Sync>>;
}

/// A shared [`PrepareSubpath`]; equal when it is the same one.
#[derive(Clone)]
pub struct Subpaths(pub Arc<dyn PrepareSubpath>);

impl std::fmt::Debug for Subpaths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subpaths(..)")
    }
}

impl PartialEq for Subpaths {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Subpaths {}

impl From<HashMap<String, PathBuf>> for PodVolumes {
    fn from(volumes: HashMap<String, PathBuf>) -> Self {
        Self {
            volumes,
            ..Default::default()
        }
    }
}
