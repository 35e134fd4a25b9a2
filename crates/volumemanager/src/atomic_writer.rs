//! The atomic writer (upstream `pkg/volume/util/atomic_writer.go`): projects
//! a set of files into a volume directory so that a reader never sees a
//! half-updated set.
//!
//! The files live in a hidden timestamped directory
//! (`..2024_05_01_10_00_00.1234567890`); `..data` is a symlink to it; each
//! user-visible top-level entry is a symlink through `..data`
//! (`key -> ..data/key`, `dir -> ..data/dir`). An update writes a new
//! timestamped directory, points a new symlink `..data_tmp` at it and
//! renames that over `..data` (`rename(2)` is atomic), then adds and removes
//! user-visible links and deletes the old timestamped directory.
//!
//! As upstream, paths starting with `..` are reserved, and the writer
//! offers no concurrency guarantee: one writer per directory at a time (the
//! pod worker syncs a pod at a time). Better than upstream: a change of a
//! file's mode alone is written too (upstream compares contents only), a
//! `..data_tmp` left by an interrupted write does not block later writes,
//! timestamped directories left by an interrupted write are removed with
//! the next update, and a user-visible entry that is not the expected
//! symlink (a plain file written by an older version of this crate) is
//! replaced. Symlinks a container could plant through a writable mount are
//! never followed: `..data` is trusted only when it names a `..` directory
//! of the volume itself, the payload is written beneath the new directory's
//! descriptor with `O_NOFOLLOW`/`O_EXCL` one component at a time, and old
//! directories are removed by listing the volume, not by following
//! `..data`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::{Error, errno, io};

/// The symlink to the current timestamped directory (upstream
/// `dataDirName`).
pub const DATA_DIR_NAME: &str = "..data";
/// The symlink made for the swap (upstream `newDataDirName`).
const NEW_DATA_DIR_NAME: &str = "..data_tmp";
/// A temporary symlink used to replace a wrong user-visible entry.
const NEW_LINK_NAME: &str = "..link_tmp";
const MAX_FILE_NAME_LENGTH: usize = 255;
const MAX_PATH_LENGTH: usize = 4096;

/// One file of a payload (upstream `FileProjection`): its bytes and its
/// permission bits (only `0o777` is kept; ownership is not set).
#[derive(Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// The file's contents.
    pub data: Vec<u8>,
    /// The file's permission bits, e.g. `0o644`.
    pub mode: u32,
}

impl FileProjection {
    /// A file with these contents and mode.
    pub fn new(data: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self {
            data: data.into(),
            mode,
        }
    }
}

/// The contents are not printed: they may be a secret or a token.
impl std::fmt::Debug for FileProjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileProjection")
            .field("len", &self.data.len())
            .field("mode", &format_args!("{:#o}", self.mode))
            .finish()
    }
}

/// The files of a volume by relative path (upstream
/// `map[string]FileProjection`).
pub type Payload = BTreeMap<String, FileProjection>;

/// Checks a payload path as upstream `validatePath` (not empty, relative, no
/// `..` element, not starting with `..`, names of at most 255 bytes, at
/// most 4096 bytes in all) and returns it cleaned (`a//./b` → `a/b`).
pub fn clean_path(path: &str) -> Result<String, Error> {
    let fail = |reason: &'static str| {
        Err(Error::InvalidPath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return fail("must not be empty");
    }
    if path.starts_with('/') {
        return fail("must be a relative path");
    }
    if path.len() > MAX_PATH_LENGTH {
        return fail("must be at most 4096 bytes long");
    }
    if path.contains('\0') {
        return fail("must not contain NUL");
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        if part == ".." {
            return fail("must not contain '..'");
        }
        if part.len() > MAX_FILE_NAME_LENGTH {
            return fail("file names must be at most 255 bytes long");
        }
        if !part.is_empty() && part != "." {
            parts.push(part);
        }
    }
    match parts.first() {
        None => fail("must name a file"),
        Some(first) if first.starts_with("..") => fail("must not start with '..'"),
        Some(_) => Ok(parts.join("/")),
    }
}

/// Projects payloads into one directory atomically (upstream
/// `AtomicWriter`).
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    target_dir: PathBuf,
    log_context: String,
}

