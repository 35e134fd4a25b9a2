//! Secret, configMap and projected volumes against a fake `ApiObjects`:
//! items, modes, `optional`, the kube-api-access projected volume with its
//! three sources, updates in place, token refresh at 80 % of its life, the
//! standalone refusal, and (as root) the tmpfs of secret and projected
//! volumes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kubelet_volumemanager::{
    ApiObjects, ApiVolumes, DATA_DIR_NAME, Error, IssuedToken, ServiceAccountTokenRequest,
    TokenManager, VolumeContext, prepare_api_volumes, prepare_pod_volumes,
};
use serde_json::json;

/// Objects by `namespace/name`; tokens `token-<n>` issued at the fake
/// clock's time for the requested lifetime.
#[derive(Default)]
struct FakeApi {
    secrets: Mutex<BTreeMap<String, Secret>>,
    config_maps: Mutex<BTreeMap<String, ConfigMap>>,
    token_requests: Mutex<Vec<ServiceAccountTokenRequest>>,
    now: Arc<AtomicU64>,
}

impl FakeApi {
    fn secret(&self, ns: &str, name: &str, data: serde_json::Value) {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name}, "data": data
        }))
        .expect("secret");
        self.secrets
            .lock()
            .expect("lock")
            .insert(format!("{ns}/{name}"), s);
    }

    fn config_map(&self, ns: &str, name: &str, data: serde_json::Value) {
        let c: ConfigMap = serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name}, "data": data
        }))
        .expect("configmap");
        self.config_maps
            .lock()
            .expect("lock")
            .insert(format!("{ns}/{name}"), c);
    }

    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.now.load(Ordering::SeqCst))
    }

    fn tokens_issued(&self) -> usize {
        self.token_requests.lock().expect("lock").len()
    }
}

#[async_trait::async_trait]
impl ApiObjects for FakeApi {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, Error> {
        Ok(self
            .secrets
            .lock()
            .expect("lock")
            .get(&format!("{namespace}/{name}"))
            .cloned())
    }

    async fn get_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, Error> {
        Ok(self
            .config_maps
            .lock()
            .expect("lock")
            .get(&format!("{namespace}/{name}"))
            .cloned())
    }

    async fn request_token(
        &self,
        request: &ServiceAccountTokenRequest,
    ) -> Result<IssuedToken, Error> {
        let mut requests = self.token_requests.lock().expect("lock");
        requests.push(request.clone());
        Ok(IssuedToken {
            token: format!("token-{}", requests.len()),
            expiration_timestamp: self.now()
                + Duration::from_secs(request.expiration_seconds.unsigned_abs()),
            expiration_seconds: request.expiration_seconds,
        })
    }
}

const START: u64 = 1_700_000_000;

fn setup() -> (Arc<FakeApi>, ApiVolumes) {
    let api = Arc::new(FakeApi {
        now: Arc::new(AtomicU64::new(START)),
        ..Default::default()
    });
    let now = api.now.clone();
    let tokens = TokenManager::with_clock(Arc::new(move || {
        SystemTime::UNIX_EPOCH + Duration::from_secs(now.load(Ordering::SeqCst))
    }));
    let volumes = ApiVolumes::new(api.clone())
        .with_token_manager(tokens)
        .memory_backed(false);
    (api, volumes)
}

fn pod(uid: &str, volumes: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "team", "uid": uid},
        "spec": {
            "serviceAccountName": "builder",
            "containers": [{"name": "c", "image": "busybox"}],
            "volumes": volumes
        }
    }))
    .expect("pod")
}

