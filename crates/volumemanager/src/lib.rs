//! The volume manager of a kubelet (upstream `pkg/kubelet/volumemanager`
//! and the volume plugins it drives): the pod's data directories and its
//! volumes: `emptyDir` (on disk, or a tmpfs for medium `Memory`), `hostPath`
//! (with its type checks), `downwardAPI` files, and, with an API server,
//! `secret`, `configMap` and `projected` volumes (service account tokens
//! included); `subPath` mounts opened beneath their volume; the managed
//! `/etc/hosts` file's location.
//!
//! Mirrors upstream's layout (`pkg/kubelet/kubelet_getters.go`,
//! `pkg/volume/emptydir/empty_dir.go`, `pkg/volume/hostpath/host_path.go`,
//! `pkg/volume/downwardapi/downwardapi.go`, `pkg/volume/secret/secret.go`,
//! `pkg/volume/configmap/configmap.go`, `pkg/volume/projected/projected.go`,
//! `pkg/volume/util/subpath/subpath_linux.go`):
//! `<root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>`,
//! `<root>/pods/<uid>/volumes/kubernetes.io~downward-api/<name>`,
//! `<root>/pods/<uid>/volumes/kubernetes.io~secret/<name>` (and
//! `kubernetes.io~configmap`, `kubernetes.io~projected`),
//! `<root>/pods/<uid>/volume-subpaths/<volume>/<container>/<index>`,
//! `<root>/pods/<uid>/etc-hosts`, `<root>/pods/<uid>/containers`,
//! `<root>/pods/<uid>/plugins`.
//!
//! Two steps per pod sync:
//!
//! 1. in cluster mode, [`prepare_api_volumes`] (async) reads the secrets and
//!    config maps and requests the service account tokens the pod's
//!    volumes need (through an [`ApiObjects`]: the watch-based or TTL
//!    [`ObjectManager`] of [`objcache`], upstream's secret and configMap
//!    managers, or [`KubeApiObjects`], a `GET` per lookup; held by an
//!    [`ApiVolumes`] with its
//!    [`TokenManager`]) and writes them with the [`AtomicWriter`]
//!    (upstream `pkg/volume/util/atomic_writer.go`): files appear as
//!    `key -> ..data/key` symlinks and an update swaps `..data`, so readers
//!    never see a half-updated set; unchanged contents write nothing;
//! 2. [`prepare_pod_volumes`] (sync) makes every other volume and returns
//!    every volume's directory; it refuses a secret, configMap or projected
//!    volume that step 1 never wrote (a standalone kubelet has no API
//!    server to read them from). The `subPath` (and expanded `subPathExpr`)
//!    mounts are prepared later, when each container is created, by the
//!    [`SafeSubpaths`] it returns, as upstream `makeMounts` does: a subpath
//!    that cannot be prepared fails that container only.
//!
//! DownwardAPI volumes are written with the same atomic writer (upstream
//! does so too). Secret, configMap, projected and downwardAPI volumes are
//! read-only for containers upstream: [`read_only_volumes`] names them
//! ([`PodVolumes::read_only`]).
//!
//! Safety: a `subPath` is opened with `openat2(RESOLVE_BENEATH)` from the
//! volume's root, missing directories are made one component at a time
//! without following symlinks, and the opened file descriptor (not the path
//! string) is bind-mounted where the runtime will find it, so neither a
//! symlink planted by a container nor a race can lead outside the volume.
//! Removing a pod's directory first unmounts everything under it (tmpfs
//! volumes included) and refuses to delete while anything stays mounted (a
//! bind-mounted `hostPath` subpath would otherwise be deleted through the
//! mount).

mod api;
mod api_volumes;
mod atomic_writer;
pub mod objcache;

