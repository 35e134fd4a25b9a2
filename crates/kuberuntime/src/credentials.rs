//! Registry credentials for image pulls: the node's docker config and the
//! pod's `imagePullSecrets`, matched to an image as upstream does
//! (`pkg/credentialprovider/config.go`, `keyring.go`,
//! `pkg/credentialprovider/secrets/secrets.go`, and `pullImage` in
//! `pkg/kubelet/kuberuntime/kuberuntime_image.go`).
//!
//! A [`DockerKeyring`] holds `registry[/path]` keys, each with a username and
//! password. [`DockerKeyring::lookup`] returns every credential whose key
//! matches the image — the host (with `*` globs per dot-separated part) and
//! the port must match, and the key's path must be a prefix of the image's —
//! most specific first. Images without a registry match `index.docker.io`.
//! The runtime manager tries each credential in turn and pulls anonymously
//! only when none matches, as upstream.

use std::collections::BTreeMap;

use base64::Engine;
use kubelet_cri_client::api::AuthConfig;
use serde::Deserialize;

/// Upstream's default registry host for images without one.
pub const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

/// A docker config that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("docker config {origin}: {reason}")]
pub struct CredentialError {
    /// Where it came from (a file, a secret).
    pub origin: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, Deserialize, Default)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

#[derive(Debug, Deserialize)]
struct ConfigJson {
    auths: BTreeMap<String, Entry>,
}

/// Credentials by registry key (upstream `BasicDockerKeyring`).
#[derive(Debug, Clone, Default)]
pub struct DockerKeyring {
    /// (key without scheme, credential), kept most specific first.
    entries: Vec<(String, AuthConfig)>,
}

/// The `host[:port]/path` of a key or image, scheme and trailing `/` removed
/// (upstream `parseSchemelessURL` and the `/v1/` suffix handling).
fn schemeless(s: &str) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let s = s.trim_end_matches('/');
    // `https://index.docker.io/v1/` names the default registry itself.
    s.strip_suffix("/v1").unwrap_or(s).to_owned()
}

fn split_host(s: &str) -> (&str, &str) {
    match s.split_once('/') {
        Some((h, p)) => (h, p),
        None => (s, ""),
    }
}

/// One dot-separated part against a glob (`*` matches any run of characters
/// within the part), as `filepath.Match` on each part upstream.
fn glob_part(pattern: &str, value: &str) -> bool {
    let Some(star) = pattern.find('*') else {
        return pattern == value;
    };
    let (prefix, rest) = (&pattern[..star], &pattern[star + 1..]);
    if !value.starts_with(prefix) {
        return false;
    }
    let tail = &value[prefix.len()..];
    (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob_part(rest, &tail[i..]))
}

/// Upstream `URLsMatch`: hosts match part by part with globs, ports equal,
/// and the key's path a prefix of the image's.
fn key_matches(key: &str, image: &str) -> bool {
    let (kh, kp) = split_host(key);
    let (ih, ip) = split_host(image);
    let (khost, kport) = kh.split_once(':').unwrap_or((kh, ""));
    let (ihost, iport) = ih.split_once(':').unwrap_or((ih, ""));
    if kport != iport {
        return false;
    }
    let kparts: Vec<&str> = khost.split('.').collect();
    let iparts: Vec<&str> = ihost.split('.').collect();
    if kparts.len() != iparts.len() {
        return false;
    }
    if !kparts.iter().zip(&iparts).all(|(k, i)| glob_part(k, i)) {
        return false;
    }
    kp.is_empty() || ip == kp || ip.starts_with(&format!("{kp}/"))
}

/// The image's registry and repository, `index.docker.io/...` for images
/// without a registry (a first part with no `.` or `:` and not `localhost`).
fn image_key(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    // Drop the tag: a `:` after the last `/`.
    let name = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    let first = name.split('/').next().unwrap_or("");
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        name.to_owned()
    } else if name.contains('/') {
        format!("{DEFAULT_REGISTRY_HOST}/{name}")
    } else {
        format!("{DEFAULT_REGISTRY_HOST}/library/{name}")
    }
}

