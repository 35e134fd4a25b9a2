//! Secret, configMap and projected volumes: their files read from the API
//! server and written with the [`AtomicWriter`](crate::AtomicWriter)
//! (upstream `pkg/volume/secret/secret.go`,
//! `pkg/volume/configmap/configmap.go`,
//! `pkg/volume/projected/projected.go`).
//!
//! Layout, as upstream: `<root>/pods/<uid>/volumes/kubernetes.io~secret/<name>`,
//! `.../kubernetes.io~configmap/<name>`, `.../kubernetes.io~projected/<name>`.
//! Secret and projected volumes are a tmpfs mounted on that directory
//! (upstream wraps them in a memory-backed emptyDir, sized as one), so
//! secrets and tokens never reach the node's disk; configMap volumes are
//! plain directories (upstream wraps them in a disk emptyDir).
//!
//! Change detection: the volumes are written again on every pod sync
//! (upstream's volume manager remounts them every `syncFrequency`), from
//! what [`ApiObjects`] answers: in a kubelet, the secret and configMap
//! managers of [`objcache`](crate::objcache) (per-object watches by
//! default, as `configMapAndSecretChangeDetectionStrategy` says). A
//! changed object is written atomically (a new `..data`); an unchanged one
//! writes nothing.
//!
//! Not done: `fsGroup` and file ownership (`SetVolumeOwnership`; files are
//! owned by the kubelet's user, and a token file keeps the projection's
//! mode instead of upstream's 0600 under `fsGroup`), the
//! `clusterTrustBundle` and `podCertificate` projections (refused with an
//! error naming them), the nested mount points of upstream
//! `MakeNestedMountpoints`, and the volume size metrics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{KeyToPath, Pod, Volume};

use crate::api::{ApiObjects, ServiceAccountTokenRequest, TokenManager};
use crate::atomic_writer::{AtomicWriter, FileProjection, Payload, clean_path};
use crate::{Error, Mounts, VolumeContext, invalid, is_plain_name, pod_dir, pod_full_name};

/// The plugin directory of secret volumes (upstream
/// `kubernetes.io~secret`).
pub const SECRET_PLUGIN_DIR: &str = "kubernetes.io~secret";
/// The plugin directory of configMap volumes.
pub const CONFIG_MAP_PLUGIN_DIR: &str = "kubernetes.io~configmap";
/// The plugin directory of projected volumes.
pub const PROJECTED_PLUGIN_DIR: &str = "kubernetes.io~projected";

/// The mode of files without one (upstream `SecretVolumeSourceDefaultMode`,
/// `ConfigMapVolumeSourceDefaultMode`, `ProjectedVolumeSourceDefaultMode`).
const DEFAULT_MODE: i32 = 0o644;
/// The token lifetime when a projection leaves it out (the API's
/// defaulting of `expirationSeconds`).
const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// What the API-backed volumes need across pod syncs: where objects are
/// read ([`ApiObjects`]), the token cache ([`TokenManager`]), and whether
/// secret and projected volumes are memory-backed.
pub struct ApiVolumes {
    api: Arc<dyn ApiObjects>,
    tokens: TokenManager,
    memory_backed: bool,
}

impl std::fmt::Debug for ApiVolumes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiVolumes")
            .field("tokens", &self.tokens)
            .field("memory_backed", &self.memory_backed)
            .finish_non_exhaustive()
    }
}

impl ApiVolumes {
    /// Reads through `api`, with a new token cache on the system clock;
    /// secret and projected volumes on a tmpfs (which needs
    /// `CAP_SYS_ADMIN`).
    pub fn new(api: Arc<dyn ApiObjects>) -> Self {
        Self {
            api,
            tokens: TokenManager::new(),
            memory_backed: true,
        }
    }

    /// Uses this token cache (e.g. one on a test clock).
    pub fn with_token_manager(mut self, tokens: TokenManager) -> Self {
        self.tokens = tokens;
        self
    }

    /// `false`: secret and projected volumes are plain directories, so
    /// their contents reach the node's disk (for tests and unprivileged
    /// runs only). Default `true`.
    pub fn memory_backed(mut self, memory_backed: bool) -> Self {
        self.memory_backed = memory_backed;
        self
    }