pub use api::{
    ApiObjects, Clock, IssuedToken, KubeApiObjects, ServiceAccountTokenRequest, TokenManager,
};
pub use api_volumes::{
    ApiVolumes, CONFIG_MAP_PLUGIN_DIR, PROJECTED_PLUGIN_DIR, SECRET_PLUGIN_DIR, has_api_volumes,
    is_api_volume, is_read_only_volume, prepare_api_volumes, prepare_api_volumes_each,
    read_only_volumes,
};
pub use atomic_writer::{AtomicWriter, DATA_DIR_NAME, FileProjection, Payload, clean_path};
pub use objcache::{ChangeDetectionStrategy, ObjectManager, api_objects};

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, Pod};
use kubelet_container::{PodVolumes, PrepareSubpath, Subpath, Subpaths};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Errors of this crate. Each names the pod or the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pod's volumes cannot be provided as written.
    #[error("pod {pod}: {reason}")]
    InvalidPod {
        /// The pod (`namespace/name`).
        pod: String,
        /// Why.
        reason: String,
    },
    /// A file or directory could not be made, mounted or removed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// One volume of a pod could not be written: the pod, the volume, and
    /// why (one of the other variants).
    #[error("pod {pod}: volume {volume:?}: {source}")]
    Volume {
        /// The pod (`namespace/name`).
        pod: String,
        /// The volume's name.
        volume: String,
        /// Why.
        source: Box<Error>,
    },
    /// A volume's source cannot be honoured as written (e.g. a projection
    /// kind that is not supported, an unusable downward API item).
    #[error("{reason}")]
    InvalidVolume {
        /// Why.
        reason: String,
    },
    /// A secret or config map a volume needs does not exist, and the
    /// volume (or projection source) is not `optional`.
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// An `items` entry names a key its secret or config map lacks, and the
    /// volume is not `optional` (upstream: "references non-existent ...
    /// key").
    #[error("{kind} {namespace}/{name} has no key {key:?}")]
    MissingKey {
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// A file path of a volume is unusable (upstream `validatePath`).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as written.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// The API server could not be asked, or answered with an error other
    /// than "not found".
    #[error("{what}: {source}")]
    Api {
        /// What was asked (e.g. `get secret team/db`).
        what: String,
        /// The client's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// The volume this error is about, when it is one volume's
    /// ([`Error::Volume`]).
    pub fn volume(&self) -> Option<&str> {
        match self {
            Error::Volume { volume, .. } => Some(volume),
            _ => None,
        }
    }

    /// The message of the `FailedMount` event upstream's kubelet records
    /// for this error. One volume's failure is the operation executor's
    /// `MountVolume.SetUp failed for volume "<volume>" : <cause>`
    /// (`pkg/volume/util/operationexecutor`, `GenerateError`), the cause
    /// worded as upstream's plugins word it (`secret "db" not found`,
    /// `references non-existent secret key: password`); any other is
    /// `Unable to attach or mount volumes: <error>` (`kubelet.go`,
    /// `SyncPod`).
    pub fn mount_event_message(&self) -> String {
        match self {
            Error::Volume { volume, source, .. } => format!(
                "MountVolume.SetUp failed for volume {volume:?} : {}",
                source.upstream_cause()
            ),
            other => format!("Unable to attach or mount volumes: {other}"),
        }
    }

    /// Upstream's wording of a volume plugin's error: the secret and
    /// config map managers' `NotFound` (`secret "db" not found`, their
    /// group resources being `secret` and `configmap`), the plugins'
    /// missing keys; otherwise this error's own text.
    fn upstream_cause(&self) -> String {
        match self {
            Error::NotFound { kind, name, .. } => format!("{kind} {name:?} not found"),
            Error::MissingKey { kind, key, .. } if *kind == "secret" => {
                format!("references non-existent secret key: {key}")
            }
            Error::MissingKey { key, .. } => {
                format!("configmap references non-existent config key: {key}")
            }
            other => other.to_string(),
        }
    }
}

/// `<root>/pods/<uid>`.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

/// `namespace/name` of a pod, for errors and logs.
pub(crate) fn pod_full_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn errno(path: &Path) -> impl FnOnce(Errno) -> Error + '_ {
    move |e| Error::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

pub(crate) fn invalid(pod: &str, reason: String) -> Error {
    Error::InvalidPod {
        pod: pod.to_owned(),
        reason,
    }
}

/// Node facts the volumes depend on.
#[derive(Debug, Clone, Default)]
pub struct VolumeContext {
    /// The node's allocatable memory in bytes: the largest a memory-backed
    /// `emptyDir` may be, and the downward API's `limits.memory` of a
    /// container without one.
    pub allocatable_memory: Option<i64>,
    /// The node's allocatable CPU in millicores (the downward API's
    /// `limits.cpu` of a container without one).
    pub allocatable_milli_cpu: Option<i64>,
}

/// The permission bits of an emptyDir's directory (upstream `perm` in
/// `pkg/volume/emptydir/empty_dir.go`): anyone may write, whatever user
/// the containers run as.
pub const EMPTY_DIR_PERM: u32 = 0o777;

/// Creates an emptyDir's directory with [`EMPTY_DIR_PERM`], whatever the
/// kubelet's umask (upstream `emptyDir.setupDir` in
/// `pkg/volume/emptydir/empty_dir.go`: `MkdirAll`, then a `chmod` of the
/// permission bits when they differ, keeping the setgid bit).
pub fn setup_empty_dir(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).map_err(io(path))?;
    let mode = std::fs::symlink_metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode();
    if mode & 0o777 != EMPTY_DIR_PERM {
        let keep = mode & 0o2000;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(EMPTY_DIR_PERM | keep))
            .map_err(io(path))?;
    }
    Ok(())
}

/// Gives a volume to the pod's `fsGroup` (upstream `SetVolumeOwnership` and
/// `changeFilePermission` in `pkg/volume/volume_linux.go`, with
/// `fsGroupChangePolicy: Always`): everything under `dir`, `dir`
/// included, gets group `gid` (symbolic links themselves, never their
/// targets) and, except links, the permission bits `rw-rw----` added
/// (`r--r-----` for a `read_only` volume), directories also the setgid
/// and group/owner execute bits.
pub fn set_volume_ownership(dir: &Path, gid: u32, read_only: bool) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mask = if read_only { 0o440 } else { 0o660 };
    let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    std::os::unix::fs::lchown(dir, None, Some(gid)).map_err(io(dir))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    let add = if meta.is_dir() {
        mask | 0o2000 | 0o110
    } else {
        mask
    };
    if mode | add != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | add))
            .map_err(io(dir))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            set_volume_ownership(&entry.path(), gid, read_only)?;
        }
    }
    Ok(())
}

