//! Cgroup drivers and the cgroup manager: creating, updating, reading and
//! removing the kubelet's cgroups (`kubepods`, the QoS cgroups, `pod<uid>`)
//! on cgroup v1 and v2, without ever putting a process in them.
//!
//! Upstream: `pkg/kubelet/cm/cgroup_manager_linux.go`, `cgroup_v1_manager_linux.go`,
//! `cgroup_v2_manager_linux.go` (through runc's `libcontainer/cgroups`).
//!
//! This is a small driver of our own rather than cgroups-rs: cgroups-rs
//! hard-codes `/sys/fs/cgroup` in places (so it cannot run on a fixture
//! tree), ignores write errors on `cgroup.subtree_control`, and its errors do
//! not name the file. Here every path is below a root given at construction,
//! and every I/O error is an [`Error::Io`] naming the file.
//!
//! Hybrid hosts (v1 controllers plus an empty v2 hierarchy at `unified/`)
//! count as v1, as upstream and youki do.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::cgroup_name::{CgroupDriverKind, CgroupName};
use crate::error::{Error, Result};
use crate::resources::{ResourceConfig, cpu_shares_to_weight};

/// Which cgroup hierarchy the node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupVersion {
    /// Legacy or hybrid: one hierarchy per controller under the mount root.
    V1,
    /// Unified: one hierarchy at the mount root.
    V2,
}

/// Detects the cgroup version under `mount_root` (usually `/sys/fs/cgroup`):
/// v2 when the root itself has `cgroup.controllers` (a cgroup2 mount), else
/// v1. A hybrid host, whose v2 hierarchy is only at `unified/`, is v1.
pub fn detect_cgroup_version(mount_root: &Path) -> CgroupVersion {
    if mount_root.join("cgroup.controllers").is_file() {
        CgroupVersion::V2
    } else {
        CgroupVersion::V1
    }
}

/// How a driver spells and places a [`CgroupName`].
///
/// [`Cgroupfs`] is the upstream default. [`Systemd`] lays cgroups out as
/// systemd slices; it writes the slice directories itself and does not talk
/// to systemd over D-Bus (these machines have no systemd), so on a systemd
/// host its slices would not be units. Only its naming is meant for
/// production use today.
pub trait CgroupDriver: Send + Sync + std::fmt::Debug {
    /// Which driver this is.
    fn kind(&self) -> CgroupDriverKind;

    /// The literal cgroup path the runtime is given (CRI `cgroup_parent`).
    fn literal_name(&self, name: &CgroupName) -> String {
        self.kind().name(name)
    }

    /// The path below a hierarchy's mount point.
    fn relative_path(&self, name: &CgroupName) -> PathBuf {
        PathBuf::from(self.literal_name(name).trim_start_matches('/'))
    }
}

/// The cgroupfs driver: `/kubepods/burstable/pod<uid>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cgroupfs;

impl CgroupDriver for Cgroupfs {
    fn kind(&self) -> CgroupDriverKind {
        CgroupDriverKind::Cgroupfs
    }
}

/// The systemd driver's naming: `/kubepods.slice/kubepods-burstable.slice/...`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Systemd;

impl CgroupDriver for Systemd {
    fn kind(&self) -> CgroupDriverKind {
        CgroupDriverKind::Systemd
    }
}

/// The v1 controllers the manager creates cgroups in, when mounted.
pub const V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "hugetlb", "blkio", "devices", "freezer",
];

/// v1 hierarchies without a resource controller that the runtime also
/// places containers in, so pod cgroups appear there too: `name=systemd`
/// (mounted at `systemd`) and, on a hybrid host, the unified hierarchy
/// (`unified`). Upstream's cgroupfs manager joins both and removes the pod
/// cgroup from both (opencontainers/cgroups `fs/fs.go`: the `name=systemd`
/// `NameGroup`, and the `""` one added when `IsCgroup2HybridMode`); the
/// manager creates nothing in them, but [`CgroupManager::destroy`] removes
/// what the runtime left there.
pub const V1_NAMED_HIERARCHIES: &[&str] = &["systemd", "unified"];

