//! Cgroup names and their cgroupfs and systemd spellings.
//!
//! Upstream: `pkg/kubelet/cm/cgroup_manager_linux.go` (`CgroupName`,
//! `ToCgroupfs`, `ToSystemd`, `ParseCgroupfsToCgroupName`,
//! `ParseSystemdToCgroupName`) and runc's `systemd.ExpandSlice`.

use std::fmt;

/// The driver that names cgroups on a node (kubelet `--cgroup-driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CgroupDriverKind {
    /// Plain directories under the cgroup mounts (upstream default).
    #[default]
    Cgroupfs,
    /// systemd slices (`kubepods.slice/kubepods-burstable.slice/...`).
    Systemd,
}

impl CgroupDriverKind {
    /// `"cgroupfs"` or `"systemd"`, as in the kubelet configuration.
    pub fn as_str(&self) -> &'static str {
        match self {
            CgroupDriverKind::Cgroupfs => "cgroupfs",
            CgroupDriverKind::Systemd => "systemd",
        }
    }

    /// The literal form of `name` for this driver.
    pub fn name(&self, name: &CgroupName) -> String {
        match self {
            CgroupDriverKind::Cgroupfs => name.to_cgroupfs(),
            CgroupDriverKind::Systemd => name.to_systemd(),
        }
    }
}

/// A cgroup as a list of components, independent of the driver:
/// `["kubepods", "burstable", "pod<uid>"]`. The empty list is the root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CgroupName(Vec<String>);

impl CgroupName {
    /// A name from its components. Empty components are dropped, so
    /// `CgroupName::new([""])` is the root, as upstream's `RootCgroupName`.
    pub fn new<I, S>(parts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        CgroupName(
            parts
                .into_iter()
                .map(Into::into)
                .filter(|p: &String| !p.is_empty())
                .collect(),
        )
    }

    /// The root cgroup.
    pub fn root() -> Self {
        CgroupName(Vec::new())
    }

    /// This name with `component` appended (upstream `NewCgroupName`).
    pub fn child(&self, component: impl Into<String>) -> Self {
        let mut parts = self.0.clone();
        let c = component.into();
        if !c.is_empty() {
            parts.push(c);
        }
        CgroupName(parts)
    }

    /// The components.
    pub fn parts(&self) -> &[String] {
        &self.0
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent (the root is its own parent).
    pub fn parent(&self) -> Self {
        let mut parts = self.0.clone();
        parts.pop();
        CgroupName(parts)
    }

    /// The cgroupfs form: `"/" + parts.join("/")`.
    pub fn to_cgroupfs(&self) -> String {
        format!("/{}", self.0.join("/"))
    }

    /// The systemd form: each part with `-` escaped to `_`, joined with `-`,
    /// suffixed `.slice`, then expanded into its slice hierarchy:
    /// `["kubepods","burstable","pod12-ab"]` becomes
    /// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_ab.slice`.
    pub fn to_systemd(&self) -> String {
        if self.0.is_empty() {
            return "/".to_owned();
        }
        let mut out = String::new();
        let mut prefix = String::new();
        for part in &self.0 {
            let escaped = part.replace('-', "_");
            if !prefix.is_empty() {
                prefix.push('-');
            }
            prefix.push_str(&escaped);
            out.push('/');
            out.push_str(&prefix);
            out.push_str(".slice");
        }
        out
    }

    /// Parses a cgroupfs path (upstream `ParseCgroupfsToCgroupName`).
    pub fn from_cgroupfs(path: &str) -> Self {
        CgroupName::new(path.split('/'))
    }

    /// Parses a systemd slice path back (upstream `ParseSystemdToCgroupName`):
    /// the last slice's name, `.slice` stripped, split on `-`, `_` unescaped to `-`.
    pub fn from_systemd(path: &str) -> Self {
        let base = path.rsplit('/').next().unwrap_or("");
        let base = base.strip_suffix(".slice").unwrap_or(base);
        if base.is_empty() || base == "-" {
            return CgroupName::root();
        }
        CgroupName::new(base.split('-').map(|p| p.replace('_', "-")))
    }
}

impl fmt::Display for CgroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_cgroupfs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_and_systemd_forms() {
        // (parts, cgroupfs, systemd) — upstream cgroup_manager_linux_test.go cases.
        let cases: &[(&[&str], &str, &str)] = &[
            (&[], "/", "/"),
            (&[""], "/", "/"),
            (&["system"], "/system", "/system.slice"),
            (
                &["system", "Burstable"],
                "/system/Burstable",
                "/system.slice/system-Burstable.slice",
            ),
            (
                &["Burstable", "pod-123"],
                "/Burstable/pod-123",
                "/Burstable.slice/Burstable-pod_123.slice",
            ),
            (&["test", "a-b"], "/test/a-b", "/test.slice/test-a_b.slice"),
            (
                &["test", "a-b", "Burstable"],
                "/test/a-b/Burstable",
                "/test.slice/test-a_b.slice/test-a_b-Burstable.slice",
            ),
            (
                &["kubepods", "burstable", "pod12-ab"],
                "/kubepods/burstable/pod12-ab",
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_ab.slice",
            ),
        ];
        for (parts, fs, sd) in cases {
            let n = CgroupName::new(parts.iter().copied());
            assert_eq!(n.to_cgroupfs(), *fs, "{parts:?}");
            assert_eq!(n.to_systemd(), *sd, "{parts:?}");
            assert_eq!(CgroupName::from_cgroupfs(fs), n);
            assert_eq!(CgroupName::from_systemd(sd), n);
            assert_eq!(CgroupDriverKind::Systemd.name(&n), *sd);
            assert_eq!(CgroupDriverKind::Cgroupfs.name(&n), *fs);
        }
    }

    #[test]
    fn child_and_parent() {
        let n = CgroupName::root().child("kubepods").child("besteffort");
        assert_eq!(n.parts(), ["kubepods", "besteffort"]);
        assert_eq!(n.parent().to_cgroupfs(), "/kubepods");
        assert!(CgroupName::root().parent().is_root());
        assert_eq!(n.to_string(), "/kubepods/besteffort");
    }
}