/// Creates the pod's directories and volumes; returns what the runtime
/// mounts, with the [`SafeSubpaths`] that prepare `subPath` mounts when
/// each container is created.
pub fn prepare_pod_volumes(
    root: &Path,
    pod: &Pod,
    ctx: &VolumeContext,
) -> Result<PodVolumes, Error> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let name = pod_full_name(pod);
    if !is_plain_name(uid) {
        return Err(invalid(&name, format!("unusable UID {uid:?}")));
    }
    let dir = pod_dir(root, uid);
    for sub in ["volumes", "plugins", "containers"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(io(&p))?;
    }
    let mut out = PodVolumes {
        read_only: read_only_volumes(pod).into_iter().collect(),
        ..PodVolumes::default()
    };
    let mut mounts = Mounts::default();
    let spec = pod.spec.as_ref();
    let fs_group = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|c| c.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    for v in spec.and_then(|s| s.volumes.as_deref()).unwrap_or_default() {
        if !is_plain_name(&v.name) {
            return Err(invalid(&name, format!("invalid volume name {:?}", v.name)));
        }
        let path = if let Some(empty) = &v.empty_dir {
            let p = dir.join("volumes/kubernetes.io~empty-dir").join(&v.name);
            setup_empty_dir(&p)?;
            if empty.medium.as_deref() == Some("Memory") {
                let size = memory_volume_size(pod, empty.size_limit.as_ref(), ctx);
                mount_tmpfs(&p, size, &mut mounts)?;
            } else if let Some(medium) = empty.medium.as_deref().filter(|m| !m.is_empty()) {
                return Err(invalid(
                    &name,
                    format!(
                        "volume {:?}: emptyDir medium {medium:?} is not supported",
                        v.name
                    ),
                ));
            }
            p
        } else if let Some(host) = &v.host_path {
            check_host_path(&name, &host.path, host.type_.as_deref().unwrap_or(""))?
        } else if let Some(downward) = &v.downward_api {
            let p = dir.join("volumes/kubernetes.io~downward-api").join(&v.name);
            let in_volume = |source: Error| Error::Volume {
                pod: name.clone(),
                volume: v.name.clone(),
                source: Box::new(source),
            };
            let payload = downward_api_payload(
                pod,
                downward.items.as_deref().unwrap_or_default(),
                downward.default_mode.unwrap_or(0o644),
                ctx,
            )
            .map_err(in_volume)?;
            std::fs::create_dir_all(&p).map_err(io(&p))?;
            AtomicWriter::new(&p, format!("pod {name} volume {}", v.name))
                .and_then(|w| w.write(&payload))
                .map_err(in_volume)?;
            p
        } else if let Some((p, kind)) = api_volumes::volume_path(&dir, v) {
            // Written by `prepare_api_volumes`: `..data` exists once it ran.
            let written = std::fs::symlink_metadata(p.join(DATA_DIR_NAME))
                .is_ok_and(|m| m.file_type().is_symlink());
            if !written {
                return Err(Error::Volume {
                    pod: name.clone(),
                    volume: v.name.clone(),
                    source: Box::new(Error::InvalidVolume {
                        reason: format!(
                            "{kind} volumes are written from the API server by \
                             prepare_api_volumes, which has not run for this pod (without an \
                             API server only emptyDir, hostPath and downwardAPI volumes are \
                             supported)"
                        ),
                    }),
                });
            }
            p
        } else {
            return Err(invalid(
                &name,
                format!(
                    "volume {:?}: only emptyDir, hostPath, downwardAPI, secret, configMap and \
                     projected volumes are supported",
                    v.name
                ),
            ));
        };
        // Upstream: the plugins that support ownership management hand
        // the pod's fsGroup to `SetVolumeOwnership` after setting up
        // (emptyDir read-write; secret, configMap, downwardAPI and projected
        // read-only); hostPath is left alone.
        if let Some(gid) = fs_group
            && v.host_path.is_none()
        {
            set_volume_ownership(&path, gid, v.empty_dir.is_none()).map_err(|source| {
                Error::Volume {
                    pod: name.clone(),
                    volume: v.name.clone(),
                    source: Box::new(source),
                }
            })?;
        }
        out.volumes.insert(v.name.clone(), path);
    }
    out.subpaths = Some(Subpaths(Arc::new(SafeSubpaths {
        pod: name,
        pod_dir: dir.clone(),
    })));
    out.etc_hosts = Some(dir.join("etc-hosts"));
    out.pod_dir = Some(dir);
    Ok(out)
}

pub(crate) fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && s != ".." && s != "." && !s.contains('\0')
}