/// The v2 controllers the manager enables in `cgroup.subtree_control`, when available.
pub const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory", "pids", "hugetlb", "io"];

/// The kubelet's cgroup operations (upstream `CgroupManager`).
pub trait CgroupManager: Send + Sync {
    /// Creates the cgroup (and missing parents) and applies `config`.
    fn create(&self, name: &CgroupName, config: &ResourceConfig) -> Result<()>;
    /// Applies `config` to an existing cgroup.
    fn update(&self, name: &CgroupName, config: &ResourceConfig) -> Result<()>;
    /// Removes the cgroup and any child cgroups (they must hold no processes).
    fn destroy(&self, name: &CgroupName) -> Result<()>;
    /// Whether the cgroup exists in every hierarchy the manager uses.
    fn exists(&self, name: &CgroupName) -> bool;
    /// The literal name for the runtime (CRI `cgroup_parent`).
    fn literal_name(&self, name: &CgroupName) -> String;
    /// The processes in the cgroup and its children.
    fn pids(&self, name: &CgroupName) -> Result<Vec<u32>>;
    /// Reads the cgroup's current values back.
    fn read_config(&self, name: &CgroupName) -> Result<ResourceConfig>;
    /// Sets `cpuset.cpus` (the CPU manager's pools), copying `cpuset.mems`
    /// from the parent when empty.
    fn set_cpuset(&self, name: &CgroupName, cpus: &str) -> Result<()>;
    /// The child cgroups of `name` found in any hierarchy (none by default).
    fn children(&self, name: &CgroupName) -> Result<Vec<CgroupName>> {
        let _ = name;
        Ok(Vec::new())
    }
}

/// A [`CgroupManager`] that writes cgroup files under a mount root.
#[derive(Debug, Clone)]
pub struct FsCgroupManager<D: CgroupDriver = Cgroupfs> {
    mount_root: PathBuf,
    version: CgroupVersion,
    driver: D,
    /// v1: (controller name, its mount point), one per distinct hierarchy.
    hierarchies: Vec<(String, PathBuf)>,
    /// v1: the mount points of [`V1_NAMED_HIERARCHIES`] found.
    named: Vec<PathBuf>,
}

/// One cgroup interface file and the value written to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFile {
    /// The controller (`cpu`, `memory`, `pids`, `hugetlb`, `cpuset`): on
    /// cgroup v1 the hierarchy the file lives in.
    pub controller: &'static str,
    /// The file's name (`cpu.shares`, `memory.max`, …).
    pub file: String,
    /// The value written, as written.
    pub value: String,
}

impl CgroupFile {
    fn new(controller: &'static str, file: impl Into<String>, value: impl ToString) -> Self {
        Self {
            controller,
            file: file.into(),
            value: value.to_string(),
        }
    }
}