    /// What the volumes read the API server through (the kubelet reads
    /// its pods' env Secrets and ConfigMaps through it too).
    pub fn api(&self) -> Arc<dyn ApiObjects> {
        self.api.clone()
    }

    /// The token cache.
    pub fn tokens(&self) -> &TokenManager {
        &self.tokens
    }

    /// Forgets what is cached for the pod `uid` (its tokens; upstream
    /// `DeleteServiceAccountToken`): call it when the pod is removed.
    pub fn forget_pod(&self, uid: &str) {
        self.tokens.delete_service_account_token(uid);
    }
}

/// Whether the volume is one [`prepare_api_volumes`] writes: a secret,
/// configMap or projected volume.
pub fn is_api_volume(volume: &Volume) -> bool {
    volume.secret.is_some() || volume.config_map.is_some() || volume.projected.is_some()
}

/// Whether the pod has a volume [`prepare_api_volumes`] writes.
pub fn has_api_volumes(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
        .iter()
        .any(is_api_volume)
}

/// Whether containers must mount the volume read-only whatever their
/// `volumeMounts[].readOnly` says (upstream: the plugin's
/// `GetAttributes().ReadOnly`, true for secret, configMap, projected and
/// downwardAPI volumes; `makeMounts` mounts `mount.ReadOnly ||
/// attributes.ReadOnly`).
pub fn is_read_only_volume(volume: &Volume) -> bool {
    is_api_volume(volume) || volume.downward_api.is_some()
}

/// The names of the pod's volumes that containers must mount read-only
/// (see [`is_read_only_volume`]).
pub fn read_only_volumes(pod: &Pod) -> std::collections::BTreeSet<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|v| is_read_only_volume(v))
        .map(|v| v.name.clone())
        .collect()
}

/// The directory of an API-backed volume under the pod's directory, and
/// the volume's kind; `None` for other volumes.
pub(crate) fn volume_path(pod_dir: &Path, volume: &Volume) -> Option<(PathBuf, &'static str)> {
    let (plugin, kind) = if volume.secret.is_some() {
        (SECRET_PLUGIN_DIR, "secret")
    } else if volume.config_map.is_some() {
        (CONFIG_MAP_PLUGIN_DIR, "configMap")
    } else if volume.projected.is_some() {
        (PROJECTED_PLUGIN_DIR, "projected")
    } else {
        return None;
    };
    Some((
        pod_dir.join("volumes").join(plugin).join(&volume.name),
        kind,
    ))
}

/// Writes the pod's secret, configMap and projected volumes under its
/// directory (upstream: the volume manager's `SetUp` of those plugins, and
/// its remount of them on each pod sync).
///
/// For each such volume: the objects are read through `volumes`' API, the
/// tokens taken from its cache (refreshed when due), the directory made
/// (and, for secret and projected volumes, a tmpfs mounted on it once,
/// sized as a memory-backed emptyDir from `ctx`), and the files written
/// with the atomic writer, which changes nothing when nothing changed.
///
/// `optional`: a missing optional object gives an empty volume (or no
/// files from that projection source), and a key missing from an optional
/// object is skipped; a missing required object, or a missing key of a
/// required object's `items`, is an error naming the pod, the volume, the
/// object and the key.
///
/// Every volume is tried; the first error is returned (each is logged at
/// debug level; [`prepare_api_volumes_each`] returns them all). A failed
/// volume keeps its previous contents. Call it
/// before [`prepare_pod_volumes`](crate::prepare_pod_volumes) on every
/// sync: that one refuses a volume this one has never written, so a pod
/// starts only once its volumes exist, and a later failure to refresh
/// them may be logged and the pod synced with the previous contents, as
/// upstream. The writes are blocking file system calls (a few small files
/// per volume); one pod must not be prepared by two calls at once (the
/// pod workers sync each pod on one task).
pub async fn prepare_api_volumes(
    root: &Path,
    pod: &Pod,
    ctx: &VolumeContext,
    volumes: &ApiVolumes,
) -> Result<(), Error> {
    prepare_api_volumes_each(root, pod, ctx, volumes)
        .await
        .into_iter()
        .next()
        .map_or(Ok(()), Err)
}