/// hostPath type checks (upstream `checkType` in `host_path.go`).
fn check_host_path(pod: &str, path: &str, kind: &str) -> Result<PathBuf, Error> {
    use std::os::unix::fs::FileTypeExt;
    let p = PathBuf::from(path);
    let meta = std::fs::metadata(&p).ok();
    let ft = meta.as_ref().map(std::fs::Metadata::file_type);
    let fail = |what: &str| Err(invalid(pod, format!("hostPath {path:?} {what}")));
    match kind {
        "" => {}
        "DirectoryOrCreate" if meta.is_none() => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&p)
                .map_err(io(&p))?;
        }
        "DirectoryOrCreate" | "Directory" if !ft.is_some_and(|t| t.is_dir()) => {
            return fail("is not a directory");
        }
        "FileOrCreate" if meta.is_none() => {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(io(&p))?;
        }
        "FileOrCreate" | "File" if !ft.is_some_and(|t| t.is_file()) => {
            return fail("is not a file");
        }
        "Socket" if !ft.is_some_and(|t| t.is_socket()) => return fail("is not a socket"),
        "CharDevice" if !ft.is_some_and(|t| t.is_char_device()) => {
            return fail("is not a character device");
        }
        "BlockDevice" if !ft.is_some_and(|t| t.is_block_device()) => {
            return fail("is not a block device");
        }
        "Directory" | "File" | "FileOrCreate" | "DirectoryOrCreate" | "Socket" | "CharDevice"
        | "BlockDevice" => {}
        other => return fail(&format!("has an unknown type {other:?}")),
    }
    Ok(p)
}

/// The size of a memory-backed emptyDir (upstream
/// `calculateEmptyDirMemorySize`): node allocatable memory, lowered to the
/// pod's memory limit when every container has one, lowered to `sizeLimit`
/// when set. `None`: the kernel's default (half of RAM).
pub(crate) fn memory_volume_size(
    pod: &Pod,
    size_limit: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    ctx: &VolumeContext,
) -> Option<i64> {
    let mut size = ctx.allocatable_memory.filter(|m| *m > 0);
    let limits: Option<i64> = pod.spec.as_ref().and_then(|s| {
        s.containers
            .iter()
            .map(|c| {
                c.resources
                    .as_ref()
                    .and_then(|r| r.limits.as_ref())
                    .and_then(|l| l.get("memory"))
                    .and_then(|q| kubelet_container::quantity::value(&q.0).ok())
            })
            .sum()
    });
    for candidate in [
        limits,
        size_limit.and_then(|q| kubelet_container::quantity::value(&q.0).ok()),
    ]
    .into_iter()
    .flatten()
    {
        if candidate > 0 && size.is_none_or(|s| candidate < s) {
            size = Some(candidate);
        }
    }
    size
}

/// The mount points, read from mountinfo at most once per preparation
/// (it runs on every sync of every pod).
#[derive(Debug, Default)]
pub(crate) struct Mounts(Option<std::collections::HashSet<PathBuf>>);

impl Mounts {
    fn contains(&mut self, path: &Path) -> Result<bool, Error> {
        if self.0.is_none() {
            self.0 = Some(mount_points()?.into_iter().collect());
        }
        Ok(self.0.as_ref().is_some_and(|m| m.contains(path)))
    }
}

pub(crate) fn mount_tmpfs(
    path: &Path,
    size: Option<i64>,
    mounts: &mut Mounts,
) -> Result<(), Error> {
    if mounts.contains(path)? {
        return Ok(()); // mounted by an earlier sync or kubelet: keep its data
    }
    let data = match size {
        Some(bytes) => format!("size={bytes}"),
        None => String::new(),
    };
    let data = std::ffi::CString::new(data).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    rustix::mount::mount(
        "tmpfs",
        path,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .map_err(errno(path))?;
    tracing::debug!(path = %path.display(), ?size, "mounted a memory-backed volume");
    Ok(())
}

/// Every mount point of this process's mount namespace.
fn mount_points() -> Result<Vec<PathBuf>, Error> {
    let info = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(info).map_err(io(info))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ------------------------------------------------------------ downward API

/// The files of downwardAPI items (upstream `downwardapi.CollectData`):
/// each item's value at its path, with its mode or `default_mode`. Used by
/// downwardAPI volumes and the downwardAPI source of projected volumes.
pub(crate) fn downward_api_payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
    ctx: &VolumeContext,
) -> Result<Payload, Error> {
    let mut payload = Payload::new();
    for item in items {
        let path = clean_path(&item.path)?;
        let value = if let Some(field) = &item.field_ref {
            field_value(pod, &field.field_path).ok_or_else(|| Error::InvalidVolume {
                reason: format!("downwardAPI: unsupported fieldPath {:?}", field.field_path),
            })?
        } else if let Some(res) = &item.resource_field_ref {
            resource_value(pod, res, ctx).ok_or_else(|| Error::InvalidVolume {
                reason: format!(
                    "downwardAPI: cannot resolve {:?} of container {:?}",
                    res.resource,
                    res.container_name.as_deref().unwrap_or("")
                ),
            })?
        } else {
            return Err(Error::InvalidVolume {
                reason: format!(
                    "downwardAPI item {:?} has neither fieldRef nor resourceFieldRef",
                    item.path
                ),
            });
        };
        let mode = item.mode.unwrap_or(default_mode);
        let mode = u32::try_from(mode).map_or(0o644, |m| m & 0o777);
        payload.insert(path, FileProjection::new(value, mode));
    }
    Ok(payload)
}

/// `key="value"` lines, sorted, as upstream's `fieldpath.FormatMap`.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Upstream `fieldpath.ExtractFieldPathAsString` for the fields a volume may
/// use.
fn field_value(pod: &Pod, path: &str) -> Option<String> {
    let m = &pod.metadata;
    let key_of = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_owned)
    };
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        _ => {
            if let Some(k) = key_of("metadata.labels['") {
                m.labels.as_ref()?.get(&k).cloned().unwrap_or_default()
            } else if let Some(k) = key_of("metadata.annotations['") {
                m.annotations.as_ref()?.get(&k).cloned().unwrap_or_default()
            } else {
                return None;
            }
        }
    })
}

