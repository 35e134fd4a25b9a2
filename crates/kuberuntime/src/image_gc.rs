//! Image garbage collection: frees the image filesystem when it fills up.
//!
//! Mirrors upstream `realImageGCManager`
//! (`pkg/kubelet/images/image_gc_manager.go`):
//!
//! - [`ImageGcManager::detect_images`] (upstream `detectImages`) lists the
//!   runtime's images and containers and keeps, per image ID, when it was
//!   first detected and last used (an image is used while any container,
//!   running or exited, refers to it). The images present the first time
//!   the manager looks are taken as detected at an unknown time in the past,
//!   as upstream's `Start` does, so they are not protected by `min_age`.
//! - [`ImageGcManager::garbage_collect`] (upstream `GarbageCollect`) first
//!   removes images unused for longer than `max_age` (when set, and only
//!   once `max_age` has passed since the first collection; an image never
//!   used counts from its first detection, where upstream removes it at
//!   once), then reads the
//!   image filesystem's usage and, when it is at or over
//!   `high_threshold_percent`, frees bytes down to `low_threshold_percent` by
//!   removing unused images, least recently used first (upstream
//!   `freeSpace`). Images in use, pinned by the runtime (`Image.pinned`), or
//!   the sandbox image given to [`ImageGcManager::with_sandbox_image`]
//!   (which containerd pins only from 1.7 on), or younger than `min_age`,
//!   are never removed.
//! - [`ImageGcManager::delete_unused_images`] (upstream
//!   `DeleteUnusedImages`) removes every eligible image; eviction calls it
//!   under disk pressure.
//!
//! The image filesystem's usage comes as in upstream's CRI stats provider
//! (`pkg/kubelet/stats/cri_stats_provider.go`, `ImageFsStats`): the first
//! filesystem of the CRI `ImageFsInfo` reply gives the mountpoint and the
//! bytes used by images; capacity and available bytes come from
//! `statvfs(2)` of that mountpoint (cadvisor's `GetDirFsInfo`: `f_blocks`
//! and `f_bavail` times `f_frsize`), through the [`FsStat`] trait so tests
//! can pretend.
//!
//! Upstream runs detection every 5 minutes and collection every 5 minutes
//! ([`IMAGE_GC_PERIOD`], `ImageGCPeriod` in `pkg/kubelet/kubelet.go`); the
//! kubelet disables image GC when `imageGCHighThresholdPercent` is 100
//! ([`ImageGcPolicy::is_disabled`]). Times are parameters (`now`), so the
//! caller owns the clock.
//!
//! Not done: the image cache for node status (upstream's 30 s
//! `ListImages` loop), events, metrics, and runtime-class-aware image keys
//! (`RuntimeClassInImageCriAPI`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use kubelet_cri_client::api;

use crate::manager::CriRuntime;

/// How often upstream's kubelet collects images (`ImageGCPeriod`) and
/// detects them (`Start`): 5 minutes.
pub const IMAGE_GC_PERIOD: Duration = Duration::from_secs(5 * 60);

/// Upstream's `ImageGCPolicy`, with the kubelet's defaults
/// (`imageGCHighThresholdPercent` 85, `imageGCLowThresholdPercent` 80,
/// `imageMinimumGCAge` 2m, `imageMaximumGCAge` 0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Image filesystem usage (percent) at or over which images are removed.
    pub high_threshold_percent: u32,
    /// Usage (percent) the removal aims for.
    pub low_threshold_percent: u32,
    /// An image first detected less than this ago is never removed.
    pub min_age: Duration,
    /// An image unused for longer than this is removed whatever the usage;
    /// `None` (upstream 0) disables it.
    pub max_age: Option<Duration>,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        Self {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(2 * 60),
            max_age: None,
        }
    }
}

impl ImageGcPolicy {
    /// Checks the thresholds as upstream's `NewImageGCManager` does: each in
    /// `0..=100`, low not above high.
    pub fn validate(&self) -> Result<(), Error> {
        if self.high_threshold_percent > 100 {
            return Err(Error::InvalidPolicy(format!(
                "invalid HighThresholdPercent {}, must be in range [0-100]",
                self.high_threshold_percent
            )));
        }
        if self.low_threshold_percent > 100 {
            return Err(Error::InvalidPolicy(format!(
                "invalid LowThresholdPercent {}, must be in range [0-100]",
                self.low_threshold_percent
            )));
        }
        if self.low_threshold_percent > self.high_threshold_percent {
            return Err(Error::InvalidPolicy(format!(
                "LowThresholdPercent {} can not be higher than HighThresholdPercent {}",
                self.low_threshold_percent, self.high_threshold_percent
            )));
        }
        Ok(())
    }