/// The files a [`ResourceConfig`] writes on `version`, in write order, with
/// their values: what [`FsCgroupManager`] writes for pod and QoS cgroups, and
/// what runc writes for the same values (runc's `fs` and `fs2` setters; upstream
/// `pkg/kubelet/cm/cgroup_manager_linux.go` hands libcontainer the same config).
/// v2 converts shares to `cpu.weight` ([`cpu_shares_to_weight`]), quota and
/// period to `cpu.max`, and -1 to `max`.
pub fn cgroup_files(version: CgroupVersion, cfg: &ResourceConfig) -> Vec<CgroupFile> {
    let mut out = Vec::new();
    let max_or = |v: i64, unlimited_at_or_below: i64| {
        if v <= unlimited_at_or_below {
            "max".to_owned()
        } else {
            v.to_string()
        }
    };
    match version {
        CgroupVersion::V1 => {
            if let Some(shares) = cfg.cpu_shares {
                out.push(CgroupFile::new("cpu", "cpu.shares", shares));
            }
            if let Some(p) = cfg.cpu_period {
                out.push(CgroupFile::new("cpu", "cpu.cfs_period_us", p));
            }
            if let Some(q) = cfg.cpu_quota {
                out.push(CgroupFile::new("cpu", "cpu.cfs_quota_us", q));
            }
            if let Some(limit) = cfg.memory_limit {
                out.push(CgroupFile::new("memory", "memory.limit_in_bytes", limit));
            }
            if let Some(limit) = cfg.pids_limit {
                out.push(CgroupFile::new("pids", "pids.max", max_or(limit, 0)));
            }
            for (size, limit) in &cfg.hugepage_limits {
                out.push(CgroupFile::new(
                    "hugetlb",
                    format!("hugetlb.{size}.limit_in_bytes"),
                    limit,
                ));
            }
        }
        CgroupVersion::V2 => {
            if let Some(shares) = cfg.cpu_shares {
                out.push(CgroupFile::new(
                    "cpu",
                    "cpu.weight",
                    cpu_shares_to_weight(shares),
                ));
            }
            if cfg.cpu_quota.is_some() || cfg.cpu_period.is_some() {
                let quota = match cfg.cpu_quota {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".to_owned(),
                };
                let period = cfg.cpu_period.unwrap_or(crate::resources::QUOTA_PERIOD_US);
                out.push(CgroupFile::new(
                    "cpu",
                    "cpu.max",
                    format!("{quota} {period}"),
                ));
            }
            if let Some(limit) = cfg.memory_limit {
                out.push(CgroupFile::new("memory", "memory.max", max_or(limit, -1)));
            }
            if let Some(limit) = cfg.pids_limit {
                out.push(CgroupFile::new("pids", "pids.max", max_or(limit, 0)));
            }
            for (size, limit) in &cfg.hugepage_limits {
                out.push(CgroupFile::new(
                    "hugetlb",
                    format!("hugetlb.{size}.max"),
                    limit,
                ));
            }
        }
    }
    out
}

pub(crate) fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    tracing::trace!(path = %path.display(), value, "cgroup write");
    std::fs::write(path, value).map_err(|e| Error::io("write", path, e))
}

fn parse_i64(path: &Path, text: &str) -> Result<Option<i64>> {
    let t = text.trim();
    if t == "max" {
        return Ok(Some(-1));
    }
    t.parse::<i64>().map(Some).map_err(|_| Error::Parse {
        path: path.to_owned(),
        reason: format!("not a number: {t:?}"),
    })
}

impl FsCgroupManager<Cgroupfs> {
    /// A cgroupfs-driver manager for the cgroups under `mount_root`
    /// (`/sys/fs/cgroup`), detecting v1 or v2.
    pub fn new(mount_root: impl Into<PathBuf>) -> Self {
        Self::with_driver(mount_root, Cgroupfs)
    }
}

impl<D: CgroupDriver> FsCgroupManager<D> {
    /// A manager with the given driver.
    pub fn with_driver(mount_root: impl Into<PathBuf>, driver: D) -> Self {
        let mount_root = mount_root.into();
        let version = detect_cgroup_version(&mount_root);
        let mut hierarchies: Vec<(String, PathBuf)> = Vec::new();
        let mut named = Vec::new();
        if version == CgroupVersion::V1 {
            named = V1_NAMED_HIERARCHIES
                .iter()
                .map(|h| mount_root.join(h))
                .filter(|p| p.is_dir())
                .collect();
            let mut seen = Vec::new();
            for c in V1_CONTROLLERS {
                let p = mount_root.join(c);
                if !p.is_dir() {
                    continue;
                }
                // cpu and cpuacct are often one hierarchy behind two symlinks.
                let canon = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
                if seen.contains(&canon) {
                    continue;
                }
                seen.push(canon);
                hierarchies.push(((*c).to_owned(), p));
            }
        }
        FsCgroupManager {
            mount_root,
            version,
            driver,
            hierarchies,
            named,
        }
    }

    /// The detected cgroup version.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The mount root this manager works under.
    pub fn mount_root(&self) -> &Path {
        &self.mount_root
    }