/// Upstream `fieldpath.ExtractResourceValueByContainerNameAndNodeAllocatable`
/// (`pkg/api/v1/resource/helpers.go`, called by the downwardAPI volume
/// plugin's `CollectData`): limits default to node allocatable; the value is
/// divided by the divisor (`1` when unset or zero, as the API server
/// defaults it to `0`) and rounded up. The one implementation is the
/// environment's ([`kubelet_container::env::container_resource_value`]).
fn resource_value(
    pod: &Pod,
    r: &k8s_openapi::api::core::v1::ResourceFieldSelector,
    ctx: &VolumeContext,
) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let name = r.container_name.as_deref().unwrap_or("");
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)?;
    let allocatable: BTreeMap<String, i64> = [
        ("cpu", ctx.allocatable_milli_cpu),
        ("memory", ctx.allocatable_memory),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_owned(), v?)))
    .collect();
    kubelet_container::env::container_resource_value(r, pod, c, &allocatable).ok()
}

// ---------------------------------------------------------------- subPath

fn open_beneath(root: &OwnedFd, sub: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(
        root,
        sub,
        flags | OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Makes the directories of `sub` beneath `root`, one component at a time,
/// never following a symlink (upstream `doSafeMakeDir`).
fn safe_mkdir_all(root: &OwnedFd, sub: &str) -> Result<(), Errno> {
    let mut dir = rustix::fs::openat(
        root,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for comp in sub.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if comp == ".." {
            return Err(Errno::XDEV);
        }
        match rustix::fs::mkdirat(&dir, comp, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        dir = rustix::fs::openat(
            &dir,
            comp,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    Ok(())
}

/// Prepares a container's `subPath` mounts when it is created (upstream
/// `subpath.Interface.PrepareSafeSubpath`, `pkg/volume/util/subpath/subpath_linux.go`):
/// the subpath is opened beneath its volume and that descriptor is
/// bind-mounted at `<pod dir>/volume-subpaths/<volume>/<container>/<index>`,
/// the path handed to the runtime. Made by [`prepare_pod_volumes`].
#[derive(Debug, Clone)]
pub struct SafeSubpaths {
    pod: String,
    pod_dir: PathBuf,
}

impl PrepareSubpath for SafeSubpaths {
    fn prepare(
        &self,
        subpath: &Subpath<'_>,
    ) -> Result<PathBuf, Box<dyn std::error::Error + Send + Sync>> {
        for name in [subpath.volume, subpath.container] {
            if !is_plain_name(name) {
                return Err(Box::new(invalid(
                    &self.pod,
                    format!("unusable name {name:?}"),
                )));
            }
        }
        let target = self
            .pod_dir
            .join("volume-subpaths")
            .join(subpath.volume)
            .join(subpath.container)
            .join(subpath.index.to_string());
        prepare_subpath(
            &self.pod,
            subpath.volume_path,
            subpath.path,
            &target,
            &mut Mounts::default(),
        )?;
        Ok(target)
    }
}

fn prepare_subpath(
    pod: &str,
    volume: &Path,
    sub: &str,
    target: &Path,
    mounts: &mut Mounts,
) -> Result<(), Error> {
    if sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
        return Err(invalid(
            pod,
            format!("subPath {sub:?} must be relative and stay in the volume"),
        ));
    }
    let root = rustix::fs::open(
        volume,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno(volume))?;
    let escapes = |e: Errno| {
        if matches!(e, Errno::XDEV | Errno::LOOP) {
            invalid(
                pod,
                format!(
                    "subPath {sub:?} of {} leads outside its volume (through a symlink or mount)",
                    volume.display()
                ),
            )
        } else {
            errno(&volume.join(sub))(e)
        }
    };
    let fd = match open_beneath(&root, sub, OFlags::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            safe_mkdir_all(&root, sub).map_err(escapes)?;
            open_beneath(&root, sub, OFlags::empty()).map_err(escapes)?
        }
        Err(e) => return Err(escapes(e)),
    };
    let stat = rustix::fs::fstat(fd.as_fd()).map_err(errno(&volume.join(sub)))?;
    if mounts.contains(target)? {
        // Bound when the container was created before: kept while it is
        // still what the subpath names (upstream `checkSubPathFileEqual`),
        // else replaced (a `subPathExpr` that expands differently now, or
        // a file the container replaced).
        let same = rustix::fs::stat(target)
            .is_ok_and(|t| t.st_dev == stat.st_dev && t.st_ino == stat.st_ino);
        if same {
            return Ok(());
        }
        rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH)
            .map_err(errno(target))?;
    }
    if rustix::fs::FileType::from_raw_mode(stat.st_mode).is_dir() {
        std::fs::create_dir_all(target).map_err(io(target))?;
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(target)
            .map_err(io(target))?;
    }
    // The descriptor, not the path: what was opened beneath the volume is
    // what gets mounted, whatever happens to the path afterwards.
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::mount::mount_bind(source.as_str(), target).map_err(errno(target))?;
    Ok(())
}

// ------------------------------------------------------------- clean up

/// Unmounts everything under `dir`, deepest first.
fn unmount_all_under(dir: &Path) -> Result<(), Error> {
    let mut mounts: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    for m in &mounts {
        match rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => {}
            Err(e) => return Err(errno(m)(e)),
        }
    }
    Ok(())
}

/// Unmounts the pod's tmpfs volumes and subpath binds once its containers
/// are stopped, keeping the directories (upstream: the volume manager
/// unmounts the volumes of terminated pods), so a terminated pod's
/// memory-backed volumes stop holding memory.
pub fn unmount_pod_volumes(root: &Path, uid: &str) -> Result<(), Error> {
    if !is_plain_name(uid) {
        return Ok(());
    }
    let dir = pod_dir(root, uid);
    if !dir.exists() {
        return Ok(());
    }
    unmount_all_under(&dir)
}

/// Removes the pod's directory once the pod is gone (upstream
/// `cleanupOrphanedPodDirs`), unmounting tmpfs volumes and subpath binds
/// first. Nothing is deleted while anything under it is still mounted.
pub fn remove_pod_dir(root: &Path, uid: &str) -> Result<(), Error> {
    if !is_plain_name(uid) {
        return Ok(());
    }
    let dir = pod_dir(root, uid);
    if !dir.exists() {
        return Ok(());
    }
    unmount_all_under(&dir)?;
    if let Some(m) = mount_points()?.into_iter().find(|m| m.starts_with(&dir)) {
        return Err(Error::Io {
            path: m,
            source: std::io::Error::other("still mounted; the pod directory is kept"),
        });
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&dir)(e)),
    }
}