    /// True when the kubelet would not run image GC at all: a high
    /// threshold of 100 (upstream `StartGarbageCollection`).
    pub fn is_disabled(&self) -> bool {
        self.high_threshold_percent >= 100
    }
}

/// Errors of image garbage collection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The policy is out of range.
    #[error("invalid image GC policy: {0}")]
    InvalidPolicy(String),
    /// A CRI call failed.
    #[error("image GC: {what}: {source}")]
    Cri {
        /// What was being done.
        what: &'static str,
        /// The CRI error.
        source: kubelet_cri_client::Error,
    },
    /// The runtime reported no image filesystem.
    #[error(
        "image GC: imageFs information is unavailable: the runtime reported no image filesystem"
    )]
    NoImageFs,
    /// `statvfs` of the image filesystem failed.
    #[error("image GC: statvfs of image filesystem {}: {source}", path.display())]
    FsStat {
        /// The mountpoint.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The image filesystem reports a capacity of 0.
    #[error("image GC: invalid capacity 0 on image filesystem {}", path.display())]
    InvalidCapacity {
        /// The mountpoint.
        path: PathBuf,
    },
    /// Removing some images failed; the others were removed.
    #[error(
        "image GC: wanted to free {wanted} bytes, but freed {freed} bytes with errors in image deletion: {}",
        join(errors)
    )]
    Remove {
        /// Bytes that were to be freed (`u64::MAX`: all that can be; 0:
        /// images older than `max_age`).
        wanted: u64,
        /// Bytes freed.
        freed: u64,
        /// Image IDs removed all the same.
        removed: Vec<String>,
        /// Each image that could not be removed, with its error.
        errors: Vec<(String, kubelet_cri_client::Error)>,
    },
    /// Every eligible image was removed and it was not enough (upstream's
    /// `FreeDiskSpaceFailed`).
    #[error(
        "image GC: failed to garbage collect required amount of images: attempted to free {wanted} bytes, but only found {freed} bytes eligible to free"
    )]
    Insufficient {
        /// Bytes that were to be freed.
        wanted: u64,
        /// Bytes freed.
        freed: u64,
        /// Image IDs removed all the same.
        removed: Vec<String>,
    },
}

fn join(errors: &[(String, kubelet_cri_client::Error)]) -> String {
    errors
        .iter()
        .map(|(id, e)| format!("{id}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Size and free space of a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsCapacity {
    /// Total size (`f_blocks * f_frsize`).
    pub capacity_bytes: u64,
    /// Space an unprivileged user may still use (`f_bavail * f_frsize`).
    pub available_bytes: u64,
}

/// Reads a filesystem's capacity; [`Statvfs`] in production.
pub trait FsStat: Send + Sync {
    /// The capacity of the filesystem holding `path`.
    fn fs_capacity(&self, path: &Path) -> std::io::Result<FsCapacity>;
}

/// [`FsStat`] by `statvfs(2)`, as cadvisor's `GetDirFsInfo`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Statvfs;

impl FsStat for Statvfs {
    fn fs_capacity(&self, path: &Path) -> std::io::Result<FsCapacity> {
        let st = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
        let frsize = if st.f_frsize == 0 {
            st.f_bsize
        } else {
            st.f_frsize
        };
        Ok(FsCapacity {
            capacity_bytes: st.f_blocks.saturating_mul(frsize),
            available_bytes: st.f_bavail.saturating_mul(frsize),
        })
    }
}

impl<F> FsStat for F
where
    F: Fn(&Path) -> std::io::Result<FsCapacity> + Send + Sync,
{
    fn fs_capacity(&self, path: &Path) -> std::io::Result<FsCapacity> {
        self(path)
    }
}

/// The image filesystem's usage (upstream `statsapi.FsStats` of
/// `ImageFsStats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFsStats {
    /// Where the runtime keeps images (`FilesystemIdentifier.mountpoint`).
    pub mountpoint: PathBuf,
    /// Bytes used by images, as the runtime reports.
    pub used_bytes: u64,
    /// Size of the filesystem.
    pub capacity_bytes: u64,
    /// Free space on it.
    pub available_bytes: u64,
}

/// What the manager knows of one image (upstream `imageRecord`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// When it was first seen; `UNIX_EPOCH` for images present at the first
    /// detection (upstream's zero time).
    pub first_detected: SystemTime,
    /// When a container last used it, if ever.
    pub last_used: Option<SystemTime>,
    /// Its size in bytes.
    pub size: u64,
    /// The runtime pinned it, or it is the sandbox image.
    pub pinned: bool,
}