/// [`prepare_api_volumes`], returning every failure: one
/// [`Error::Volume`] per volume that could not be written, in the pod's
/// order (or one error about the pod when none could be tried). The
/// kubelet records a `FailedMount` event for each, as upstream's volume
/// manager does per volume ([`Error::mount_event_message`]).
pub async fn prepare_api_volumes_each(
    root: &Path,
    pod: &Pod,
    ctx: &VolumeContext,
    volumes: &ApiVolumes,
) -> Vec<Error> {
    let name = pod_full_name(pod);
    let api_volumes: Vec<&Volume> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|v| is_api_volume(v))
        .collect();
    if api_volumes.is_empty() {
        return Vec::new();
    }
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    if !is_plain_name(uid) {
        return vec![invalid(&name, format!("unusable UID {uid:?}"))];
    }
    let dir = pod_dir(root, uid);
    let mut mounts = Mounts::default();
    let mut errors = Vec::new();
    for v in api_volumes {
        let result = if is_plain_name(&v.name) {
            prepare_volume(pod, v, &dir, ctx, volumes, &mut mounts).await
        } else {
            Err(Error::InvalidVolume {
                reason: "invalid volume name".into(),
            })
        };
        if let Err(source) = result {
            let e = Error::Volume {
                pod: name.clone(),
                volume: v.name.clone(),
                source: Box::new(source),
            };
            tracing::debug!(error = %e, "cannot write an API-backed volume");
            errors.push(e);
        }
    }
    errors
}

async fn prepare_volume(
    pod: &Pod,
    volume: &Volume,
    dir: &Path,
    ctx: &VolumeContext,
    volumes: &ApiVolumes,
    mounts: &mut Mounts,
) -> Result<(), Error> {
    let Some((path, kind)) = volume_path(dir, volume) else {
        return Ok(());
    };
    // The objects first: nothing is made or mounted for a volume that
    // cannot be written.
    let payload = collect(pod, volume, ctx, volumes).await?;
    std::fs::create_dir_all(&path).map_err(crate::io(&path))?;
    if volumes.memory_backed && volume.config_map.is_none() {
        let size = crate::memory_volume_size(pod, None, ctx);
        crate::mount_tmpfs(&path, size, mounts)?;
    }
    let writer = AtomicWriter::new(
        &path,
        format!("pod {} volume {}", pod_full_name(pod), volume.name),
    )?;
    if writer.write(&payload)? {
        tracing::info!(
            pod = %pod_full_name(pod),
            volume = %volume.name,
            kind,
            files = payload.len(),
            "wrote the volume's files"
        );
    }
    Ok(())
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
}

fn mode(m: i32) -> u32 {
    u32::try_from(m).map_or(0o644, |m| m & 0o777)
}