fn b64(s: &str) -> String {
    // serde of ByteString is base64; encode by hand (no base64 dependency).
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn data_dir(p: &Path) -> PathBuf {
    std::fs::read_link(p.join(DATA_DIR_NAME)).expect("..data")
}

fn visible(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with(".."))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn secret_and_config_map_items_modes_and_optional() {
    let root = tempfile::tempdir().expect("tmp");
    let (api, volumes) = setup();
    api.secret(
        "team",
        "db",
        json!({"user": b64("admin"), "password": b64("s3cret")}),
    );
    api.config_map("team", "app", json!({"app.conf": "port=80", "other": "x"}));
    let p = pod(
        "u1",
        json!([
            {"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o440}},
            {"name": "pw", "secret": {"secretName": "db", "items": [
                {"key": "password", "path": "nested/pw", "mode": 0o400},
                {"key": "user", "path": "user"}
            ]}},
            {"name": "conf", "configMap": {"name": "app", "items": [{"key": "app.conf", "path": "app.conf"}]}},
            {"name": "maybe", "configMap": {"name": "absent", "optional": true}},
            {"name": "maybe-key", "secret": {"secretName": "db", "optional": true, "items": [
                {"key": "user", "path": "u"}, {"key": "nope", "path": "n"}
            ]}}
        ]),
    );
    let ctx = VolumeContext::default();
    prepare_api_volumes(root.path(), &p, &ctx, &volumes)
        .await
        .expect("api volumes");
    let v = prepare_pod_volumes(root.path(), &p, &ctx).expect("pod volumes");
    let pods = root.path().join("pods/u1/volumes");

    let creds = &v.volumes["creds"];
    assert_eq!(creds, &pods.join("kubernetes.io~secret/creds"));
    assert_eq!(visible(creds), ["password", "user"]);
    assert_eq!(read(&creds.join("password")), "s3cret");
    assert_eq!(mode(&creds.join("user")), 0o440, "defaultMode");
    assert_eq!(
        std::fs::read_link(creds.join("user")).expect("link"),
        Path::new("..data/user")
    );

    let pw = &v.volumes["pw"];
    assert_eq!(visible(pw), ["nested", "user"], "only the items");
    assert_eq!(read(&pw.join("nested/pw")), "s3cret");
    assert_eq!(mode(&pw.join("nested/pw")), 0o400, "the item's mode");
    assert_eq!(mode(&pw.join("user")), 0o644, "the default defaultMode");

    let conf = &v.volumes["conf"];
    assert_eq!(conf, &pods.join("kubernetes.io~configmap/conf"));
    assert_eq!(visible(conf), ["app.conf"]);
    assert_eq!(read(&conf.join("app.conf")), "port=80");

    let maybe = &v.volumes["maybe"];
    assert!(maybe.join(DATA_DIR_NAME).is_dir(), "an empty volume");
    assert!(visible(maybe).is_empty());

    assert_eq!(
        visible(&v.volumes["maybe-key"]),
        ["u"],
        "a missing optional key is skipped"
    );
}

#[tokio::test]
async fn missing_required_objects_and_keys_name_the_pod_volume_and_object() {
    let root = tempfile::tempdir().expect("tmp");
    let (api, volumes) = setup();
    api.secret("team", "db", json!({"user": b64("admin")}));
    let ctx = VolumeContext::default();

    let missing = pod(
        "u2",
        json!([{"name": "creds", "secret": {"secretName": "gone"}}]),
    );
    let err = prepare_api_volumes(root.path(), &missing, &ctx, &volumes)
        .await
        .expect_err("missing secret");
    let text = err.to_string();
    assert!(
        text.contains("team/p") && text.contains("\"creds\"") && text.contains("secret team/gone"),
        "{text}"
    );
    assert!(
        matches!(&err, Error::Volume { source, .. } if matches!(**source, Error::NotFound { .. }))
    );
    // Nothing was made for it, and the sync step refuses it.
    assert!(
        !root
            .path()
            .join("pods/u2/volumes/kubernetes.io~secret/creds")
            .exists()
    );
    assert!(prepare_pod_volumes(root.path(), &missing, &ctx).is_err());

    let key = pod(
        "u3",
        json!([{"name": "creds", "secret": {"secretName": "db", "items": [{"key": "password", "path": "pw"}]}}]),
    );
    let err = prepare_api_volumes(root.path(), &key, &ctx, &volumes)
        .await
        .expect_err("missing key");
    let text = err.to_string();
    assert!(
        text.contains("\"password\"") && text.contains("\"creds\""),
        "{text}"
    );

    let projected = pod(
        "u4",
        json!([{"name": "p", "projected": {"sources": [{"configMap": {"name": "nope"}}]}}]),
    );
    let err = prepare_api_volumes(root.path(), &projected, &ctx, &volumes)
        .await
        .expect_err("missing configmap");
    assert!(err.to_string().contains("configmap team/nope"), "{err}");

    let bundle = pod(
        "u5",
        json!([{"name": "p", "projected": {"sources": [{"clusterTrustBundle": {"path": "b", "name": "x"}}]}}]),
    );
    let err = prepare_api_volumes(root.path(), &bundle, &ctx, &volumes)
        .await
        .expect_err("unsupported");
    assert!(err.to_string().contains("clusterTrustBundle"), "{err}");

    // One failing volume does not keep the others from being written.
    let mixed = pod(
        "u6",
        json!([
            {"name": "bad", "secret": {"secretName": "gone"}},
            {"name": "good", "secret": {"secretName": "db"}}
        ]),
    );
    assert!(
        prepare_api_volumes(root.path(), &mixed, &ctx, &volumes)
            .await
            .is_err()
    );
    assert_eq!(
        read(
            &root
                .path()
                .join("pods/u6/volumes/kubernetes.io~secret/good/user")
        ),
        "admin"
    );
}

/// The volume admission adds to every pod of a cluster.
fn kube_api_access() -> serde_json::Value {
    json!([{"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
    ]}}])
}

