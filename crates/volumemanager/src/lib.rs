//! The volume manager of a kubelet (upstream `pkg/kubelet/volumemanager`
//! and the volume plugins it drives): the pod's data directories and the
//! volumes a standalone kubelet can provide: `emptyDir` (on disk, or a tmpfs for medium `Memory`), `hostPath`
//! (with its type checks) and `downwardAPI` files; `subPath` mounts opened
//! beneath their volume; the managed `/etc/hosts` file's location.
//!
//! Mirrors upstream's layout (`pkg/kubelet/kubelet_getters.go`,
//! `pkg/volume/emptydir/empty_dir.go`, `pkg/volume/hostpath/host_path.go`,
//! `pkg/volume/downwardapi/downwardapi.go`,
//! `pkg/volume/util/subpath/subpath_linux.go`):
//! `<root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>`,
//! `<root>/pods/<uid>/volumes/kubernetes.io~downward-api/<name>`,
//! `<root>/pods/<uid>/volume-subpaths/<volume>/<container>/<index>`,
//! `<root>/pods/<uid>/etc-hosts`, `<root>/pods/<uid>/containers`,
//! `<root>/pods/<uid>/plugins`.
//!
//! Safety: a `subPath` is opened with `openat2(RESOLVE_BENEATH)` from the
//! volume's root, missing directories are made one component at a time
//! without following symlinks, and the opened file descriptor (not the path
//! string) is bind-mounted where the runtime will find it, so neither a
//! symlink planted by a container nor a race can lead outside the volume.
//! Removing a pod's directory first unmounts everything under it and refuses
//! to delete while anything stays mounted (a bind-mounted `hostPath` subpath
//! would otherwise be deleted through the mount).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeSource, Pod};
use kubelet_container::PodVolumes;
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
}

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

fn errno(path: &Path) -> impl FnOnce(Errno) -> Error + '_ {
    move |e| Error::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn invalid(pod: &str, reason: String) -> Error {
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

/// Creates the pod's directories and volumes and prepares every `subPath`
/// mount of its containers; returns what the runtime mounts.
pub fn prepare_pod_volumes(
    root: &Path,
    pod: &Pod,
    ctx: &VolumeContext,
) -> Result<PodVolumes, Error> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    if !is_plain_name(uid) {
        return Err(invalid(&name, format!("unusable UID {uid:?}")));
    }
    let dir = pod_dir(root, uid);
    for sub in ["volumes", "plugins", "containers"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(io(&p))?;
    }
    let mut out = PodVolumes::default();
    let mut mounts = Mounts::default();
    let spec = pod.spec.as_ref();
    for v in spec.and_then(|s| s.volumes.as_deref()).unwrap_or_default() {
        if !is_plain_name(&v.name) {
            return Err(invalid(&name, format!("invalid volume name {:?}", v.name)));
        }
        let path = if let Some(empty) = &v.empty_dir {
            let p = dir.join("volumes/kubernetes.io~empty-dir").join(&v.name);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
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
            std::fs::create_dir_all(&p).map_err(io(&p))?;
            write_downward_api(&name, pod, downward, &p, ctx)?;
            p
        } else {
            return Err(invalid(
                &name,
                format!(
                    "volume {:?}: only emptyDir, hostPath and downwardAPI volumes are supported",
                    v.name
                ),
            ));
        };
        out.volumes.insert(v.name.clone(), path);
    }
    let containers = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers));
    for c in containers {
        for (index, m) in c.volume_mounts.iter().flatten().enumerate() {
            let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let Some(volume) = out.volumes.get(&m.name) else {
                continue; // the runtime reports the missing volume
            };
            let target = dir
                .join("volume-subpaths")
                .join(&m.name)
                .join(&c.name)
                .join(index.to_string());
            prepare_subpath(&name, volume, sub, &target, &mut mounts)?;
            out.subpaths.insert((c.name.clone(), index), target);
        }
    }
    out.etc_hosts = Some(dir.join("etc-hosts"));
    out.pod_dir = Some(dir);
    Ok(out)
}