    /// The v1 controllers found (one per hierarchy); empty on v2.
    pub fn controllers(&self) -> impl Iterator<Item = &str> {
        self.hierarchies.iter().map(|(c, _)| c.as_str())
    }

    /// The directory of `name` in `controller`'s hierarchy (v1), or in the
    /// unified hierarchy (v2, `controller` ignored). `None` when that v1
    /// controller is not mounted.
    pub fn path(&self, controller: &str, name: &CgroupName) -> Option<PathBuf> {
        let rel = self.driver.relative_path(name);
        match self.version {
            CgroupVersion::V2 => Some(self.mount_root.join(rel)),
            CgroupVersion::V1 => self
                .hierarchies
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, p)| p.join(&rel))
                .or_else(|| {
                    // cpuacct and cpu share a hierarchy when mounted together.
                    let p = self.mount_root.join(controller);
                    p.is_dir().then(|| p.join(&rel))
                }),
        }
    }

    fn all_dirs(&self, name: &CgroupName) -> Vec<PathBuf> {
        let rel = self.driver.relative_path(name);
        match self.version {
            CgroupVersion::V2 => vec![self.mount_root.join(rel)],
            CgroupVersion::V1 => self.hierarchies.iter().map(|(_, p)| p.join(&rel)).collect(),
        }
    }

    fn ancestors(name: &CgroupName) -> Vec<CgroupName> {
        (1..=name.parts().len())
            .map(|n| CgroupName::new(name.parts()[..n].iter().cloned()))
            .collect()
    }

    fn mkdir(dir: &Path) -> Result<bool> {
        match std::fs::create_dir(dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io("create dir", dir, e)),
        }
    }

    fn create_dirs(&self, name: &CgroupName) -> Result<()> {
        for level in Self::ancestors(name) {
            match self.version {
                CgroupVersion::V1 => {
                    for (controller, mount) in &self.hierarchies {
                        let dir = mount.join(self.driver.relative_path(&level));
                        if Self::mkdir(&dir)? && controller == "cpuset" {
                            self.copy_cpuset_from_parent(&dir)?;
                        }
                    }
                }
                CgroupVersion::V2 => {
                    // Enable controllers in the parent before creating the child:
                    // the "no internal processes" rule makes this fail on a
                    // parent with processes, so it is never done on a leaf.
                    let parent = self
                        .mount_root
                        .join(self.driver.relative_path(&level.parent()));
                    self.enable_v2_controllers(&parent)?;
                    Self::mkdir(&self.mount_root.join(self.driver.relative_path(&level)))?;
                }
            }
        }
        Ok(())
    }

    fn enable_v2_controllers(&self, dir: &Path) -> Result<()> {
        let available = read_file(&dir.join("cgroup.controllers"))?;
        let enabled = read_file(&dir.join("cgroup.subtree_control")).unwrap_or_default();
        let mut want = String::new();
        for c in V2_CONTROLLERS {
            let has = available.split_whitespace().any(|a| a == *c);
            let on = enabled.split_whitespace().any(|a| a == *c);
            if has && !on {
                let _ = write!(want, "+{c} ");
            }
        }
        if want.is_empty() {
            return Ok(());
        }
        write_file(&dir.join("cgroup.subtree_control"), want.trim_end())
    }

    /// v1 cpuset: a new cgroup starts with empty `cpuset.cpus`/`cpuset.mems`
    /// and cannot hold tasks until they are set; copy the parent's.
    fn copy_cpuset_from_parent(&self, dir: &Path) -> Result<()> {
        let Some(parent) = dir.parent() else {
            return Ok(());
        };
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = dir.join(file);
            if !own.exists() {
                continue;
            }
            if read_file(&own)?.trim().is_empty() {
                let value = read_file(&parent.join(file))?;
                if !value.trim().is_empty() {
                    write_file(&own, value.trim())?;
                }
            }
        }
        Ok(())
    }

    fn apply(&self, name: &CgroupName, cfg: &ResourceConfig) -> Result<()> {
        match self.version {
            CgroupVersion::V1 => self.apply_v1(name, cfg),
            CgroupVersion::V2 => self.apply_v2(name, cfg),
        }
    }

    fn apply_v1(&self, name: &CgroupName, cfg: &ResourceConfig) -> Result<()> {
        let files = cgroup_files(CgroupVersion::V1, cfg);
        let mut written_early = None;
        for (i, f) in files.iter().enumerate() {
            if written_early == Some(i) {
                continue;
            }
            let Some(dir) = self.path(f.controller, name) else {
                continue;
            };
            if f.controller == "hugetlb" && !dir.is_dir() {
                tracing::debug!(cgroup = %name, "hugetlb controller not mounted; huge page limits skipped");
                continue;
            }
            let path = dir.join(&f.file);
            let quota_next = files
                .get(i + 1)
                .filter(|q| q.file == "cpu.cfs_quota_us")
                .map(|q| (i + 1, q));
            match (write_file(&path, &f.value), quota_next) {
                (Ok(()), _) => {}
                // As runc: the period first; if the kernel refuses it against
                // the old quota, write the quota and retry.
                (Err(_), Some((j, quota))) if f.file == "cpu.cfs_period_us" => {
                    write_file(&dir.join(&quota.file), &quota.value)?;
                    write_file(&path, &f.value)?;
                    written_early = Some(j);
                }
                (Err(e), _) => return Err(e),
            }
        }
        Ok(())
    }

    fn apply_v2(&self, name: &CgroupName, cfg: &ResourceConfig) -> Result<()> {
        let dir = self.mount_root.join(self.driver.relative_path(name));
        for f in cgroup_files(CgroupVersion::V2, cfg) {
            let path = dir.join(&f.file);
            // Huge page sizes the kernel does not offer have no file.
            if f.controller == "hugetlb" && !path.exists() {
                continue;
            }
            write_file(&path, &f.value)?;
        }
        Ok(())
    }

    fn collect_pids(dir: &Path, out: &mut Vec<u32>) -> Result<()> {
        let procs = dir.join("cgroup.procs");
        match std::fs::read_to_string(&procs) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let pid = line.trim().parse().map_err(|_| Error::Parse {
                        path: procs.clone(),
                        reason: format!("not a pid: {line:?}"),
                    })?;
                    out.push(pid);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("read", procs, e)),
        }
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read dir", dir, e))?;
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                Self::collect_pids(&entry.path(), out)?;
            }
        }
        Ok(())
    }

    /// Removes `dir` after its child directories, deepest first.
    fn remove_tree(dir: &Path) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("read dir", dir, e)),
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                Self::remove_tree(&entry.path())?;
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // A cgroupfs directory with its children gone is removable even
            // though it lists interface files; ENOTEMPTY therefore means a
            // plain directory tree (a test fixture), whose files are ordinary.
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read dir", dir, e))?;
                for entry in entries.flatten() {
                    let p = entry.path();
                    std::fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
                }
                std::fs::remove_dir(dir).map_err(|e| Error::io("remove dir", dir, e))
            }
            Err(e) => Err(Error::io("remove dir", dir, e)),
        }
    }

    fn read_opt(path: &Path) -> Result<Option<i64>> {
        match std::fs::read_to_string(path) {
            Ok(t) => parse_i64(path, &t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }
}

impl<D: CgroupDriver> CgroupManager for FsCgroupManager<D> {
    fn create(&self, name: &CgroupName, config: &ResourceConfig) -> Result<()> {
        tracing::debug!(cgroup = %name, ?config, "creating cgroup");
        self.create_dirs(name)?;
        self.apply(name, config)
    }

    fn update(&self, name: &CgroupName, config: &ResourceConfig) -> Result<()> {
        tracing::debug!(cgroup = %name, ?config, "updating cgroup");
        self.apply(name, config)
    }

    fn destroy(&self, name: &CgroupName) -> Result<()> {
        if name.is_root() {
            return Err(Error::InvalidConfig(
                "refusing to destroy the root cgroup".into(),
            ));
        }
        tracing::debug!(cgroup = %name, "removing cgroup");
        for dir in self.all_dirs(name) {
            Self::remove_tree(&dir)?;
        }
        // The runtime's directories in the hierarchies without resource
        // controllers: the containers that made them are gone by now.
        let rel = self.driver.relative_path(name);
        for root in &self.named {
            Self::remove_tree(&root.join(&rel))?;
        }
        Ok(())
    }

    fn children(&self, name: &CgroupName) -> Result<Vec<CgroupName>> {
        let mut out: Vec<CgroupName> = Vec::new();
        for dir in self.all_dirs(name) {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read dir", &dir, e)),
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let literal = entry.file_name().to_string_lossy().into_owned();
                // The systemd driver's `kubepods-burstable-pod1_2.slice` is
                // the part `pod1-2` below `kubepods/burstable`.
                let part = match self.driver.kind() {
                    CgroupDriverKind::Systemd => literal
                        .strip_suffix(".slice")
                        .and_then(|base| base.rsplit('-').next())
                        .map(|p| p.replace('_', "-")),
                    _ => Some(literal),
                };
                if let Some(part) = part {
                    let child = name.child(part);
                    if !out.contains(&child) {
                        out.push(child);
                    }
                }
            }
        }
        Ok(out)
    }

    fn exists(&self, name: &CgroupName) -> bool {
        let dirs = self.all_dirs(name);
        !dirs.is_empty() && dirs.iter().all(|d| d.is_dir())
    }

    fn literal_name(&self, name: &CgroupName) -> String {
        self.driver.literal_name(name)
    }

    fn pids(&self, name: &CgroupName) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for dir in self.all_dirs(name) {
            Self::collect_pids(&dir, &mut out)?;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn read_config(&self, name: &CgroupName) -> Result<ResourceConfig> {
        let mut cfg = ResourceConfig::default();
        match self.version {
            CgroupVersion::V1 => {
                if let Some(dir) = self.path("cpu", name) {
                    cfg.cpu_shares = Self::read_opt(&dir.join("cpu.shares"))?
                        .and_then(|v| u64::try_from(v).ok());
                    cfg.cpu_quota = Self::read_opt(&dir.join("cpu.cfs_quota_us"))?;
                    cfg.cpu_period = Self::read_opt(&dir.join("cpu.cfs_period_us"))?
                        .and_then(|v| u64::try_from(v).ok());
                }
                if let Some(dir) = self.path("memory", name) {
                    cfg.memory_limit = Self::read_opt(&dir.join("memory.limit_in_bytes"))?;
                }
                if let Some(dir) = self.path("pids", name) {
                    cfg.pids_limit = Self::read_opt(&dir.join("pids.max"))?;
                }
            }
            CgroupVersion::V2 => {
                let dir = self.mount_root.join(self.driver.relative_path(name));
                if let Some(w) = Self::read_opt(&dir.join("cpu.weight"))? {
                    // Reported as weight; the inverse of the shares mapping is lossy.
                    cfg.cpu_shares = u64::try_from(w).ok();
                }
                let cpu_max = dir.join("cpu.max");
                if cpu_max.exists() {
                    let text = read_file(&cpu_max)?;
                    let mut it = text.split_whitespace();
                    cfg.cpu_quota = it
                        .next()
                        .map(|q| parse_i64(&cpu_max, q))
                        .transpose()?
                        .flatten();
                    cfg.cpu_period = it
                        .next()
                        .map(|p| parse_i64(&cpu_max, p))
                        .transpose()?
                        .flatten()
                        .and_then(|v| u64::try_from(v).ok());
                }
                cfg.memory_limit = Self::read_opt(&dir.join("memory.max"))?;
                cfg.pids_limit = Self::read_opt(&dir.join("pids.max"))?;
            }
        }
        Ok(cfg)
    }

    fn set_cpuset(&self, name: &CgroupName, cpus: &str) -> Result<()> {
        let Some(dir) = self.path("cpuset", name) else {
            return Ok(());
        };
        if self.version == CgroupVersion::V1 {
            self.copy_cpuset_from_parent(&dir)?;
        }
        write_file(&dir.join("cpuset.cpus"), cpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture v1 tree: controller directories with the files the kernel would have.
    fn v1_fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for c in ["cpu", "cpuset", "memory", "pids"] {
            std::fs::create_dir_all(dir.path().join(c)).unwrap();
        }
        std::fs::write(dir.path().join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
        std::fs::write(dir.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        dir
    }

    #[test]
    fn detects_versions() {
        let v1 = v1_fixture();
        assert_eq!(detect_cgroup_version(v1.path()), CgroupVersion::V1);
        // Hybrid: a v2 hierarchy at unified/ does not make the host v2.
        std::fs::create_dir_all(v1.path().join("unified")).unwrap();
        std::fs::write(v1.path().join("unified/cgroup.controllers"), "").unwrap();
        assert_eq!(detect_cgroup_version(v1.path()), CgroupVersion::V1);
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        assert_eq!(detect_cgroup_version(v2.path()), CgroupVersion::V2);
    }

    #[test]
    fn v1_create_writes_files_and_copies_cpuset() {
        let root = v1_fixture();
        let m = FsCgroupManager::new(root.path());
        assert_eq!(
            m.controllers().collect::<Vec<_>>(),
            ["cpu", "cpuset", "memory", "pids"]
        );
        let name = CgroupName::new(["kubepods", "burstable", "pod1"]);
        let cfg = ResourceConfig {
            cpu_shares: Some(256),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(67_108_864),
            pids_limit: Some(1024),
            ..Default::default()
        };
        // Plain directories do not get kernel files: pre-create the cpuset ones.
        m.create(&name, &cfg).unwrap();
        let r = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(r("cpu/kubepods/burstable/pod1/cpu.shares"), "256");
        assert_eq!(r("cpu/kubepods/burstable/pod1/cpu.cfs_quota_us"), "50000");
        assert_eq!(r("cpu/kubepods/burstable/pod1/cpu.cfs_period_us"), "100000");
        assert_eq!(
            r("memory/kubepods/burstable/pod1/memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(r("pids/kubepods/burstable/pod1/pids.max"), "1024");
        assert!(m.exists(&name));
        assert_eq!(m.read_config(&name).unwrap(), cfg);
        assert_eq!(m.literal_name(&name), "/kubepods/burstable/pod1");
        m.destroy(&CgroupName::new(["kubepods"])).unwrap();
        assert!(!root.path().join("cpu/kubepods").exists());
        assert!(!m.exists(&name));
    }

    #[test]
    fn v2_create_enables_controllers_and_writes_files() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        )
        .unwrap();
        std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        let m = FsCgroupManager::new(root.path());
        assert_eq!(m.version(), CgroupVersion::V2);
        let name = CgroupName::new(["kubepods"]);
        let cfg = ResourceConfig {
            cpu_shares: Some(1024),
            cpu_quota: Some(-1),
            cpu_period: Some(100_000),
            memory_limit: Some(1 << 30),
            pids_limit: Some(-1),
            ..Default::default()
        };
        m.create(&name, &cfg).unwrap();
        let r = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(
            r("cgroup.subtree_control"),
            "+cpu +cpuset +memory +pids +io"
        );
        assert_eq!(r("kubepods/cpu.weight"), "39");
        assert_eq!(r("kubepods/cpu.max"), "max 100000");
        assert_eq!(r("kubepods/memory.max"), "1073741824");
        assert_eq!(r("kubepods/pids.max"), "max");
        let back = m.read_config(&name).unwrap();
        assert_eq!(back.cpu_quota, Some(-1));
        assert_eq!(back.memory_limit, Some(1 << 30));
    }

    /// Soak regression: runc puts a pod's containers in the `name=systemd`
    /// and hybrid `unified` hierarchies too; destroying the pod cgroup must
    /// remove them there, or every pod leaks two cgroups.
    #[test]
    fn destroy_removes_the_runtime_dirs_in_named_hierarchies() {
        let root = v1_fixture();
        for h in V1_NAMED_HIERARCHIES {
            std::fs::create_dir_all(root.path().join(h)).unwrap();
        }
        let m = FsCgroupManager::new(root.path());
        let pod = CgroupName::new(["kubepods", "besteffort", "podabc"]);
        m.create(&pod, &ResourceConfig::default()).unwrap();
        // What runc makes for a container of the pod.
        for h in V1_NAMED_HIERARCHIES {
            std::fs::create_dir_all(root.path().join(h).join("kubepods/besteffort/podabc/c1"))
                .unwrap();
        }
        m.destroy(&pod).unwrap();
        for h in V1_NAMED_HIERARCHIES
            .iter()
            .chain(&["cpu", "memory", "pids"])
        {
            let dir = root.path().join(h).join("kubepods/besteffort/podabc");
            assert!(!dir.exists(), "{} is left", dir.display());
            assert!(root.path().join(h).join("kubepods/besteffort").is_dir());
        }
        // Not made there by the manager: creating a cgroup leaves them alone.
        let other = CgroupName::new(["kubepods", "burstable", "poddef"]);
        m.create(&other, &ResourceConfig::default()).unwrap();
        assert!(!root.path().join("systemd/kubepods/burstable").exists());
    }

    #[test]
    fn errors_name_the_file() {
        let root = v1_fixture();
        let m = FsCgroupManager::new(root.path());
        // A file where a directory should be.
        std::fs::write(root.path().join("memory/kubepods"), "").unwrap();
        let err = m
            .create(
                &CgroupName::new(["kubepods", "x"]),
                &ResourceConfig::default(),
            )
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("memory/kubepods/x"), "{msg}");
        assert!(m.destroy(&CgroupName::root()).is_err());
    }

    #[test]
    fn systemd_driver_lays_out_slices() {
        let root = v1_fixture();
        let m = FsCgroupManager::with_driver(root.path(), Systemd);
        let name = CgroupName::new(["kubepods", "burstable", "pod1-2"]);
        m.create(
            &name,
            &ResourceConfig {
                cpu_shares: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            m.literal_name(&name),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice"
        );
        assert!(root
            .path()
            .join("cpu/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice/cpu.shares")
            .is_file());
    }

    #[test]
    fn cgroup_files_for_both_versions() {
        let cfg = ResourceConfig {
            cpu_shares: Some(256),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(64 << 20),
            pids_limit: Some(-1),
            hugepage_limits: [("2MB".to_owned(), 0)].into(),
        };
        let pairs = |v| {
            cgroup_files(v, &cfg)
                .into_iter()
                .map(|f| format!("{}/{}={}", f.controller, f.file, f.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pairs(CgroupVersion::V1),
            [
                "cpu/cpu.shares=256",
                "cpu/cpu.cfs_period_us=100000",
                "cpu/cpu.cfs_quota_us=50000",
                "memory/memory.limit_in_bytes=67108864",
                "pids/pids.max=max",
                "hugetlb/hugetlb.2MB.limit_in_bytes=0",
            ]
        );
        assert_eq!(
            pairs(CgroupVersion::V2),
            [
                "cpu/cpu.weight=10",
                "cpu/cpu.max=50000 100000",
                "memory/memory.max=67108864",
                "pids/pids.max=max",
                "hugetlb/hugetlb.2MB.max=0",
            ]
        );
        let unlimited = ResourceConfig {
            cpu_quota: Some(-1),
            memory_limit: Some(-1),
            ..Default::default()
        };
        let v2: Vec<_> = cgroup_files(CgroupVersion::V2, &unlimited)
            .into_iter()
            .map(|f| f.value)
            .collect();
        assert_eq!(v2, ["max 100000", "max"]);
    }
}