/// What one collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageGcResult {
    /// Image IDs removed, in removal order.
    pub removed: Vec<String>,
    /// Bytes freed (the sizes of the removed images).
    pub freed_bytes: u64,
    /// The image filesystem's usage before removal (`None` when only
    /// [`ImageGcManager::delete_unused_images`] ran).
    pub fs_stats: Option<ImageFsStats>,
}

#[derive(Default)]
struct State {
    records: HashMap<String, ImageRecord>,
    initialized: bool,
    began_gc: Option<SystemTime>,
}

/// Removes unused images when the image filesystem fills up (upstream
/// `realImageGCManager`). Share it with an [`Arc`]; its methods take `&self`.
pub struct ImageGcManager {
    runtime: Arc<dyn CriRuntime>,
    policy: ImageGcPolicy,
    sandbox_image: Option<String>,
    fs: Arc<dyn FsStat>,
    state: Mutex<State>,
}

impl std::fmt::Debug for ImageGcManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageGcManager")
            .field("policy", &self.policy)
            .field("sandbox_image", &self.sandbox_image)
            .finish_non_exhaustive()
    }
}

struct Candidate {
    id: String,
    record: ImageRecord,
}

impl ImageGcManager {
    /// A manager over `runtime` with a validated `policy`, reading the image
    /// filesystem with `statvfs`.
    pub fn new(runtime: Arc<dyn CriRuntime>, policy: ImageGcPolicy) -> Result<Self, Error> {
        policy.validate()?;
        Ok(Self {
            runtime,
            policy,
            sandbox_image: None,
            fs: Arc::new(Statvfs),
            state: Mutex::new(State::default()),
        })
    }

    /// Never removes `image` (by tag, digest or ID): the pod sandbox
    /// (pause) image, which the CRI runtime pins (containerd from 1.7).
    pub fn with_sandbox_image(mut self, image: impl Into<String>) -> Self {
        self.sandbox_image = Some(image.into());
        self
    }