impl AtomicWriter {
    /// A writer for `target_dir`, which must exist (upstream
    /// `NewAtomicWriter`); `log_context` names it in logs (e.g.
    /// `pod ns/name volume cfg`).
    pub fn new(
        target_dir: impl Into<PathBuf>,
        log_context: impl Into<String>,
    ) -> Result<Self, Error> {
        let target_dir = target_dir.into();
        let meta = std::fs::metadata(&target_dir).map_err(io(&target_dir))?;
        if !meta.is_dir() {
            return Err(Error::Io {
                path: target_dir,
                source: std::io::Error::other("not a directory"),
            });
        }
        Ok(Self {
            target_dir,
            log_context: log_context.into(),
        })
    }

    /// The directory written.
    pub fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    /// Makes the directory hold exactly `payload` (upstream `Write`).
    /// Returns whether a new timestamped directory was written: `false`
    /// when the files on disk already had these contents and modes (then
    /// nothing is changed, apart from restoring a missing user-visible
    /// link).
    ///
    /// 1. the payload's paths are checked and cleaned;
    /// 2. the current timestamped directory is read from `..data`;
    /// 3. its files are compared with the payload (contents and mode) and
    ///    the paths no longer in the payload are listed;
    /// 4. on a change: a new timestamped directory (mode 0755) receives the
    ///    payload, `..data_tmp` is made to point at it and renamed over
    ///    `..data`;
    /// 5. user-visible symlinks of new top-level entries are made, those of
    ///    removed ones deleted, and the old timestamped directory removed.
    pub fn write(&self, payload: &Payload) -> Result<bool, Error> {
        // (1)
        let mut clean = BTreeMap::new();
        for (path, file) in payload {
            clean.insert(clean_path(path)?, file);
        }
        // (2)
        let data_dir = self.target_dir.join(DATA_DIR_NAME);
        let mut data_dir_is_link = true;
        let old_ts = match std::fs::read_link(&data_dir) {
            // Only one of ours: a `..` name in this directory, itself a
            // directory (not a symlink); anything else is rewritten.
            Ok(target) => target
                .to_str()
                .filter(|t| t.starts_with("..") && !t.contains('/') && *t != "..")
                .filter(|t| {
                    std::fs::symlink_metadata(self.target_dir.join(t)).is_ok_and(|m| m.is_dir())
                })
                .map(PathBuf::from),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            // `..data` is not a symlink: removed before the rename below.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                data_dir_is_link = false;
                None
            }
            Err(e) => return Err(io(&data_dir)(e)),
        };
        // (3)
        let mut to_remove = BTreeSet::new();
        let mut should_write = true;
        if let Some(old) = &old_ts {
            let old_path = self.target_dir.join(old);
            match walk(&old_path) {
                Ok(paths) => {
                    let mut new_paths = BTreeSet::new();
                    for path in clean.keys() {
                        let mut p = path.as_str();
                        loop {
                            new_paths.insert(p.to_owned());
                            match p.rsplit_once('/') {
                                Some((parent, _)) => p = parent,
                                None => break,
                            }
                        }
                    }
                    to_remove = paths.difference(&new_paths).cloned().collect();
                    should_write = payload_differs(&clean, &old_path)?;
                }
                // `..data` dangles: write everything again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&old_path)(e)),
            }
        }
        let write = should_write || !to_remove.is_empty();
        let mut new_ts = None;
        if write {
            // (4)
            let (ts, ts_fd) = self.new_timestamp_dir()?;
            let ts_name = ts.file_name().map(PathBuf::from).unwrap_or_default();
            if let Err(e) = write_payload_to_dir(&clean, &ts_fd, &ts) {
                let _ = std::fs::remove_dir_all(&ts);
                return Err(e);
            }
            let tmp = self.target_dir.join(NEW_DATA_DIR_NAME);
            remove_if_exists(&tmp)?;
            if let Err(e) = std::os::unix::fs::symlink(&ts_name, &tmp) {
                let _ = std::fs::remove_dir_all(&ts);
                return Err(io(&tmp)(e));
            }
            if !data_dir_is_link {
                remove_if_exists(&data_dir)?;
            }
            if let Err(e) = std::fs::rename(&tmp, &data_dir) {
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_dir_all(&ts);
                return Err(io(&data_dir)(e));
            }
            tracing::debug!(context = %self.log_context, dir = %ts.display(), "wrote a new data directory");
            new_ts = Some(ts_name);
        }
        // (5)
        let top: BTreeSet<&str> = clean
            .keys()
            .map(|p| p.split_once('/').map_or(p.as_str(), |(first, _)| first))
            .collect();
        self.create_user_visible_files(&top)?;
        if let Some(new_ts) = new_ts {
            for path in &to_remove {
                // Only top-level entries are links; deeper ones went with
                // the old timestamped directory.
                if !path.contains('/') && !top.contains(path.as_str()) {
                    remove_if_exists(&self.target_dir.join(path))?;
                }
            }
            self.remove_old_timestamp_dirs(&new_ts)?;
        } else {
            tracing::trace!(context = %self.log_context, "no update required");
        }
        Ok(write)
    }

    /// `..<UTC time>.<random>`, mode 0755 (upstream `newTimestampDir`).
    ///
    /// The directory is opened (not following a symlink) and its mode set
    /// through the descriptor, which the payload is then written beneath.
    fn new_timestamp_dir(&self) -> Result<(PathBuf, OwnedFd), Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let stamp = k8s_openapi::jiff::Timestamp::from_second(
            i64::try_from(now.as_secs()).unwrap_or_default(),
        )
        .map(|t| {
            t.to_string()
                .trim_end_matches('Z')
                .replace(['-', 'T', ':'], "_")
        })
        .unwrap_or_else(|_| now.as_secs().to_string());
        let mut last = None;
        for _ in 0..16 {
            let path = self
                .target_dir
                .join(format!("..{stamp}.{}", random_u64() % 10_000_000_000));
            match std::fs::DirBuilder::new().mode(0o755).create(&path) {
                Ok(()) => {
                    let fd = open_dir_nofollow(rustix::fs::CWD, &path).map_err(errno(&path))?;
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755)).map_err(errno(&path))?;
                    return Ok((path, fd));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Err(Error::Io {
            path: self.target_dir.clone(),
            source: last.unwrap_or_else(|| std::io::Error::other("no free name")),
        })
    }

    /// Makes `name -> ..data/name` for each top-level entry (upstream
    /// `createUserVisibleFiles`), replacing an entry that is not that link.
    fn create_user_visible_files(&self, top: &BTreeSet<&str>) -> Result<(), Error> {
        for name in top {
            let link = self.target_dir.join(name);
            let want = Path::new(DATA_DIR_NAME).join(name);
            match std::fs::read_link(&link) {
                Ok(target) if target == want => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::os::unix::fs::symlink(&want, &link).map_err(io(&link))?;
                    continue;
                }
                _ => {}
            }
            // A wrong link or a plain file or directory: replace it with one
            // rename, so that the name never disappears for a file.
            let tmp = self.target_dir.join(NEW_LINK_NAME);
            remove_if_exists(&tmp)?;
            std::os::unix::fs::symlink(&want, &tmp).map_err(io(&tmp))?;
            if std::fs::rename(&tmp, &link).is_err() {
                remove_if_exists(&link)?;
                std::fs::rename(&tmp, &link).map_err(io(&link))?;
            }
            tracing::debug!(context = %self.log_context, entry = %link.display(), "replaced a user-visible entry");
        }
        Ok(())
    }

    /// Removes every timestamped directory but `keep` (upstream removes the
    /// previous one; older ones are left by interrupted writes).
    fn remove_old_timestamp_dirs(&self, keep: &Path) -> Result<(), Error> {
        let entries = std::fs::read_dir(&self.target_dir).map_err(io(&self.target_dir))?;
        for entry in entries {
            let entry = entry.map_err(io(&self.target_dir))?;
            let name = entry.file_name();
            let Some(s) = name.to_str() else { continue };
            if !s.starts_with("..")
                || s == DATA_DIR_NAME
                || s == NEW_DATA_DIR_NAME
                || s == NEW_LINK_NAME
                || Path::new(s) == keep
            {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let path = entry.path();
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path)(e)),
                }
            }
        }
        Ok(())
    }
}

