//! The volumes a pod's containers mount, as the volume manager hands them
//! to the runtime manager, with the sources of their environment.

use std::collections::HashMap;
use std::path::PathBuf;

/// What the volume manager prepared for a pod, by host path, for the
/// runtime manager to mount (upstream `kubecontainer.VolumeMap`: the volume
/// manager's mounted volumes plus the kubelet's `makeMounts` inputs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodVolumes {
    /// Each volume of the pod by name: its directory (or file) on the host.
    pub volumes: HashMap<String, PathBuf>,
    /// Each `subPath` mount, by container name and index in its
    /// `volumeMounts`: a host path the subpath was bind-mounted on after it
    /// was opened beneath its volume (upstream `subpath.PrepareSafeSubpath`),
    /// so the runtime never resolves the subpath by its string.
    pub subpaths: HashMap<(String, usize), PathBuf>,
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

impl From<HashMap<String, PathBuf>> for PodVolumes {
    fn from(volumes: HashMap<String, PathBuf>) -> Self {
        Self {
            volumes,
            ..Default::default()
        }
    }
}