    /// Reads filesystem capacity with `fs` instead of `statvfs`.
    pub fn with_fs_stat(mut self, fs: Arc<dyn FsStat>) -> Self {
        self.fs = fs;
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> &ImageGcPolicy {
        &self.policy
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of what the manager knows, by image ID.
    pub fn records(&self) -> HashMap<String, ImageRecord> {
        self.state().records.clone()
    }

    fn is_sandbox_image(&self, image: &api::Image) -> bool {
        let Some(sandbox) = self.sandbox_image.as_deref() else {
            return false;
        };
        image.id == sandbox
            || image.repo_tags.iter().any(|t| t == sandbox)
            || image.repo_digests.iter().any(|d| d == sandbox)
    }

    /// Lists images and containers and updates the records (upstream
    /// `detectImages`); returns the IDs of the images in use.
    ///
    /// An image is in use when a container (in any state) has it as its
    /// `image_ref` (upstream's `ImageID`) or names it, by ID or tag, in its
    /// image spec; the latter is more cautious than upstream.
    pub async fn detect_images(&self, now: SystemTime) -> Result<HashSet<String>, Error> {
        let images = self
            .runtime
            .list_images(None)
            .await
            .map_err(|source| Error::Cri {
                what: "listing images",
                source,
            })?;
        let containers = self
            .runtime
            .list_containers(None)
            .await
            .map_err(|source| Error::Cri {
                what: "listing containers",
                source,
            })?;
        let mut refs: HashSet<&str> = HashSet::new();
        for c in &containers {
            if !c.image_ref.is_empty() {
                refs.insert(&c.image_ref);
            }
            if let Some(spec) = &c.image
                && !spec.image.is_empty()
            {
                refs.insert(&spec.image);
            }
        }
        let in_use: HashSet<String> = images
            .iter()
            .filter(|i| {
                refs.contains(i.id.as_str())
                    || i.repo_tags.iter().any(|t| refs.contains(t.as_str()))
                    || i.repo_digests.iter().any(|d| refs.contains(d.as_str()))
            })
            .map(|i| i.id.clone())
            .collect();

        let mut state = self.state();
        // Upstream's Start: the first detection makes the detected time
        // "unknown", in the past.
        let detected = if state.initialized {
            now
        } else {
            SystemTime::UNIX_EPOCH
        };
        let mut current = HashSet::new();
        for image in &images {
            if image.id.is_empty() {
                continue;
            }
            current.insert(image.id.as_str());
            let pinned = image.pinned || self.is_sandbox_image(image);
            let record = state.records.entry(image.id.clone()).or_insert_with(|| {
                tracing::debug!(image = %image.id, "image is new");
                ImageRecord {
                    first_detected: detected,
                    last_used: None,
                    size: 0,
                    pinned: false,
                }
            });
            if in_use.contains(&image.id) {
                record.last_used = Some(now);
            }
            record.size = image.size;
            record.pinned = pinned;
        }
        state.records.retain(|id, _| {
            let keep = current.contains(id.as_str());
            if !keep {
                tracing::debug!(image = %id, "image is no longer present; forgetting it");
            }
            keep
        });
        state.initialized = true;
        Ok(in_use)
    }

    /// Unused, unpinned images, least recently used first, ties broken by
    /// first detection (upstream `imagesInEvictionOrder`).
    async fn images_in_eviction_order(&self, now: SystemTime) -> Result<Vec<Candidate>, Error> {
        let in_use = self.detect_images(now).await?;
        let state = self.state();
        let mut images: Vec<Candidate> = state
            .records
            .iter()
            .filter(|(id, record)| !in_use.contains(*id) && !record.pinned)
            .map(|(id, record)| Candidate {
                id: id.clone(),
                record: record.clone(),
            })
            .collect();
        images.sort_by(|a, b| {
            a.record
                .last_used
                .cmp(&b.record.last_used)
                .then(a.record.first_detected.cmp(&b.record.first_detected))
                .then(a.id.cmp(&b.id))
        });
        Ok(images)
    }

    async fn free_image(
        &self,
        id: &str,
        size: u64,
        reason: &str,
    ) -> Result<(), kubelet_cri_client::Error> {
        tracing::info!(image = %id, size, reason, "removing image to free bytes");
        self.runtime
            .remove_image(api::ImageSpec {
                image: id.to_owned(),
                ..Default::default()
            })
            .await?;
        self.state().records.remove(id);
        Ok(())
    }

    /// Removes images unused for longer than `max_age` (upstream
    /// `freeOldImages`); returns the images left.
    async fn free_old_images(
        &self,
        images: Vec<Candidate>,
        now: SystemTime,
        began_gc: SystemTime,
        result: &mut ImageGcResult,
    ) -> Result<Vec<Candidate>, Error> {
        let Some(max_age) = self.policy.max_age.filter(|a| !a.is_zero()) else {
            return Ok(images);
        };
        // Wait until max_age has passed since collection began, or images
        // could go before the kubelet saw them used.
        if now.duration_since(began_gc).unwrap_or_default() <= max_age {
            return Ok(images);
        }
        let mut remaining = Vec::new();
        let mut errors = Vec::new();
        for image in images {
            // Upstream compares with a zero lastUsed for an image never
            // used, so it removes a just-pulled image; this counts from its
            // first detection instead.
            let last = image
                .record
                .last_used
                .unwrap_or(image.record.first_detected);
            if now.duration_since(last).unwrap_or_default() > max_age {
                match self.free_image(&image.id, image.record.size, "age").await {
                    Ok(()) => {
                        result.freed_bytes = result.freed_bytes.saturating_add(image.record.size);
                        result.removed.push(image.id);
                    }
                    Err(e) => {
                        errors.push((image.id.clone(), e));
                        remaining.push(image);
                    }
                }
            } else {
                remaining.push(image);
            }
        }
        if errors.is_empty() {
            Ok(remaining)
        } else {
            Err(Error::Remove {
                wanted: 0,
                freed: result.freed_bytes,
                removed: result.removed.clone(),
                errors,
            })
        }
    }

    /// Removes eligible images until `bytes_to_free` are freed (upstream
    /// `freeSpace`); returns the bytes freed.
    async fn free_space(
        &self,
        bytes_to_free: u64,
        now: SystemTime,
        images: Vec<Candidate>,
        result: &mut ImageGcResult,
    ) -> Result<u64, Error> {
        let mut freed = 0u64;
        let mut errors = Vec::new();
        for image in images {
            // Images in use were just given a last_used of now.
            if image.record.last_used.is_some_and(|t| t >= now) {
                tracing::debug!(image = %image.id, "image was used too recently");
                continue;
            }
            // A young image may have just been pulled for a container.
            let age = now
                .duration_since(image.record.first_detected)
                .unwrap_or_default();
            if age < self.policy.min_age {
                tracing::debug!(image = %image.id, ?age, min_age = ?self.policy.min_age, "image is younger than min age");
                continue;
            }
            match self.free_image(&image.id, image.record.size, "space").await {
                Ok(()) => {
                    freed = freed.saturating_add(image.record.size);
                    result.freed_bytes = result.freed_bytes.saturating_add(image.record.size);
                    result.removed.push(image.id);
                }
                Err(e) => {
                    errors.push((image.id, e));
                    continue;
                }
            }
            if freed >= bytes_to_free {
                break;
            }
        }
        if errors.is_empty() {
            Ok(freed)
        } else {
            Err(Error::Remove {
                wanted: bytes_to_free,
                freed,
                removed: result.removed.clone(),
                errors,
            })
        }
    }

    /// The image filesystem's usage: `ImageFsInfo`'s first filesystem, and
    /// `statvfs` of its mountpoint (upstream `ImageFsStats`).
    pub async fn image_fs_stats(&self) -> Result<ImageFsStats, Error> {
        let info = self
            .runtime
            .image_fs_info()
            .await
            .map_err(|source| Error::Cri {
                what: "reading image filesystem info",
                source,
            })?;
        let fs = info.image_filesystems.first().ok_or(Error::NoImageFs)?;
        let mountpoint = fs
            .fs_id
            .as_ref()
            .map(|id| PathBuf::from(&id.mountpoint))
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or(Error::NoImageFs)?;
        let cap = self
            .fs
            .fs_capacity(&mountpoint)
            .map_err(|source| Error::FsStat {
                path: mountpoint.clone(),
                source,
            })?;
        Ok(ImageFsStats {
            used_bytes: fs.used_bytes.as_ref().map(|u| u.value).unwrap_or_default(),
            capacity_bytes: cap.capacity_bytes,
            available_bytes: cap.available_bytes,
            mountpoint,
        })
    }

    /// One collection (upstream `GarbageCollect`): images unused for longer
    /// than `max_age` go, then, when usage is at or over the high threshold,
    /// unused images go, least recently used first, until usage would be
    /// at the low threshold.
    ///
    /// `now` is the collection time; the first call's `now` is when
    /// collection began (for `max_age`). Returns what was removed. Fails
    /// with [`Error::Insufficient`] when all eligible images were not
    /// enough, and [`Error::Remove`] when removals failed (the others are
    /// done either way).
    pub async fn garbage_collect(&self, now: SystemTime) -> Result<ImageGcResult, Error> {
        let began_gc = *self.state().began_gc.get_or_insert(now);
        let mut result = ImageGcResult::default();
        let images = self.images_in_eviction_order(now).await?;
        let images = self
            .free_old_images(images, now, began_gc, &mut result)
            .await?;

        let stats = self.image_fs_stats().await?;
        let capacity = stats.capacity_bytes;
        let available = stats.available_bytes.min(capacity);
        if stats.available_bytes > capacity {
            tracing::info!(
                available = stats.available_bytes,
                capacity,
                "availability is larger than capacity"
            );
        }
        if capacity == 0 {
            return Err(Error::InvalidCapacity {
                path: stats.mountpoint,
            });
        }
        result.fs_stats = Some(stats);
        // Upstream: usagePercent := 100 - int(available*100/capacity).
        let usage_percent = 100u128 - u128::from(available) * 100 / u128::from(capacity);
        if usage_percent >= u128::from(self.policy.high_threshold_percent) {
            let target_available = u128::from(capacity)
                * u128::from(100 - self.policy.low_threshold_percent.min(100))
                / 100;
            let amount = target_available.saturating_sub(u128::from(available));
            let amount = u64::try_from(amount).unwrap_or(u64::MAX);
            tracing::info!(
                usage = %usage_percent,
                high_threshold = self.policy.high_threshold_percent,
                low_threshold = self.policy.low_threshold_percent,
                amount_to_free = amount,
                "disk usage on image filesystem is over the high threshold, trying to free bytes down to the low threshold"
            );
            let freed = self.free_space(amount, now, images, &mut result).await?;
            if freed < amount {
                return Err(Error::Insufficient {
                    wanted: amount,
                    freed,
                    removed: result.removed,
                });
            }
        }
        Ok(result)
    }

    /// Removes every unused, unpinned image older than `min_age` (upstream
    /// `DeleteUnusedImages`, which eviction calls under disk pressure).
    pub async fn delete_unused_images(&self, now: SystemTime) -> Result<ImageGcResult, Error> {
        tracing::info!("attempting to delete unused images");
        let mut result = ImageGcResult::default();
        let images = self.images_in_eviction_order(now).await?;
        self.free_space(u64::MAX, now, images, &mut result).await?;
        Ok(result)
    }
}