#[tokio::test]
async fn the_kube_api_access_volume_is_written_updated_and_its_token_refreshed() {
    let root = tempfile::tempdir().expect("tmp");
    let (api, volumes) = setup();
    api.config_map("team", "kube-root-ca.crt", json!({"ca.crt": "CA-1"}));
    let p = pod("u7", kube_api_access());
    let ctx = VolumeContext::default();

    // Standalone (before prepare_api_volumes): the clear refusal.
    let err = prepare_pod_volumes(root.path(), &p, &ctx).expect_err("not written yet");
    assert!(
        err.to_string().contains("kube-api-access-x7k2p")
            && err.to_string().contains("prepare_api_volumes"),
        "{err}"
    );

    prepare_api_volumes(root.path(), &p, &ctx, &volumes)
        .await
        .expect("api volumes");
    let v = prepare_pod_volumes(root.path(), &p, &ctx).expect("pod volumes");
    let dir = &v.volumes["kube-api-access-x7k2p"];
    assert_eq!(
        dir,
        &root
            .path()
            .join("pods/u7/volumes/kubernetes.io~projected/kube-api-access-x7k2p")
    );
    assert_eq!(visible(dir), ["ca.crt", "namespace", "token"]);
    assert_eq!(read(&dir.join("token")), "token-1");
    assert_eq!(read(&dir.join("ca.crt")), "CA-1");
    assert_eq!(read(&dir.join("namespace")), "team");
    for f in ["token", "ca.crt", "namespace"] {
        assert_eq!(mode(&dir.join(f)), 0o644, "{f}");
    }
    let requests = api.token_requests.lock().expect("lock").clone();
    assert_eq!(
        requests,
        [ServiceAccountTokenRequest {
            namespace: "team".into(),
            service_account: "builder".into(),
            audiences: vec![],
            expiration_seconds: 3607,
            pod_name: "p".into(),
            pod_uid: "u7".into(),
        }]
    );

    // Nothing changed: nothing written, no new token.
    let first = data_dir(dir);
    api.now.store(START + 60, Ordering::SeqCst);
    prepare_api_volumes(root.path(), &p, &ctx, &volumes)
        .await
        .expect("again");
    assert_eq!(data_dir(dir), first);
    assert_eq!(api.tokens_issued(), 1);

    // The config map changes: the volume is swapped, the old data goes.
    api.config_map("team", "kube-root-ca.crt", json!({"ca.crt": "CA-2"}));
    prepare_api_volumes(root.path(), &p, &ctx, &volumes)
        .await
        .expect("update");
    let second = data_dir(dir);
    assert_ne!(second, first);
    assert!(
        !dir.join(&first).exists(),
        "the old timestamped directory is removed"
    );
    assert_eq!(read(&dir.join("ca.crt")), "CA-2");
    assert_eq!(read(&dir.join("token")), "token-1");

    // Before 80 % of 3607 s (2885.6 s, less up to 10 s of jitter): the
    // cached token; after: a new one, written.
    api.now.store(START + 2870, Ordering::SeqCst);
    prepare_api_volumes(root.path(), &p, &ctx, &volumes)
        .await
        .expect("cached token");
    assert_eq!(api.tokens_issued(), 1);
    assert_eq!(data_dir(dir), second);
    api.now.store(START + 2890, Ordering::SeqCst);
    prepare_api_volumes(root.path(), &p, &ctx, &volumes)
        .await
        .expect("refresh");
    assert_eq!(api.tokens_issued(), 2);
    assert_eq!(read(&dir.join("token")), "token-2");
    assert_ne!(data_dir(dir), second);

    // The pod is removed: its tokens are forgotten.
    volumes.forget_pod("u7");
    assert!(volumes.tokens().is_empty());
}