fn is_plain_name(s: &str) -> bool {
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
fn memory_volume_size(
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
struct Mounts(Option<std::collections::HashSet<PathBuf>>);

impl Mounts {
    fn contains(&mut self, path: &Path) -> Result<bool, Error> {
        if self.0.is_none() {
            self.0 = Some(mount_points()?.into_iter().collect());
        }
        Ok(self.0.as_ref().is_some_and(|m| m.contains(path)))
    }
}

fn mount_tmpfs(path: &Path, size: Option<i64>, mounts: &mut Mounts) -> Result<(), Error> {
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
    tracing::debug!(path = %path.display(), ?size, "mounted a memory-backed emptyDir");
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

fn write_downward_api(
    pod_name: &str,
    pod: &Pod,
    source: &DownwardAPIVolumeSource,
    dir: &Path,
    ctx: &VolumeContext,
) -> Result<(), Error> {
    for item in source.items.iter().flatten() {
        let rel = Path::new(&item.path);
        if item.path.is_empty()
            || rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(invalid(
                pod_name,
                format!(
                    "downwardAPI item path {:?} must be relative and stay in the volume",
                    item.path
                ),
            ));
        }
        let value = if let Some(field) = &item.field_ref {
            field_value(pod, &field.field_path).ok_or_else(|| {
                invalid(
                    pod_name,
                    format!("downwardAPI: unsupported fieldPath {:?}", field.field_path),
                )
            })?
        } else if let Some(res) = &item.resource_field_ref {
            resource_value(pod, res, ctx).ok_or_else(|| {
                invalid(
                    pod_name,
                    format!(
                        "downwardAPI: cannot resolve {:?} of container {:?}",
                        res.resource,
                        res.container_name.as_deref().unwrap_or("")
                    ),
                )
            })?
        } else {
            return Err(invalid(
                pod_name,
                format!(
                    "downwardAPI item {:?} has neither fieldRef nor resourceFieldRef",
                    item.path
                ),
            ));
        };
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // Write then rename: a reader never sees half a value (upstream's
        // AtomicWriter swaps a `..data` symlink for the same reason).
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("item")
        ));
        std::fs::write(&tmp, value.as_bytes()).map_err(io(&tmp))?;
        let mode = item.mode.or(source.default_mode).unwrap_or(0o644);
        {
            use std::os::unix::fs::PermissionsExt;
            let perms =
                std::fs::Permissions::from_mode(u32::try_from(mode & 0o777).unwrap_or(0o644));
            std::fs::set_permissions(&tmp, perms).map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(())
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

/// Upstream `resource.ExtractContainerResourceValue`: limits default to node
/// allocatable; the value is divided by the divisor (default 1) and rounded up.
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
    let res = c.resources.as_ref();
    let (kind, resource) = r.resource.split_once('.')?;
    let list = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return None,
    };
    let q = list.and_then(|l| l.get(resource)).map(|q| q.0.as_str());
    let divisor = r.divisor.as_ref().map(|d| d.0.as_str()).unwrap_or("1");
    match resource {
        "cpu" => {
            let milli = match q {
                Some(q) => kubelet_container::quantity::milli_value(q).ok()?,
                None if kind == "limits" => ctx.allocatable_milli_cpu?,
                None => 0,
            };
            let d = kubelet_container::quantity::milli_value(divisor)
                .ok()
                .filter(|d| *d > 0)?;
            Some(((milli + d - 1) / d).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let v = match q {
                Some(q) => kubelet_container::quantity::value(q).ok()?,
                None if kind == "limits" && resource == "memory" => ctx.allocatable_memory?,
                None => 0,
            };
            let d = kubelet_container::quantity::value(divisor)
                .ok()
                .filter(|d| *d > 0)?;
            Some(((v + d - 1) / d).to_string())
        }
        _ => None,
    }
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
    if mounts.contains(target)? {
        return Ok(()); // bound by an earlier sync
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
    let is_dir = rustix::fs::fstat(fd.as_fd())
        .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir())
        .map_err(errno(&volume.join(sub)))?;
    if is_dir {
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
                    {"path": "cpulimit", "resourceFieldRef": {"containerName": "c", "resource": "limits.cpu", "divisor": "1m"}}
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