/// Every pod UID with a directory under `<root>/pods`.
pub fn pod_dirs(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

#[cfg(test)]
mod tests {

    /// Upstream `SetVolumeOwnership`, checked by the [NodeConformance] spec
    /// "Secrets should be consumable from pods in volume as non-root with
    /// defaultMode and fsGroup set" (`common/storage/secrets_volume.go`).
    #[test]
    fn volumes_are_given_to_the_fs_group() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().expect("tempdir");
        let vol = tmp.path().join("vol");
        std::fs::create_dir_all(vol.join("..data")).expect("mkdir");
        std::fs::write(vol.join("..data/key"), "v").expect("write");
        std::fs::set_permissions(
            vol.join("..data/key"),
            std::fs::Permissions::from_mode(0o400),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("..data/key", vol.join("key")).expect("link");
        set_volume_ownership(&vol, 1001, true).expect("ownership");
        let file = std::fs::metadata(vol.join("..data/key")).expect("stat");
        assert_eq!(file.gid(), 1001);
        assert_eq!(
            file.permissions().mode() & 0o7777,
            0o440,
            "0400 | r--r-----"
        );
        let link = std::fs::symlink_metadata(vol.join("key")).expect("lstat");
        assert_eq!(link.gid(), 1001, "the link itself");
        let d = std::fs::metadata(vol.join("..data")).expect("stat");
        assert_eq!(d.permissions().mode() & 0o2000, 0o2000, "setgid directory");
        // Read-write (emptyDir): rw for the group.
        let rw = tmp.path().join("rw");
        std::fs::create_dir(&rw).expect("mkdir");
        std::fs::write(rw.join("f"), "").expect("write");
        std::fs::set_permissions(rw.join("f"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        set_volume_ownership(&rw, 1001, false).expect("ownership");
        let f = std::fs::metadata(rw.join("f")).expect("stat");
        assert_eq!(f.permissions().mode() & 0o777, 0o660);
    }

    #[test]
    fn empty_dir_is_world_writable_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("vol");
        // As if created under umask 022 by an earlier sync.
        std::fs::create_dir(&p).expect("mkdir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o2755)).expect("chmod");
        setup_empty_dir(&p).expect("setup");
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o2777, "0777 and the setgid bit kept");
        let fresh = tmp.path().join("a/b");
        setup_empty_dir(&fresh).expect("setup");
        let mode = std::fs::metadata(&fresh)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, EMPTY_DIR_PERM);
    }
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod")
    }

    #[test]
    fn empty_dirs_are_made_under_the_pod_dir() {
        let root = tempfile::tempdir().expect("tmp");
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"containers": [], "volumes": [{"name": "shared", "emptyDir": {}}]}
        }));
        let v = prepare_pod_volumes(root.path(), &p, &VolumeContext::default()).expect("volumes");
        let path = &v.volumes["shared"];
        assert!(path.is_dir());
        assert!(path.starts_with(root.path().join("pods/u1/volumes")));
        assert_eq!(v.etc_hosts, Some(root.path().join("pods/u1/etc-hosts")));
        remove_pod_dir(root.path(), "u1").expect("remove");
        assert!(!root.path().join("pods/u1").exists());
    }

    #[test]
    fn unsupported_volumes_are_refused_with_the_name() {
        let root = tempfile::tempdir().expect("tmp");
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "uid": "u2"},
            "spec": {"containers": [], "volumes": [{"name": "cfg", "configMap": {"name": "x"}}]}
        }));
        let err =
            prepare_pod_volumes(root.path(), &p, &VolumeContext::default()).expect_err("configMap");
        assert!(err.to_string().contains("\"cfg\""), "{err}");
    }

    #[test]
    fn host_path_types_are_checked() {
        let root = tempfile::tempdir().expect("tmp");
        let file = root.path().join("f");
        std::fs::write(&file, "x").expect("write");
        let f = file.to_str().expect("utf8");
        assert!(check_host_path("p", f, "File").is_ok());
        assert!(check_host_path("p", f, "Directory").is_err());
        assert!(check_host_path("p", f, "Socket").is_err());
        assert!(check_host_path("p", f, "Bogus").is_err());
        let made = root.path().join("a/b");
        let m = made.to_str().expect("utf8");
        check_host_path("p", m, "DirectoryOrCreate").expect("create");
        assert!(made.is_dir());
        let new_file = root.path().join("c/d.txt");
        check_host_path("p", new_file.to_str().expect("utf8"), "FileOrCreate").expect("create");
        assert!(new_file.is_file());
    }

    #[test]
    fn downward_api_files_hold_the_fields() {
        let root = tempfile::tempdir().expect("tmp");
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u3", "labels": {"b": "2", "a": "x\"y"}},
            "spec": {
                "containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}}],
                "volumes": [{"name": "info", "downwardAPI": {"items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "sub/labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}},
                    {"path": "cpu", "resourceFieldRef": {"containerName": "c", "resource": "requests.cpu"}},
                    {"path": "cpulimit", "resourceFieldRef": {"containerName": "c", "resource": "limits.cpu", "divisor": "1m"}},
                    {"path": "cpu0", "resourceFieldRef": {"containerName": "c", "resource": "limits.cpu", "divisor": "0"}},
                    {"path": "mem0", "resourceFieldRef": {"containerName": "c", "resource": "requests.memory", "divisor": "0"}}
                ]}}]
            }
        }));
        let ctx = VolumeContext {
            allocatable_memory: Some(1 << 30),
            allocatable_milli_cpu: Some(2000),
        };
        let v = prepare_pod_volumes(root.path(), &p, &ctx).expect("volumes");
        let dir = &v.volumes["info"];
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect(f);
        assert_eq!(read("name"), "p");
        assert_eq!(read("sub/labels"), "a=\"x\\\"y\"\nb=\"2\"");
        assert_eq!(read("mem"), "64");
        assert_eq!(read("cpu"), "1", "250m rounds up to 1 CPU");
        assert_eq!(read("cpulimit"), "2000", "no limit: node allocatable");
        // The API server defaults an unset divisor to "0": it means 1
        // (upstream common/storage/downwardapi_volume.go's default-limit specs).
        assert_eq!(read("cpu0"), "2", "node allocatable in whole CPUs");
        assert_eq!(read("mem0"), "0", "no request");
        // Mounted read-only whatever the container's volumeMounts say.
        assert!(v.read_only.contains("info"), "{:?}", v.read_only);
        let bad = pod(serde_json::json!({
            "metadata": {"name": "p", "uid": "u4"},
            "spec": {"containers": [], "volumes": [{"name": "i", "downwardAPI": {"items": [
                {"path": "../escape", "fieldRef": {"fieldPath": "metadata.name"}}
            ]}}]}
        }));
        assert!(prepare_pod_volumes(root.path(), &bad, &ctx).is_err());
        assert!(!root.path().join("pods/u4/volumes/escape").exists());
    }

    #[test]
    fn downward_api_volumes_are_written_atomically_and_updated() {
        let root = tempfile::tempdir().expect("tmp");
        let with_labels = |labels: serde_json::Value| {
            pod(serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns", "uid": "u5", "labels": labels},
                "spec": {"containers": [], "volumes": [{"name": "info", "downwardAPI": {
                    "defaultMode": 0o600,
                    "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]
                }}]}
            }))
        };
        let ctx = VolumeContext::default();
        let v = prepare_pod_volumes(
            root.path(),
            &with_labels(serde_json::json!({"a": "1"})),
            &ctx,
        )
        .expect("volumes");
        let dir = &v.volumes["info"];
        assert_eq!(
            std::fs::read_link(dir.join("labels")).expect("link"),
            Path::new("..data/labels")
        );
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.join("labels")).expect("meta");
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        let first = std::fs::read_link(dir.join(DATA_DIR_NAME)).expect("..data");
        prepare_pod_volumes(
            root.path(),
            &with_labels(serde_json::json!({"a": "1"})),
            &ctx,
        )
        .expect("again");
        assert_eq!(
            std::fs::read_link(dir.join(DATA_DIR_NAME)).expect("..data"),
            first,
            "unchanged: nothing written"
        );
        prepare_pod_volumes(
            root.path(),
            &with_labels(serde_json::json!({"a": "2"})),
            &ctx,
        )
        .expect("update");
        assert_ne!(
            std::fs::read_link(dir.join(DATA_DIR_NAME)).expect("..data"),
            first
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("labels")).expect("labels"),
            "a=\"2\""
        );
    }

    #[test]
    fn memory_volume_size_is_the_smallest_bound() {
        let ctx = VolumeContext {
            allocatable_memory: Some(1 << 30),
            allocatable_milli_cpu: None,
        };
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "resources": {"limits": {"memory": "64Mi"}}},
                {"name": "b", "resources": {"limits": {"memory": "32Mi"}}}
            ]}
        }));
        assert_eq!(memory_volume_size(&p, None, &ctx), Some(96 << 20));
        let q = k8s_openapi::apimachinery::pkg::api::resource::Quantity("16Mi".into());
        assert_eq!(memory_volume_size(&p, Some(&q), &ctx), Some(16 << 20));
        let no_limit = pod(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}
        }));
        assert_eq!(memory_volume_size(&no_limit, None, &ctx), Some(1 << 30));
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    /// Needs root (bind mounts): `kubelet_testbed::require` skips without
    /// it, and fails under CI.
    #[test]
    fn a_subpath_symlink_out_of_its_volume_is_refused() {
        let Some(()) = kubelet_testbed::require("root (bind mounts)", kubelet_testbed::root())
        else {
            return;
        };
        let root = tempfile::tempdir().expect("tmp");
        let outside = root.path().join("secret");
        std::fs::create_dir(&outside).expect("outside");
        std::fs::write(outside.join("key"), "s3cret").expect("key");
        let volume = root.path().join("vol");
        std::fs::create_dir(&volume).expect("vol");
        std::os::unix::fs::symlink(&outside, volume.join("escape")).expect("abs symlink");
        std::os::unix::fs::symlink("../secret", volume.join("rel-escape")).expect("rel symlink");
        std::fs::create_dir(volume.join("inside")).expect("inside");
        std::os::unix::fs::symlink("inside", volume.join("ok-link")).expect("ok link");
        for sub in ["escape", "rel-escape", "escape/key", "ok-link/../../secret"] {
            let target = root.path().join("t").join(sub.replace('/', "_"));
            let err =
                prepare_subpath("p", &volume, sub, &target, &mut Mounts::default()).expect_err(sub);
            assert!(
                err.to_string().contains("outside its volume")
                    || err.to_string().contains("stay in the volume"),
                "{sub}: {err}"
            );
            assert!(!mount_points().expect("mounts").contains(&target));
        }
        // A symlink inside the volume and a missing directory are fine.
        let target = root.path().join("pods/x/volume-subpaths/vol/c/0");
        prepare_subpath("p", &volume, "ok-link", &target, &mut Mounts::default())
            .expect("inside link");
        assert!(mount_points().expect("mounts").contains(&target));
        let made = root.path().join("pods/x/volume-subpaths/vol/c/1");
        prepare_subpath("p", &volume, "new/dir", &made, &mut Mounts::default()).expect("made");
        assert!(volume.join("new/dir").is_dir());
        std::fs::write(volume.join("new/dir/f"), "hi").expect("write through volume");
        assert_eq!(std::fs::read_to_string(made.join("f")).expect("bind"), "hi");
        // At the next container start: the same subpath keeps its bind; a
        // subpath that names something else now (a `subPathExpr` expanding
        // differently) replaces it, leaving one mount.
        prepare_subpath("p", &volume, "new/dir", &made, &mut Mounts::default()).expect("again");
        assert_eq!(std::fs::read_to_string(made.join("f")).expect("kept"), "hi");
        std::fs::write(volume.join("inside/g"), "other").expect("write inside");
        prepare_subpath("p", &volume, "inside", &made, &mut Mounts::default()).expect("rebind");
        assert_eq!(
            std::fs::read_to_string(made.join("g")).expect("new"),
            "other"
        );
        assert!(!made.join("f").exists(), "the old bind is gone");
        // Removing the pod dir unmounts first and never deletes through a bind.
        remove_pod_dir(&root.path().join(""), "x").expect("remove");
        assert!(!root.path().join("pods/x").exists());
        assert!(
            volume.join("new/dir/f").exists(),
            "the volume's data survives"
        );
        assert!(outside.join("key").exists());
    }
}
