//! The pod's data directories and the volumes a standalone kubelet can
//! provide: `emptyDir` (on disk) and `hostPath`.
//!
//! Mirrors upstream's layout (`pkg/kubelet/kubelet_getters.go`,
//! `pkg/volume/emptydir`, `pkg/volume/hostpath`):
//! `<root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>`,
//! `<root>/pods/<uid>/containers`, `<root>/pods/<uid>/plugins`.
//!
//! Not yet: memory-medium emptyDir (tmpfs), sizeLimit, downward API files,
//! the managed `/etc/hosts` (the volumes issue).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use crate::Error;

/// `<root>/pods/<uid>`.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the pod's directories and its volumes; returns the host path of
/// every volume by name.
pub fn prepare_pod_volumes(root: &Path, pod: &Pod) -> Result<HashMap<String, PathBuf>, Error> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    if uid.is_empty() || uid.contains('/') || uid == ".." {
        return Err(Error::InvalidPod {
            pod: name,
            reason: format!("unusable UID {uid:?}"),
        });
    }
    let dir = pod_dir(root, uid);
    for sub in ["volumes", "plugins", "containers"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(io(&p))?;
    }
    let mut volumes = HashMap::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
    {
        if v.name.is_empty() || v.name.contains('/') || v.name == ".." {
            return Err(Error::InvalidPod {
                pod: name,
                reason: format!("invalid volume name {:?}", v.name),
            });
        }
        let path = if let Some(empty) = &v.empty_dir {
            if empty.medium.as_deref() == Some("Memory") {
                return Err(Error::InvalidPod {
                    pod: name,
                    reason: format!(
                        "volume {:?}: emptyDir medium Memory is not supported yet",
                        v.name
                    ),
                });
            }
            let p = dir.join("volumes/kubernetes.io~empty-dir").join(&v.name);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
            p
        } else if let Some(host) = &v.host_path {
            let p = PathBuf::from(&host.path);
            match host.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(io(&p))?,
                "Directory" if !p.is_dir() => {
                    return Err(Error::InvalidPod {
                        pod: name,
                        reason: format!("hostPath {:?} is not a directory", host.path),
                    });
                }
                "File" if !p.is_file() => {
                    return Err(Error::InvalidPod {
                        pod: name,
                        reason: format!("hostPath {:?} is not a file", host.path),
                    });
                }
                _ => {}
            }
            p
        } else {
            return Err(Error::InvalidPod {
                pod: name,
                reason: format!(
                    "volume {:?}: only emptyDir and hostPath volumes are supported",
                    v.name
                ),
            });
        };
        volumes.insert(v.name.clone(), path);
    }
    Ok(volumes)
}

/// Removes the pod's directory once the pod is gone (upstream
/// `cleanupOrphanedPodDirs`).
pub fn remove_pod_dir(root: &Path, uid: &str) -> Result<(), Error> {
    if uid.is_empty() || uid.contains('/') || uid == ".." {
        return Ok(());
    }
    let dir = pod_dir(root, uid);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_dirs_are_made_under_the_pod_dir() {
        let root = tempfile::tempdir().expect("tmp");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"containers": [], "volumes": [{"name": "shared", "emptyDir": {}}]}
        }))
        .expect("pod");
        let v = prepare_pod_volumes(root.path(), &pod).expect("volumes");
        let p = &v["shared"];
        assert!(p.is_dir());
        assert!(p.starts_with(root.path().join("pods/u1/volumes")));
        remove_pod_dir(root.path(), "u1").expect("remove");
        assert!(!root.path().join("pods/u1").exists());
    }

    #[test]
    fn unsupported_volumes_are_refused_with_the_name() {
        let root = tempfile::tempdir().expect("tmp");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u2"},
            "spec": {"containers": [], "volumes": [{"name": "cfg", "configMap": {"name": "x"}}]}
        }))
        .expect("pod");
        let err = prepare_pod_volumes(root.path(), &pod).expect_err("configMap");
        assert!(err.to_string().contains("\"cfg\""), "{err}");
    }
}