impl DockerKeyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether it holds no credential.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds the credentials of a docker config: `{"auths": {...}}` (the
    /// `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` secret,
    /// `config.json`) or the legacy map (`.dockercfg`). An entry's `auth`
    /// (base64 `user:password`) wins over its `username` and `password`, as
    /// upstream's `DockerConfigEntry` decoding.
    pub fn add_config(&mut self, origin: &str, data: &[u8]) -> Result<(), CredentialError> {
        let err = |reason: String| CredentialError {
            origin: origin.to_owned(),
            reason,
        };
        let auths = match serde_json::from_slice::<ConfigJson>(data) {
            Ok(c) => c.auths,
            Err(_) => serde_json::from_slice::<BTreeMap<String, Entry>>(data)
                .map_err(|e| err(format!("neither {{\"auths\": ...}} nor a legacy map: {e}")))?,
        };
        for (key, entry) in auths {
            let (mut username, mut password) = (entry.username, entry.password);
            if !entry.auth.is_empty() {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(entry.auth.trim())
                    .map_err(|e| err(format!("{key}: auth is not base64: {e}")))?;
                let text = String::from_utf8(decoded)
                    .map_err(|_| err(format!("{key}: auth is not UTF-8")))?;
                let (u, p) = text
                    .split_once(':')
                    .ok_or_else(|| err(format!("{key}: auth is not user:password")))?;
                username = u.to_owned();
                password = p.to_owned();
            }
            let key = schemeless(&key);
            let (host, _) = split_host(&key);
            self.entries.push((
                key.clone(),
                AuthConfig {
                    username,
                    password,
                    server_address: host.to_owned(),
                    ..Default::default()
                },
            ));
        }
        // Most specific first (upstream sorts keys in reverse order).
        self.entries.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(())
    }

    /// Adds every credential of `other` (pod secrets before the node's).
    pub fn extend(&mut self, other: &DockerKeyring) {
        self.entries.extend(other.entries.iter().cloned());
    }

    /// Every credential for `image`, most specific first (upstream
    /// `BasicDockerKeyring.Lookup`).
    pub fn lookup(&self, image: &str) -> Vec<AuthConfig> {
        let key = image_key(image);
        self.entries
            .iter()
            .filter(|(k, _)| key_matches(k, &key))
            .map(|(_, a)| a.clone())
            .collect()
    }
}

/// The docker configs of a pod's `imagePullSecrets` (upstream
/// `getPullSecretsForPod`: the secret manager's `GetSecret` for each name,
/// then `MakeDockerKeyring`), read when an image is pulled. A standalone
/// kubelet has no API server and so none; the agent's implementation reads
/// `kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg` secrets
/// from the API server.
#[async_trait::async_trait]
pub trait PullSecrets: Send + Sync {
    /// `(origin, docker config)` for each of `names` in `namespace` that
    /// exists and has one; missing or unreadable secrets are skipped (and
    /// logged), as upstream.
    async fn docker_configs(&self, namespace: &str, names: &[String]) -> Vec<(String, Vec<u8>)>;
}