#[tokio::test]
async fn pods_without_api_volumes_are_left_alone() {
    let root = tempfile::tempdir().expect("tmp");
    let (_api, volumes) = setup();
    let p = pod("u8", json!([{"name": "scratch", "emptyDir": {}}]));
    prepare_api_volumes(root.path(), &p, &VolumeContext::default(), &volumes)
        .await
        .expect("nothing to do");
    assert!(!root.path().join("pods/u8").exists());
    assert!(kubelet_volumemanager::read_only_volumes(&p).is_empty());
    let access = pod("u9", kube_api_access());
    assert_eq!(
        kubelet_volumemanager::read_only_volumes(&access)
            .into_iter()
            .collect::<Vec<_>>(),
        ["kube-api-access-x7k2p"]
    );
}

fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m) == path)
}

fn fs_type(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        (Path::new(fields.get(4)?) == path).then(|| fields.get(sep + 1).map(|s| (*s).to_owned()))?
    })
}

/// Needs root (tmpfs mounts): `kubelet_testbed::require` skips without it,
/// and fails under CI.
#[tokio::test]
async fn secret_and_projected_volumes_are_tmpfs_and_unmounted_with_the_pod() {
    let Some(()) = kubelet_testbed::require("root (tmpfs mounts)", kubelet_testbed::root()) else {
        return;
    };
    let root = tempfile::tempdir().expect("tmp");
    let api = Arc::new(FakeApi::default());
    api.secret("team", "db", json!({"user": b64("admin")}));
    api.config_map("team", "kube-root-ca.crt", json!({"ca.crt": "CA"}));
    api.config_map("team", "app", json!({"k": "v"}));
    let volumes = ApiVolumes::new(api.clone());
    let mut spec = kube_api_access();
    let list = spec.as_array_mut().expect("array");
    list.push(json!({"name": "creds", "secret": {"secretName": "db"}}));
    list.push(json!({"name": "conf", "configMap": {"name": "app"}}));
    let p = pod("u10", spec);
    let ctx = VolumeContext {
        allocatable_memory: Some(64 << 20),
        allocatable_milli_cpu: None,
    };
    prepare_api_volumes(root.path(), &p, &ctx, &volumes)
        .await
        .expect("api volumes");
    let v = prepare_pod_volumes(root.path(), &p, &ctx).expect("pod volumes");
    let creds = v.volumes["creds"].clone();
    let access = v.volumes["kube-api-access-x7k2p"].clone();
    let conf = v.volumes["conf"].clone();
    assert_eq!(fs_type(&creds).as_deref(), Some("tmpfs"));
    assert_eq!(fs_type(&access).as_deref(), Some("tmpfs"));
    assert!(!is_mounted(&conf), "configMap volumes are on disk");
    assert_eq!(read(&creds.join("user")), "admin");
    assert_eq!(read(&access.join("ca.crt")), "CA");
    // Another sync mounts nothing more and keeps the contents.
    prepare_api_volumes(root.path(), &p, &ctx, &volumes)
        .await
        .expect("again");
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let count = info
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| Path::new(m) == creds))
        .count();
    assert_eq!(count, 1, "mounted once");
    assert_eq!(read(&creds.join("user")), "admin");

    kubelet_volumemanager::unmount_pod_volumes(root.path(), "u10").expect("unmount");
    assert!(!is_mounted(&creds) && !is_mounted(&access));
    assert!(
        !creds.join("user").exists(),
        "the secret went with its tmpfs"
    );
    kubelet_volumemanager::remove_pod_dir(root.path(), "u10").expect("remove");
    assert!(!root.path().join("pods/u10").exists());
}
