//! Versioned, checksummed state files written atomically.
//!
//! Upstream keeps CPU and memory manager state in JSON with an FNV-32a
//! checksum (`pkg/kubelet/checkpointmanager`) and writes it with
//! `ioutil.WriteFile`-then-rename. Ours is a format of our own:
//!
//! ```json
//! {"kind":"cpu_manager_state","version":1,"checksum":"<fnv-1a 64-bit hex>","state":{...}}
//! ```
//!
//! The checksum covers the compact JSON of `state`. Writes go to a temp file
//! in the same directory, are fsynced, renamed over the checkpoint, and the
//! directory is fsynced, so a crash leaves either the old or the new file. A
//! leftover temp file (a torn write) is removed on load; the checkpoint it
//! would have replaced is still whole.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};

/// The checkpoint format version this crate writes and reads.
pub const CHECKPOINT_VERSION: u32 = 1;

const TMP_SUFFIX: &str = ".tmp";

/// FNV-1a, 64-bit.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    kind: String,
    version: u32,
    checksum: String,
    state: serde_json::Value,
}

/// A checkpoint file holding one state of type `T`.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
    kind: &'static str,
}

impl Checkpoint {
    /// A checkpoint at `path` whose envelope says `kind`.
    pub fn new(path: impl Into<PathBuf>, kind: &'static str) -> Self {
        Checkpoint {
            path: path.into(),
            kind,
        }
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tmp_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(TMP_SUFFIX);
        PathBuf::from(p)
    }

    fn corrupt(&self, what: impl std::fmt::Display) -> Error {
        Error::Checkpoint {
            path: self.path.clone(),
            reason: format!(
                "{what}; the state cannot be trusted: drain this node and delete the checkpoint file {} before restarting the kubelet",
                self.path.display()
            ),
        }
    }

    /// Loads the state; `Ok(None)` when there is no checkpoint yet. A
    /// leftover temp file from an interrupted write is removed first.
    pub fn load<T: DeserializeOwned + Serialize>(&self) -> Result<Option<T>> {
        let tmp = self.tmp_path();
        if tmp.exists() {
            tracing::warn!(path = %tmp.display(), "removing a partly written checkpoint");
            std::fs::remove_file(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
        }
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &self.path, e)),
        };
        let env: Envelope = serde_json::from_slice(&text)
            .map_err(|e| self.corrupt(format!("not a checkpoint ({e})")))?;
        if env.kind != self.kind {
            return Err(self.corrupt(format!("holds {:?}, expected {:?}", env.kind, self.kind)));
        }
        if env.version != CHECKPOINT_VERSION {
            return Err(self.corrupt(format!(
                "version {} is not supported (expected {CHECKPOINT_VERSION})",
                env.version
            )));
        }
        let body = serde_json::to_vec(&env.state).map_err(|e| self.corrupt(e))?;
        let sum = format!("{:016x}", fnv1a64(&body));
        if sum != env.checksum {
            return Err(self.corrupt(format!(
                "checksum mismatch (file says {}, content gives {sum})",
                env.checksum
            )));
        }
        let state = serde_json::from_value(env.state)
            .map_err(|e| self.corrupt(format!("bad state ({e})")))?;
        Ok(Some(state))
    }

    /// Writes the state atomically (temp file, fsync, rename, fsync the directory).
    pub fn store<T: Serialize>(&self, state: &T) -> Result<()> {
        let value = serde_json::to_value(state).map_err(|e| Error::Checkpoint {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let body = serde_json::to_vec(&value).map_err(|e| Error::Checkpoint {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let env = Envelope {
            kind: self.kind.to_owned(),
            version: CHECKPOINT_VERSION,
            checksum: format!("{:016x}", fnv1a64(&body)),
            state: value,
        };
        let bytes = serde_json::to_vec(&env).map_err(|e| Error::Checkpoint {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create dir", dir, e))?;
        let tmp = self.tmp_path();
        {
            let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
            f.write_all(&bytes)
                .map_err(|e| Error::io("write", &tmp, e))?;
            f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| Error::io("rename", &self.path, e))?;
        let d = std::fs::File::open(dir).map_err(|e| Error::io("open", dir, e))?;
        d.sync_all().map_err(|e| Error::io("fsync", dir, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct S {
        name: String,
        entries: BTreeMap<String, u32>,
    }

    fn sample() -> S {
        S {
            name: "static".into(),
            entries: [("a".into(), 1), ("b".into(), 2)].into(),
        }
    }

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let c = Checkpoint::new(d.path().join("state"), "test_state");
        assert_eq!(c.load::<S>().unwrap(), None);
        c.store(&sample()).unwrap();
        assert_eq!(c.load::<S>().unwrap(), Some(sample()));
        assert!(!d.path().join("state.tmp").exists());
    }

    #[test]
    fn corruption_detected() {
        let d = tempfile::tempdir().unwrap();
        let c = Checkpoint::new(d.path().join("state"), "test_state");
        c.store(&sample()).unwrap();
        let text = std::fs::read_to_string(c.path()).unwrap();
        // Change a value without fixing the checksum.
        std::fs::write(c.path(), text.replace("\"a\":1", "\"a\":7")).unwrap();
        let err = c.load::<S>().unwrap_err().to_string();
        assert!(
            err.contains("checksum mismatch") && err.contains("drain this node"),
            "{err}"
        );
        // Truncated file.
        std::fs::write(c.path(), &text[..text.len() / 2]).unwrap();
        assert!(
            c.load::<S>()
                .unwrap_err()
                .to_string()
                .contains("not a checkpoint")
        );
        // Another kind.
        let other = Checkpoint::new(d.path().join("state"), "other");
        std::fs::write(c.path(), &text).unwrap();
        assert!(
            other
                .load::<S>()
                .unwrap_err()
                .to_string()
                .contains("expected \"other\"")
        );
    }

    #[test]
    fn torn_write_recovered() {
        let d = tempfile::tempdir().unwrap();
        let c = Checkpoint::new(d.path().join("state"), "test_state");
        c.store(&sample()).unwrap();
        // A crash mid-write leaves half a temp file beside the old checkpoint.
        std::fs::write(d.path().join("state.tmp"), b"{\"kind\":\"test_st").unwrap();
        assert_eq!(c.load::<S>().unwrap(), Some(sample()));
        assert!(!d.path().join("state.tmp").exists());
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }
}