/// The docker config a pull secret holds (upstream `MakeDockerKeyring`):
/// `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` secret,
/// `.dockercfg` of a `kubernetes.io/dockercfg` secret; `None` for any other
/// secret or an empty one.
pub fn secret_docker_config(
    secret_type: Option<&str>,
    data: &BTreeMap<String, Vec<u8>>,
) -> Option<Vec<u8>> {
    let key = match secret_type {
        Some("kubernetes.io/dockerconfigjson") => ".dockerconfigjson",
        Some("kubernetes.io/dockercfg") => ".dockercfg",
        _ => return None,
    };
    data.get(key).filter(|d| !d.is_empty()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(user: &str, pass: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    }

    #[test]
    fn image_keys_default_to_docker_hub() {
        assert_eq!(image_key("busybox"), "index.docker.io/library/busybox");
        assert_eq!(image_key("busybox:1.36"), "index.docker.io/library/busybox");
        assert_eq!(image_key("me/app@sha256:ab"), "index.docker.io/me/app");
        assert_eq!(
            image_key("registry.example.com:5000/team/app:1"),
            "registry.example.com:5000/team/app"
        );
        assert_eq!(image_key("localhost/busybox:latest"), "localhost/busybox");
    }

    #[test]
    fn lookup_matches_hosts_globs_ports_and_path_prefixes_most_specific_first() {
        let mut k = DockerKeyring::new();
        let cfg = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "registry.example.com": {{"username": "all", "password": "p1"}},
                "registry.example.com/team": {{"auth": "{}"}},
                "*.corp.example": {{"username": "glob", "password": "p3"}},
                "registry.example.com:5000": {{"username": "port", "password": "p4"}}
            }}}}"#,
            auth("hub", "h"),
            auth("team", "t:with:colons")
        );
        k.add_config("test", cfg.as_bytes()).unwrap();
        let users = |image: &str| -> Vec<(String, String)> {
            k.lookup(image)
                .into_iter()
                .map(|a| (a.username, a.password))
                .collect()
        };
        assert_eq!(users("busybox"), [("hub".into(), "h".into())]);
        assert_eq!(
            users("registry.example.com/team/app:1"),
            [
                ("team".into(), "t:with:colons".into()),
                ("all".into(), "p1".into())
            ]
        );
        assert_eq!(
            users("registry.example.com/teamx/app"),
            [("all".into(), "p1".into())]
        );
        assert_eq!(
            users("registry.example.com:5000/app"),
            [("port".into(), "p4".into())]
        );
        assert_eq!(users("eu.corp.example/app"), [("glob".into(), "p3".into())]);
        assert!(
            users("a.b.corp.example/app").is_empty(),
            "a glob matches one part only"
        );
        assert!(users("other.example.org/app").is_empty());
        assert_eq!(
            k.lookup("registry.example.com/x")[0].server_address,
            "registry.example.com"
        );
    }

    #[test]
    fn pull_secrets_are_read_by_their_type() {
        let data: BTreeMap<String, Vec<u8>> = [
            (".dockerconfigjson".to_owned(), b"{\"auths\": {}}".to_vec()),
            (".dockercfg".to_owned(), b"{}".to_vec()),
        ]
        .into();
        assert_eq!(
            secret_docker_config(Some("kubernetes.io/dockerconfigjson"), &data).as_deref(),
            Some(&b"{\"auths\": {}}"[..])
        );
        assert_eq!(
            secret_docker_config(Some("kubernetes.io/dockercfg"), &data).as_deref(),
            Some(&b"{}"[..])
        );
        assert_eq!(secret_docker_config(Some("Opaque"), &data), None);
        assert_eq!(secret_docker_config(None, &data), None);
        let empty: BTreeMap<String, Vec<u8>> = [(".dockercfg".to_owned(), Vec::new())].into();
        assert_eq!(
            secret_docker_config(Some("kubernetes.io/dockercfg"), &empty),
            None
        );
    }

    #[test]
    fn bad_configs_are_errors_naming_their_origin() {
        let mut k = DockerKeyring::new();
        let e = k.add_config("secret ns/creds", b"not json").unwrap_err();
        assert!(e.to_string().contains("secret ns/creds"), "{e}");
        let e = k
            .add_config("f", br#"{"auths": {"r.example": {"auth": "%%%"}}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
        // The legacy .dockercfg map.
        k.add_config(
            "legacy",
            br#"{"r.example": {"username": "u", "password": "p"}}"#,
        )
        .unwrap();
        assert_eq!(k.lookup("r.example/app")[0].username, "u");
    }
}