/// The files of one volume (upstream `MakePayload` of the secret and
/// configMap plugins, `collectData` of the projected one).
async fn collect(
    pod: &Pod,
    volume: &Volume,
    ctx: &VolumeContext,
    volumes: &ApiVolumes,
) -> Result<Payload, Error> {
    let ns = namespace(pod);
    if let Some(s) = &volume.secret {
        let name = s
            .secret_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::InvalidVolume {
                reason: "secret volume without secretName".into(),
            })?;
        let optional = s.optional.unwrap_or(false);
        let default_mode = s.default_mode.unwrap_or(DEFAULT_MODE);
        return secret_payload(
            volumes,
            ns,
            name,
            s.items.as_deref(),
            default_mode,
            optional,
        )
        .await;
    }
    if let Some(c) = &volume.config_map {
        let optional = c.optional.unwrap_or(false);
        let default_mode = c.default_mode.unwrap_or(DEFAULT_MODE);
        return config_map_payload(
            volumes,
            ns,
            &c.name,
            c.items.as_deref(),
            default_mode,
            optional,
        )
        .await;
    }
    let Some(p) = &volume.projected else {
        return Ok(Payload::new());
    };
    let default_mode = p.default_mode.unwrap_or(DEFAULT_MODE);
    let mut payload = Payload::new();
    for source in p.sources.iter().flatten() {
        let part = if let Some(s) = &source.secret {
            let optional = s.optional.unwrap_or(false);
            secret_payload(
                volumes,
                ns,
                &s.name,
                s.items.as_deref(),
                default_mode,
                optional,
            )
            .await?
        } else if let Some(c) = &source.config_map {
            let optional = c.optional.unwrap_or(false);
            config_map_payload(
                volumes,
                ns,
                &c.name,
                c.items.as_deref(),
                default_mode,
                optional,
            )
            .await?
        } else if let Some(d) = &source.downward_api {
            crate::downward_api_payload(
                pod,
                d.items.as_deref().unwrap_or_default(),
                default_mode,
                ctx,
            )?
        } else if let Some(t) = &source.service_account_token {
            let spec = pod.spec.as_ref();
            #[allow(deprecated)]
            let service_account = spec
                .and_then(|s| s.service_account_name.as_deref().filter(|n| !n.is_empty()))
                .or_else(|| {
                    spec.and_then(|s| s.service_account.as_deref().filter(|n| !n.is_empty()))
                })
                .unwrap_or("default");
            let request = ServiceAccountTokenRequest {
                namespace: ns.to_owned(),
                service_account: service_account.to_owned(),
                audiences: t
                    .audience
                    .iter()
                    .filter(|a| !a.is_empty())
                    .cloned()
                    .collect(),
                expiration_seconds: t
                    .expiration_seconds
                    .unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS),
                pod_name: pod.metadata.name.clone().unwrap_or_default(),
                pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            };
            let token = volumes
                .tokens
                .get_service_account_token(volumes.api.as_ref(), &request)
                .await?;
            let mut part = Payload::new();
            insert(
                &mut part,
                &t.path,
                FileProjection::new(token.token, mode(default_mode)),
            )?;
            part
        } else if source.cluster_trust_bundle.is_some() {
            return Err(Error::InvalidVolume {
                reason: "clusterTrustBundle projections are not supported".into(),
            });
        } else if source.pod_certificate.is_some() {
            return Err(Error::InvalidVolume {
                reason: "podCertificate projections are not supported".into(),
            });
        } else {
            continue;
        };
        // A later source's file replaces an earlier one at the same path,
        // as upstream's map.
        payload.extend(part);
    }
    Ok(payload)
}

/// Adds a file at `path`, cleaned (so that two spellings of one path are
/// one file).
fn insert(payload: &mut Payload, path: &str, file: FileProjection) -> Result<(), Error> {
    payload.insert(clean_path(path)?, file);
    Ok(())
}

async fn secret_payload(
    volumes: &ApiVolumes,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, Error> {
    let secret = volumes.api.get_secret(namespace, name).await?;
    let data: BTreeMap<&str, &[u8]> = match &secret {
        Some(s) => s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.0.as_slice()))
            .collect(),
        None if optional => BTreeMap::new(),
        None => {
            return Err(Error::NotFound {
                kind: "secret",
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        }
    };
    key_payload(
        "secret",
        namespace,
        name,
        &data,
        items,
        default_mode,
        optional,
    )
}

async fn config_map_payload(
    volumes: &ApiVolumes,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, Error> {
    let config_map = volumes.api.get_config_map(namespace, name).await?;
    let data: BTreeMap<&str, &[u8]> = match &config_map {
        // `data` wins over `binaryData` (the API forbids a key in both).
        Some(c) => c
            .binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.0.as_slice()))
            .chain(
                c.data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str(), v.as_bytes())),
            )
            .collect(),
        None if optional => BTreeMap::new(),
        None => {
            return Err(Error::NotFound {
                kind: "configmap",
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        }
    };
    key_payload(
        "configmap",
        namespace,
        name,
        &data,
        items,
        default_mode,
        optional,
    )
}

/// Upstream `MakePayload`: every key as a file of `defaultMode`, or only
/// the `items`, each at its path with its mode; a missing key of an
/// optional object is skipped, of a required one an error.
fn key_payload(
    kind: &'static str,
    namespace: &str,
    name: &str,
    data: &BTreeMap<&str, &[u8]>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, Error> {
    let mut payload = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (key, value) in data {
                insert(
                    &mut payload,
                    key,
                    FileProjection::new(*value, mode(default_mode)),
                )?;
            }
        }
        Some(items) => {
            for item in items {
                let Some(value) = data.get(item.key.as_str()) else {
                    if optional {
                        continue;
                    }
                    return Err(Error::MissingKey {
                        kind,
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        key: item.key.clone(),
                    });
                };
                let m = mode(item.mode.unwrap_or(default_mode));
                insert(&mut payload, &item.path, FileProjection::new(*value, m))?;
            }
        }
    }
    Ok(payload)
}