/// Every path under `dir`, relative, without following symlinks.
fn walk(dir: &Path) -> std::io::Result<BTreeSet<String>> {
    fn go(base: &Path, rel: &str, out: &mut BTreeSet<String>) -> std::io::Result<()> {
        let here = if rel.is_empty() {
            base.to_path_buf()
        } else {
            base.join(rel)
        };
        for entry in std::fs::read_dir(&here)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type()?.is_dir() {
                go(base, &path, out)?;
            }
            out.insert(path);
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    go(dir, "", &mut out)?;
    Ok(out)
}

/// Whether any file of the payload is missing from `old`, or differs in
/// contents or mode (upstream `shouldWritePayload` compares contents).
fn payload_differs(payload: &BTreeMap<String, &FileProjection>, old: &Path) -> Result<bool, Error> {
    for (path, file) in payload {
        let p = old.join(path);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
                return Ok(true);
            }
            Err(e) => return Err(io(&p)(e)),
        };
        if !meta.is_file()
            || meta.permissions().mode() & 0o777 != file.mode & 0o777
            || meta.len() != file.data.len() as u64
        {
            return Ok(true);
        }
        if std::fs::read(&p).map_err(io(&p))? != file.data {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Opens a directory for `*at` calls without following a symlink at its
/// last component.
fn open_dir_nofollow<Fd: AsFd, P: rustix::path::Arg>(dir: Fd, path: P) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Writes each file with its mode, whatever the umask (upstream
/// `writePayloadToDir`), beneath the new timestamped directory `root`
/// (`dir` is its path, for errors). Every directory is made and opened one
/// component at a time and every file created with `O_EXCL|O_NOFOLLOW`, so
/// a symlink planted in the volume (which a container could do through a
/// writable mount) is never followed: the write fails instead.
fn write_payload_to_dir(
    payload: &BTreeMap<String, &FileProjection>,
    root: &OwnedFd,
    dir: &Path,
) -> Result<(), Error> {
    for (path, file) in payload {
        let full = dir.join(path);
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let mut here: Option<OwnedFd> = None;
        for comp in parent.split('/').filter(|c| !c.is_empty()) {
            let base = here.as_ref().unwrap_or(root);
            let created = match rustix::fs::mkdirat(base, comp, Mode::from_raw_mode(0o755)) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(e) => return Err(errno(&full)(e)),
            };
            let sub = open_dir_nofollow(base, comp).map_err(errno(&full))?;
            if created {
                rustix::fs::fchmod(&sub, Mode::from_raw_mode(0o755)).map_err(errno(&full))?;
            }
            here = Some(sub);
        }
        let base = here.as_ref().unwrap_or(root);
        let mode = Mode::from_raw_mode(file.mode & 0o777);
        let fd = rustix::fs::openat(
            base,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode,
        )
        .map_err(errno(&full))?;
        rustix::fs::fchmod(&fd, mode).map_err(errno(&full))?;
        std::fs::File::from(fd)
            .write_all(&file.data)
            .map_err(io(&full))?;
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<(), Error> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// A random number from the standard library's per-process random keys
/// (no RNG dependency for a directory name and a jitter).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(p, d, m)| ((*p).to_owned(), FileProjection::new(d.as_bytes(), *m)))
            .collect()
    }

    fn ts_dirs(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("..") && n != DATA_DIR_NAME)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn paths_are_checked_and_cleaned() {
        assert_eq!(clean_path("a//./b").expect("clean"), "a/b");
        assert_eq!(clean_path("./a").expect("clean"), "a");
        for bad in [
            "", "/abs", "a/../b", "..", "..data", "..x/y", "./..data", ".", "a\0b",
        ] {
            assert!(clean_path(bad).is_err(), "{bad:?}");
        }
        assert!(clean_path(&"x".repeat(256)).is_err());
        assert!(clean_path(&["y"; 2100].join("/")).is_err());
        assert!(
            clean_path("a..b/..c").is_ok(),
            "only a leading '..' is reserved"
        );
    }

    #[test]
    fn files_are_links_through_data_and_updates_swap_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        let w = AtomicWriter::new(dir, "test").expect("writer");
        let first = payload(&[
            ("a", "1", 0o644),
            ("sub/b", "2", 0o600),
            ("sub/c/d", "3", 0o400),
        ]);
        assert!(w.write(&first).expect("write"));
        assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "1");
        assert_eq!(
            std::fs::read_to_string(dir.join("sub/c/d")).expect("d"),
            "3"
        );
        assert_eq!(
            std::fs::read_link(dir.join("a")).expect("link"),
            Path::new("..data/a")
        );
        assert_eq!(
            std::fs::read_link(dir.join("sub")).expect("link"),
            Path::new("..data/sub")
        );
        let ts1 = std::fs::read_link(dir.join(DATA_DIR_NAME)).expect("..data");
        let ts1 = ts1.to_str().expect("utf8").to_owned();
        assert!(ts1.starts_with("..") && ts1.len() > 20, "{ts1}");
        assert_eq!(ts_dirs(dir), vec![ts1.clone()]);
        let mode = |p: &str| {
            std::fs::metadata(dir.join(p))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("a"), 0o644);
        assert_eq!(mode("sub/b"), 0o600);
        assert_eq!(mode("sub/c/d"), 0o400);
        assert_eq!(mode(&ts1), 0o755);

        // The same payload: nothing is written.
        assert!(!w.write(&first).expect("write"));
        assert_eq!(
            std::fs::read_link(dir.join(DATA_DIR_NAME)).expect("..data"),
            Path::new(&ts1)
        );

        // A new value, a removed key, a new key: ..data swaps, the old
        // timestamped directory and the removed key's link go.
        let second = payload(&[("a", "one", 0o644), ("e", "5", 0o644)]);
        assert!(w.write(&second).expect("write"));
        let ts2 = std::fs::read_link(dir.join(DATA_DIR_NAME)).expect("..data");
        assert_ne!(ts2, Path::new(&ts1));
        assert_eq!(ts_dirs(dir), vec![ts2.to_str().expect("utf8").to_owned()]);
        assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "one");
        assert_eq!(std::fs::read_to_string(dir.join("e")).expect("e"), "5");
        assert!(
            std::fs::symlink_metadata(dir.join("sub")).is_err(),
            "removed key's link"
        );
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with(".."))
            .collect();
        names.sort();
        assert_eq!(names, ["a", "e"]);

        // A mode change alone is written.
        assert!(
            w.write(&payload(&[("a", "one", 0o600), ("e", "5", 0o644)]))
                .expect("write")
        );
        assert_eq!(mode("a"), 0o600);

        // An empty payload: an empty data directory, no visible entries.
        assert!(w.write(&Payload::new()).expect("write"));
        assert!(dir.join(DATA_DIR_NAME).is_dir());
        assert!(std::fs::symlink_metadata(dir.join("a")).is_err());
    }

    #[test]
    fn invalid_payloads_write_nothing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let w = AtomicWriter::new(tmp.path(), "test").expect("writer");
        assert!(w.write(&payload(&[("../x", "1", 0o644)])).is_err());
        assert!(w.write(&payload(&[("..data", "1", 0o644)])).is_err());
        assert_eq!(std::fs::read_dir(tmp.path()).expect("dir").count(), 0);
        assert!(AtomicWriter::new(tmp.path().join("missing"), "test").is_err());
    }

    #[test]
    fn stale_entries_are_repaired() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        // What an older version wrote: plain files and directories.
        std::fs::write(dir.join("name"), "old").expect("file");
        std::fs::create_dir_all(dir.join("sub")).expect("dir");
        std::fs::write(dir.join("sub/labels"), "old").expect("file");
        // An interrupted write: a ..data_tmp and an orphan timestamped dir.
        std::fs::create_dir(dir.join("..2020_01_01_00_00_00.1")).expect("orphan");
        std::os::unix::fs::symlink("..2020_01_01_00_00_00.1", dir.join(NEW_DATA_DIR_NAME))
            .expect("tmp link");
        let w = AtomicWriter::new(dir, "test").expect("writer");
        assert!(
            w.write(&payload(&[
                ("name", "new", 0o644),
                ("sub/labels", "l", 0o644)
            ]))
            .expect("write")
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("name")).expect("name"),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("sub/labels")).expect("labels"),
            "l"
        );
        assert_eq!(
            std::fs::read_link(dir.join("sub")).expect("link"),
            Path::new("..data/sub")
        );
        assert_eq!(ts_dirs(dir).len(), 1, "{:?}", ts_dirs(dir));
        // A deleted user-visible link is restored without a new write.
        std::fs::remove_file(dir.join("name")).expect("rm");
        assert!(
            !w.write(&payload(&[
                ("name", "new", 0o644),
                ("sub/labels", "l", 0o644)
            ]))
            .expect("write")
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("name")).expect("name"),
            "new"
        );
    }

    /// What a container with a writable mount could plant: `..data`
    /// pointing outside the volume, a symlink where the next timestamped
    /// directory's subdirectory will be. Nothing outside is read as the old
    /// version, written or removed.
    #[test]
    fn planted_symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).expect("outside");
        std::fs::write(outside.join("a"), "host file").expect("host file");
        let dir = tmp.path().join("vol");
        std::fs::create_dir(&dir).expect("vol");
        let w = AtomicWriter::new(&dir, "test").expect("writer");
        let files = payload(&[("a", "1", 0o644), ("sub/b", "2", 0o644)]);
        w.write(&files).expect("write");
        // ..data -> the host directory: treated as no data, rewritten.
        std::fs::remove_file(dir.join(DATA_DIR_NAME)).expect("rm");
        std::os::unix::fs::symlink(&outside, dir.join(DATA_DIR_NAME)).expect("plant");
        assert!(w.write(&files).expect("rewrite"));
        assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "1");
        assert_eq!(
            std::fs::read_to_string(outside.join("a")).expect("host"),
            "host file"
        );
        assert_eq!(ts_dirs(&dir).len(), 1);
        // ..data as a plain directory: replaced.
        std::fs::remove_file(dir.join(DATA_DIR_NAME)).expect("rm");
        std::fs::create_dir(dir.join(DATA_DIR_NAME)).expect("dir");
        std::fs::write(dir.join("..data/x"), "x").expect("x");
        assert!(w.write(&files).expect("rewrite"));
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).expect("b"), "2");
        // A symlink inside a payload directory is refused, not followed.
        let (ts, fd) = w.new_timestamp_dir().expect("ts");
        std::os::unix::fs::symlink(&outside, ts.join("sub")).expect("plant");
        let clean: BTreeMap<String, &FileProjection> =
            files.iter().map(|(k, v)| (k.clone(), v)).collect();
        assert!(write_payload_to_dir(&clean, &fd, &ts).is_err());
        assert!(!outside.join("b").exists(), "nothing written outside");
        std::os::unix::fs::symlink(outside.join("a"), ts.join("a2")).expect("plant");
        let one = payload(&[("a2", "x", 0o600)]);
        let clean: BTreeMap<String, &FileProjection> =
            one.iter().map(|(k, v)| (k.clone(), v)).collect();
        assert!(write_payload_to_dir(&clean, &fd, &ts).is_err());
        assert_eq!(
            std::fs::read_to_string(outside.join("a")).expect("host"),
            "host file"
        );
        let mode = std::fs::metadata(outside.join("a"))
            .expect("meta")
            .permissions()
            .mode();
        assert_ne!(mode & 0o777, 0o600, "no chmod through the link");
    }

    /// A reader that resolves `..data` once sees one complete version of
    /// every file; a reader of a user-visible path sees a complete old or
    /// new value. Each value is long, so that a file written in place would
    /// be seen half written.
    #[test]
    fn readers_never_see_a_mix_during_updates() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().to_path_buf();
        let value = |v: usize| format!("{v:08}").repeat(512);
        // A file too short to hold a version number gets none, and then
        // cannot equal `value(v)`.
        let version_of = |s: &str| {
            s.get(..8)
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        };
        let version = |v: usize| {
            let s = value(v);
            payload(&[("a", &s, 0o644), ("b", &s, 0o644), ("sub/c", &s, 0o644)])
        };
        let w = AtomicWriter::new(&dir, "test").expect("writer");
        w.write(&version(0)).expect("first");
        let done = AtomicBool::new(false);
        let (sets, singles) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let (mut sets, mut singles) = (0usize, 0usize);
                let mut last = 0usize;
                while !done.load(Ordering::Relaxed) {
                    // A whole set through one resolution of ..data.
                    if let Ok(data) = std::fs::canonicalize(dir.join(DATA_DIR_NAME)) {
                        let read: Result<Vec<String>, _> = ["a", "b", "sub/c"]
                            .iter()
                            .map(|f| std::fs::read_to_string(data.join(f)))
                            .collect();
                        // NotFound: that version was retired while read.
                        if let Ok(read) = read {
                            assert!(
                                read.iter().all(|r| r == &read[0]),
                                "a mixed set: {:?}",
                                read.iter().map(|r| r.get(..8)).collect::<Vec<_>>()
                            );
                            let v = version_of(&read[0]);
                            assert_eq!(read[0], value(v), "a half-written file");
                            assert!(v >= last, "went back from {last} to {v}");
                            last = v;
                            sets += 1;
                        }
                    }
                    // Single files through their user-visible links.
                    for f in ["a", "sub/c"] {
                        match std::fs::read_to_string(dir.join(f)) {
                            Ok(r) => {
                                let v = version_of(&r);
                                assert_eq!(r, value(v), "a half-written {f}");
                                singles += 1;
                            }
                            Err(e) => {
                                assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{f}: {e}")
                            }
                        }
                    }
                }
                (sets, singles)
            });
            for v in 1..=300 {
                w.write(&version(v)).expect("update");
            }
            done.store(true, Ordering::Relaxed);
            reader.join().expect("reader")
        });
        assert!(
            sets > 0 && singles > 0,
            "the reader read nothing: {sets} {singles}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("b")).expect("b"),
            value(300)
        );
        assert_eq!(ts_dirs(&dir).len(), 1);
    }
}
