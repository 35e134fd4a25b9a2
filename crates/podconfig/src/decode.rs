//! Manifest decoding, static pod defaults and validation.
//!
//! Mirrors upstream `pkg/kubelet/config/common.go` (`tryDecodeSinglePod`,
//! `tryDecodePodList`, `applyDefaults`, `generatePodName`) and
//! `pkg/kubelet/config/hash.go`, with the subset of
//! `pkg/apis/core/validation.ValidatePodCreate` that a static pod can break.
//!
//! The decoder never panics: YAML is read with `serde-saphyr` under explicit
//! budgets ([`yaml_options`]: nesting depth, node and event counts, alias
//! replay), converted to JSON values, and only then into a [`Pod`]. A
//! property test over arbitrary bytes checks this; unit tests check that an
//! alias bomb and 100,000-deep nesting are refused quickly.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus, Toleration};
use serde_json::Value;

use crate::error::Error;
use crate::{CONFIG_HASH_ANNOTATION, MAX_MANIFEST_BYTES};

/// Where a static pod manifest came from. It decides the UID hash input
/// (`file:<path>` or `url:<url>`) and whether the NoExecute toleration is
/// added (file pods only), as upstream's `applyDefaults(pod, source, isFile,
/// nodeName)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestOrigin {
    /// A manifest file (the `staticPodPath` source).
    File(String),
    /// A manifest URL (the `staticPodURL` source).
    Url(String),
}

impl ManifestOrigin {
    /// A file origin from a path.
    pub fn file(path: impl AsRef<Path>) -> Self {
        Self::File(path.as_ref().display().to_string())
    }

    /// The path or URL, for messages.
    pub fn as_str(&self) -> &str {
        match self {
            Self::File(p) | Self::Url(p) => p,
        }
    }
}

impl std::fmt::Display for ManifestOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decodes one static pod manifest (YAML or JSON, a single `v1` `Pod`),
/// applies the static pod defaults for `node_name` and validates it.
///
/// This is what the file source does with each file (upstream
/// `sourceFile.extractFromFile` → `tryDecodeSinglePod`).
///
/// # Errors
/// [`Error::TooLarge`] past 10 MiB, [`Error::Decode`] for anything that is
/// not a `v1` Pod, [`Error::Invalid`] for a pod that fails validation.
pub fn decode_static_pod(
    data: &[u8],
    origin: &ManifestOrigin,
    node_name: &str,
) -> Result<Pod, Error> {
    let value = parse_document(data, origin)?;
    match kind_of(&value) {
        Some(("v1", "Pod")) => pod_from_value(value, origin, node_name),
        Some((api_version, kind)) => Err(decode_err(
            origin,
            format!("expected a v1 Pod, got {kind} in {api_version:?}"),
        )),
        None => Err(decode_err(
            origin,
            "object has no apiVersion or kind".into(),
        )),
    }
}

/// Decodes a manifest that is a single `v1` `Pod` or a `v1` `PodList`, as the
/// HTTP source accepts (upstream `sourceURL.extractFromURL`: single pod first,
/// then a list). Every pod gets the static pod defaults; one invalid pod
/// rejects the whole body.
///
/// # Errors
/// As [`decode_static_pod`]; for a list, the first invalid pod's error.
pub fn decode_static_pods(
    data: &[u8],
    origin: &ManifestOrigin,
    node_name: &str,
) -> Result<Vec<Pod>, Error> {
    let value = parse_document(data, origin)?;
    match kind_of(&value) {
        Some(("v1", "Pod")) => Ok(vec![pod_from_value(value, origin, node_name)?]),
        Some(("v1", "PodList")) => {
            let Value::Object(mut map) = value else {
                return Err(decode_err(origin, "PodList is not an object".into()));
            };
            let items = match map.remove("items") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items,
                Some(_) => return Err(decode_err(origin, "PodList items is not a list".into())),
            };
            let mut pods = Vec::with_capacity(items.len());
            for (i, mut item) in items.into_iter().enumerate() {
                // List items carry no apiVersion/kind; they are Pods by position.
                if let Value::Object(obj) = &mut item {
                    obj.insert("apiVersion".into(), Value::String("v1".into()));
                    obj.insert("kind".into(), Value::String("Pod".into()));
                }
                let pod = pod_from_value(item, origin, node_name).map_err(|e| match e {
                    Error::Invalid { origin, errors } => Error::Invalid {
                        origin,
                        errors: errors
                            .into_iter()
                            .map(|m| format!("items[{i}]: {m}"))
                            .collect(),
                    },
                    Error::Decode { origin, reason } => Error::Decode {
                        origin,
                        reason: format!("items[{i}]: {reason}"),
                    },
                    other => other,
                })?;
                pods.push(pod);
            }
            Ok(pods)
        }
        Some((api_version, kind)) => Err(decode_err(
            origin,
            format!("expected a v1 Pod or PodList, got {kind} in {api_version:?}"),
        )),
        None => Err(decode_err(
            origin,
            "object has no apiVersion or kind".into(),
        )),
    }
}

fn decode_err(origin: &ManifestOrigin, reason: String) -> Error {
    Error::Decode {
        origin: origin.to_string(),
        reason,
    }
}

/// YAML (a superset of JSON) to a JSON value, as upstream's `utilyaml.ToJSON`.
fn parse_document(data: &[u8], origin: &ManifestOrigin) -> Result<Value, Error> {
    if data.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(Error::TooLarge {
            origin: origin.to_string(),
            limit: MAX_MANIFEST_BYTES,
        });
    }
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(decode_err(origin, "manifest is empty".into()));
    }
    // JSON first: it is the common machine-written form and serde_json is
    // strict and fast. Everything else goes through the YAML parser.
    let value = match serde_json::from_slice::<Value>(data) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_slice_with_options::<Value>(data, yaml_options())
            .map_err(|e| decode_err(origin, e.to_string()))?,
    };
    if !value.is_object() {
        return Err(decode_err(origin, "manifest is not an object".into()));
    }
    Ok(value)
}

/// The YAML reader's settings for manifests.
///
/// Budgets: no pod needs more than 32 levels of nesting (the deepest pod
/// field paths, in affinity terms and projected volumes, are about 12), and
/// an alias bomb is cut off after 50,000 replayed events (a manifest with
/// anchors replays a few hundred), so decoding stays within a few tens of
/// MiB and a few hundred KiB of stack, whatever the input. One document per manifest, as before (upstream's
/// `tryDecodeSinglePod` reads one object).
///
/// Scalars are read as `serde_yaml` read them (YAML 1.2 core schema):
/// only `true`/`false` are booleans, `0755` and `1_000` stay strings.
/// Duplicate keys keep the last value, as upstream's lenient YAML-to-JSON
/// conversion does. Error messages are one line, without a snippet of the
/// manifest (it may hold secrets and goes to the log).
pub(crate) fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = 32;
    budget.flow_nesting_limit = 32;
    budget.max_nodes = 250_000;
    budget.max_events = 1_000_000;
    budget.max_documents = 1;
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 50_000;
    alias_limits.max_replay_stack_depth = 16;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits = alias_limits;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::LastWins;
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options.with_snippet = false;
    options
}

fn kind_of(value: &Value) -> Option<(&str, &str)> {
    let api_version = value.get("apiVersion")?.as_str()?;
    let kind = value.get("kind")?.as_str()?;
    Some((api_version, kind))
}

fn pod_from_value(value: Value, origin: &ManifestOrigin, node_name: &str) -> Result<Pod, Error> {
    let mut pod: Pod =
        serde_json::from_value(value).map_err(|e| decode_err(origin, e.to_string()))?;
    // Newest upstream: a static pod must be named before defaults add the node.
    if pod.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(Error::Invalid {
            origin: origin.to_string(),
            errors: vec!["metadata.name: Required value: name is needed for the pod".into()],
        });
    }
    // Decode-time defaulting of newest upstream: a negative grace period is
    // clamped to 1 (TestDecodeSinglePodTerminationGracePeriodSeconds).
    if let Some(spec) = pod.spec.as_mut()
        && spec.termination_grace_period_seconds.is_some_and(|g| g < 0)
    {
        spec.termination_grace_period_seconds = Some(1);
    }
    set_api_defaults(&mut pod);
    apply_defaults(&mut pod, origin, node_name);
    let errors = validate_static_pod(&pod);
    if !errors.is_empty() {
        return Err(Error::Invalid {
            origin: origin.to_string(),
            errors,
        });
    }
    Ok(pod)
}

/// The API defaults a decoded pod gets before anything else sees it
/// (upstream `pkg/apis/core/v1/defaults.go`, applied because the kubelet
/// decodes static pods through the defaulting scheme): restartPolicy
/// `Always`, dnsPolicy `ClusterFirst`, terminationGracePeriodSeconds 30, and
/// per container (init containers too) requests copied from limits where a
/// resource has a limit but no request (`SetDefaults_Pod`, which makes a
/// limits-only pod Guaranteed), terminationMessagePath `/dev/termination-log`,
/// terminationMessagePolicy `File`, imagePullPolicy `Always` for `:latest` or
/// untagged images and `IfNotPresent` otherwise, port protocol `TCP`, and the
/// probe defaults (timeout 1 s, period 10 s, success 1, failure 3; HTTP path
/// `/`, scheme `HTTP`). Fields already set are kept.
pub fn set_api_defaults(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    let containers = spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut());
    for c in containers {
        if let Some(res) = c.resources.as_mut()
            && let Some(limits) = res.limits.as_ref()
        {
            let requests = res.requests.get_or_insert_with(BTreeMap::new);
            for (name, q) in limits {
                requests.entry(name.clone()).or_insert_with(|| q.clone());
            }
        }
        c.termination_message_path
            .get_or_insert_with(|| "/dev/termination-log".into());
        c.termination_message_policy
            .get_or_insert_with(|| "File".into());
        if c.image_pull_policy.is_none() {
            let image = c.image.as_deref().unwrap_or("");
            c.image_pull_policy = Some(default_pull_policy(image).into());
        }
        for port in c.ports.iter_mut().flatten() {
            port.protocol.get_or_insert_with(|| "TCP".into());
        }
        for probe in [
            c.liveness_probe.as_mut(),
            c.readiness_probe.as_mut(),
            c.startup_probe.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            probe.timeout_seconds.get_or_insert(1);
            probe.period_seconds.get_or_insert(10);
            probe.success_threshold.get_or_insert(1);
            probe.failure_threshold.get_or_insert(3);
            if let Some(http) = probe.http_get.as_mut() {
                http.path.get_or_insert_with(|| "/".into());
                http.scheme.get_or_insert_with(|| "HTTP".into());
            }
        }
    }
}

/// `Always` for an image tagged `latest` or untagged (a digest counts as a
/// tag), `IfNotPresent` otherwise (upstream `SetDefaults_Container`).
fn default_pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    if name.contains('@') {
        return "IfNotPresent";
    }
    match name.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// `<name>-<lowercase node name>`, upstream's `generatePodName`.
pub fn static_pod_name(name: &str, node_name: &str) -> String {
    format!("{name}-{}", node_name.to_lowercase())
}

/// Applies the static pod defaults of upstream `applyDefaults`
/// (`pkg/kubelet/config/common.go`):
///
/// - a UID when none is given: FNV-128a (newest upstream; older used MD5)
///   over the pod's JSON, then `host:<node>` and `file:<path>` (file) or
///   `url:<url>` (HTTP), as lowercase hex. The pod is hashed first because
///   upstream's `deepHashPod` resets the hasher. The JSON is that of the
///   decoded `k8s-openapi` pod (maps are sorted), so the UID is stable
///   across restarts; it is not byte-for-byte upstream's UID, which hashes
///   Go's internal type after API defaulting;
/// - name `<name>-<lowercase node>`, namespace `default` when empty,
///   `spec.nodeName`;
/// - annotation `kubernetes.io/config.hash` = UID;
/// - file pods: toleration `{operator: Exists, effect: NoExecute}`
///   (`AddOrUpdateTolerationInPod`);
/// - `status.phase = Pending`.
pub fn apply_defaults(pod: &mut Pod, origin: &ManifestOrigin, node_name: &str) {
    if pod.metadata.uid.as_deref().unwrap_or("").is_empty() {
        let mut hasher = Fnv128a::new();
        // serde_json of k8s-openapi types cannot fail (string keys only).
        if let Ok(json) = serde_json::to_vec(pod) {
            hasher.write(&json);
            hasher.write(b"\n"); // json.Encoder appends a newline
        }
        match origin {
            ManifestOrigin::File(path) => {
                hasher.write(format!("host:{node_name}").as_bytes());
                hasher.write(format!("file:{path}").as_bytes());
            }
            ManifestOrigin::Url(url) => hasher.write(format!("url:{url}").as_bytes()),
        }
        let uid = hasher.hex();
        tracing::trace!(%uid, %origin, "generated static pod UID");
        pod.metadata.uid = Some(uid);
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    pod.metadata.name = Some(static_pod_name(&name, node_name));
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = Some("default".into());
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_string());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_HASH_ANNOTATION.into(), uid);
    if matches!(origin, ManifestOrigin::File(_)) {
        let toleration = Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        };
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        // AddOrUpdateTolerationInPod: replace a matching one, else append.
        match tolerations.iter_mut().find(|t| {
            t.key == toleration.key
                && t.effect == toleration.effect
                && t.operator.as_deref().unwrap_or("Equal") == "Exists"
                && t.value.as_deref().unwrap_or("").is_empty()
        }) {
            Some(existing) => *existing = toleration,
            None => tolerations.push(toleration),
        }
    }
    pod.status.get_or_insert_with(PodStatus::default).phase = Some("Pending".into());
}

/// FNV-1a, 128 bit (Go's `hash/fnv.New128a`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv128a(u128);

impl Fnv128a {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    pub(crate) fn new() -> Self {
        Self(Self::OFFSET)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u128::from(*b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    pub(crate) fn hex(&self) -> String {
        format!("{:032x}", self.0)
    }
}

// ---------------------------------------------------------------- validation

const RESTART_POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];
const DNS_POLICIES: [&str; 4] = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];

/// Validates a defaulted static pod. Returns one `field: reason` per failure,
/// empty when the pod is valid.
///
/// Covers the rules of upstream `ValidatePodCreate` that a manifest can
/// break in practice: name and namespace syntax, at least one container,
/// container names (DNS labels, unique across init, regular and ephemeral
/// containers), images, restart and DNS policies, resource quantities
/// (parsable, not negative, limits not below requests), volume names and
/// mounts, no ephemeral containers; and the static pod rule that a static pod may not reference API
/// objects (service accounts, secrets, config maps, PVCs, CSI and ephemeral
/// volumes, projected secrets/config maps/tokens/cluster trust bundles,
/// resource claims).
pub fn validate_static_pod(pod: &Pod) -> Vec<String> {
    let mut errs = Vec::new();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    if name.is_empty() {
        errs.push("metadata.name: Required value".into());
    } else if !is_dns1123_subdomain(name) {
        errs.push(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
        ));
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    if !is_dns1123_label(namespace) {
        errs.push(format!(
            "metadata.namespace: Invalid value: {namespace:?}: must be a DNS-1123 label"
        ));
    }
    let Some(spec) = pod.spec.as_ref() else {
        errs.push("spec.containers: Required value".into());
        return errs;
    };
    if spec.containers.is_empty() {
        errs.push("spec.containers: Required value".into());
    }
    if let Some(policy) = spec.restart_policy.as_deref()
        && !RESTART_POLICIES.contains(&policy)
    {
        errs.push(format!(
            "spec.restartPolicy: Unsupported value: {policy:?}: supported values: \"Always\", \"OnFailure\", \"Never\""
        ));
    }
    if let Some(policy) = spec.dns_policy.as_deref()
        && !DNS_POLICIES.contains(&policy)
    {
        errs.push(format!("spec.dnsPolicy: Unsupported value: {policy:?}"));
    }

    let mut volume_names = HashSet::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let field = format!("spec.volumes[{i}]");
        if !is_dns1123_label(&volume.name) {
            errs.push(format!(
                "{field}.name: Invalid value: {:?}: must be a DNS-1123 label",
                volume.name
            ));
        } else if !volume_names.insert(volume.name.as_str()) {
            errs.push(format!("{field}.name: Duplicate value: {:?}", volume.name));
        }
        let api_ref = if volume.secret.is_some() {
            Some("secrets")
        } else if volume.config_map.is_some() {
            Some("configmaps")
        } else if volume.persistent_volume_claim.is_some() {
            Some("persistentvolumeclaims")
        } else if volume.csi.is_some() {
            Some("csidrivers")
        } else if volume.ephemeral.is_some() {
            Some("persistentvolumeclaims (ephemeral volumes)")
        } else if let Some(projected) = &volume.projected {
            projected.sources.iter().flatten().find_map(|s| {
                if s.secret.is_some() {
                    Some("secrets")
                } else if s.config_map.is_some() {
                    Some("configmaps")
                } else if s.service_account_token.is_some() {
                    Some("serviceaccounts")
                } else if s.cluster_trust_bundle.is_some() {
                    Some("clustertrustbundles")
                } else {
                    None
                }
            })
        } else {
            None
        };
        if let Some(kind) = api_ref {
            errs.push(format!(
                "{field}: Forbidden: static pods may not reference {kind} API objects"
            ));
        }
    }
    for (field, sa) in [
        ("spec.serviceAccountName", &spec.service_account_name),
        ("spec.serviceAccount", &spec.service_account),
    ] {
        if sa.as_deref().is_some_and(|s| !s.is_empty()) {
            errs.push(format!(
                "{field}: Forbidden: static pods may not reference serviceaccounts API objects"
            ));
        }
    }
    if spec.resource_claims.as_ref().is_some_and(|c| !c.is_empty()) {
        errs.push("spec.resourceClaims: Forbidden: static pods may not reference resourceclaims API objects".into());
    }

    let mut container_names = HashSet::new();
    let groups: [(&str, Vec<&Container>); 2] = [
        (
            "spec.initContainers",
            spec.init_containers.iter().flatten().collect(),
        ),
        ("spec.containers", spec.containers.iter().collect()),
    ];
    for (group, containers) in groups {
        for (i, c) in containers.into_iter().enumerate() {
            validate_container(
                &format!("{group}[{i}]"),
                c,
                &mut container_names,
                &volume_names,
                &mut errs,
            );
        }
    }
    // Upstream ValidatePodCreate: ephemeral containers are only ever added
    // to a running pod, through the API's `ephemeralcontainers` subresource.
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        errs.push("spec.ephemeralContainers: Forbidden: cannot be set on create".into());
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        let field = format!("spec.ephemeralContainers[{i}]");
        if !is_dns1123_label(&c.name) {
            errs.push(format!(
                "{field}.name: Invalid value: {:?}: must be a DNS-1123 label",
                c.name
            ));
        } else if !container_names.insert(c.name.clone()) {
            errs.push(format!("{field}.name: Duplicate value: {:?}", c.name));
        }
    }
    errs
}

fn validate_container(
    field: &str,
    c: &Container,
    names: &mut HashSet<String>,
    volumes: &HashSet<&str>,
    errs: &mut Vec<String>,
) {
    if c.name.is_empty() {
        errs.push(format!("{field}.name: Required value"));
    } else if !is_dns1123_label(&c.name) {
        errs.push(format!(
            "{field}.name: Invalid value: {:?}: must be a DNS-1123 label",
            c.name
        ));
    } else if !names.insert(c.name.clone()) {
        errs.push(format!("{field}.name: Duplicate value: {:?}", c.name));
    }
    if c.image.as_deref().unwrap_or("").trim().is_empty() {
        errs.push(format!("{field}.image: Required value"));
    }
    if let Some(resources) = &c.resources {
        let mut requests = BTreeMap::new();
        for (kind, list) in [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ] {
            for (name, q) in list.iter().flatten() {
                // Compared exactly, in thousandths (the one quantity parser).
                match kubelet_container::quantity::milli_value(&q.0) {
                    Err(e) => errs.push(format!(
                        "{field}.resources.{kind}[{name}]: Invalid value: {:?}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' ({e})",
                        q.0
                    )),
                    Ok(v) if v < 0 => errs.push(format!(
                        "{field}.resources.{kind}[{name}]: Invalid value: {:?}: must be greater than or equal to 0",
                        q.0
                    )),
                    Ok(v) if kind == "requests" => {
                        requests.insert(name.as_str(), v);
                    }
                    Ok(limit) => {
                        if let Some(request) = requests.get(name.as_str())
                            && *request > limit
                        {
                            errs.push(format!(
                                "{field}.resources.requests[{name}]: Invalid value: {:?}: must be less than or equal to {name} limit of {}",
                                resources.requests.as_ref().and_then(|r| r.get(name)).map(|q| q.0.as_str()).unwrap_or(""),
                                q.0
                            ));
                        }
                    }
                }
            }
        }
    }
    for (i, env) in c.env.iter().flatten().enumerate() {
        if let Some(from) = &env.value_from {
            let kind = if from.secret_key_ref.is_some() {
                Some("secrets")
            } else if from.config_map_key_ref.is_some() {
                Some("configmaps")
            } else {
                None
            };
            if let Some(kind) = kind {
                errs.push(format!(
                    "{field}.env[{i}].valueFrom: Forbidden: static pods may not reference {kind} API objects"
                ));
            }
        }
    }
    for (i, from) in c.env_from.iter().flatten().enumerate() {
        let kind = if from.secret_ref.is_some() {
            "secrets"
        } else {
            "configmaps"
        };
        errs.push(format!(
            "{field}.envFrom[{i}]: Forbidden: static pods may not reference {kind} API objects"
        ));
    }
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        if !volumes.contains(m.name.as_str()) {
            errs.push(format!(
                "{field}.volumeMounts[{i}].name: Not found: {:?}",
                m.name
            ));
        }
        if m.mount_path.is_empty() {
            errs.push(format!(
                "{field}.volumeMounts[{i}].mountPath: Required value"
            ));
        }
    }
}

/// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "Node-1";

    fn file() -> ManifestOrigin {
        ManifestOrigin::File("/etc/kubernetes/manifests/web.yaml".into())
    }

    const YAML: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: nginx\n    image: nginx:1.27\n";

    #[test]
    fn fnv128a_matches_go_vectors() {
        // Go: fmt.Printf("%x", fnv.New128a().Sum(nil)) and of "a".
        assert_eq!(Fnv128a::new().hex(), "6c62272e07bb014262b821756295c58d");
        let mut h = Fnv128a::new();
        h.write(b"a");
        assert_eq!(h.hex(), "d228cb696f1a8caf78912b704e4a8964");
    }

    #[test]
    fn yaml_pod_gets_static_defaults() {
        let pod = decode_static_pod(YAML.as_bytes(), &file(), NODE).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(NODE));
        let uid = pod.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION],
            uid
        );
        let tol = spec.tolerations.as_ref().unwrap();
        assert_eq!(tol.len(), 1);
        assert_eq!(tol[0].operator.as_deref(), Some("Exists"));
        assert_eq!(tol[0].effect.as_deref(), Some("NoExecute"));
        assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn json_and_yaml_decode_alike() {
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}}"#;
        let a = decode_static_pod(json.as_bytes(), &file(), NODE).unwrap();
        let b = decode_static_pod(YAML.as_bytes(), &file(), NODE).unwrap();
        assert_eq!(a, b, "same pod, same UID, whatever the syntax");
    }

    #[test]
    fn uid_is_deterministic_and_depends_on_node_path_and_content() {
        let uid = |data: &str, origin: &ManifestOrigin, node: &str| {
            decode_static_pod(data.as_bytes(), origin, node)
                .unwrap()
                .metadata
                .uid
                .unwrap()
        };
        let base = uid(YAML, &file(), NODE);
        assert_eq!(base, uid(YAML, &file(), NODE));
        assert_ne!(base, uid(YAML, &file(), "other"));
        assert_ne!(
            base,
            uid(YAML, &ManifestOrigin::File("/elsewhere.yaml".into()), NODE)
        );
        assert_ne!(base, uid(&YAML.replace("1.27", "1.28"), &file(), NODE));
        let url = ManifestOrigin::Url("http://127.0.0.1/pods".into());
        assert_ne!(base, uid(YAML, &url, NODE));
        // A given UID is kept.
        let with_uid = YAML.replace("name: web\n", "name: web\n  uid: fixed-uid\n");
        assert_eq!(uid(&with_uid, &file(), NODE), "fixed-uid");
    }

    #[test]
    fn a_static_pod_has_no_ephemeral_containers() {
        let data = format!(
            "{YAML}  ephemeralContainers:\n  - name: debug\n    image: busybox\n    targetContainerName: nginx\n"
        );
        let err = decode_static_pod(data.as_bytes(), &file(), NODE).unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.ephemeralContainers: Forbidden: cannot be set on create"),
            "{err}"
        );
    }

    #[test]
    fn url_pods_get_no_toleration_and_keep_namespace() {
        let data = YAML.replace("name: web\n", "name: web\n  namespace: kube-system\n");
        let url = ManifestOrigin::Url("http://127.0.0.1/pods".into());
        let pod = decode_static_pod(data.as_bytes(), &url, NODE).unwrap();
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        assert!(pod.spec.unwrap().tolerations.is_none());
    }

    #[test]
    fn existing_toleration_is_updated_not_duplicated() {
        let data = format!(
            "{YAML}  tolerations:\n  - operator: Exists\n    effect: NoExecute\n  - key: a\n    operator: Exists\n"
        );
        let pod = decode_static_pod(data.as_bytes(), &file(), NODE).unwrap();
        assert_eq!(pod.spec.unwrap().tolerations.unwrap().len(), 2);
    }

    // Upstream TestStaticPodNameGenerate.
    #[test]
    fn static_pod_name_generation() {
        assert_eq!(static_pod_name("static-pod1", "node1"), "static-pod1-node1");
        assert_eq!(static_pod_name("static-pod1", "Node1"), "static-pod1-node1");
        assert_eq!(static_pod_name("static-pod1", "NODE1"), "static-pod1-node1");
        assert!(!is_dns1123_subdomain("static-pod1-NODE1"));
        let upper = YAML.replace("name: web", "name: Web");
        let err = decode_static_pod(upper.as_bytes(), &file(), NODE).unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
    }

    fn invalid(data: &str) -> String {
        match decode_static_pod(data.as_bytes(), &file(), NODE) {
            Err(e @ Error::Invalid { .. }) => e.to_string(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn validation_rules() {
        assert!(
            invalid(&YAML.replace("  name: web\n", "  name: \"\"\n")).contains("name is needed")
        );
        assert!(
            invalid("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers: []\n")
                .contains("spec.containers: Required")
        );
        assert!(
            invalid("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n")
                .contains("spec.containers: Required")
        );
        let dup = format!("{YAML}  - name: nginx\n    image: other\n");
        assert!(invalid(&dup).contains("Duplicate value: \"nginx\""));
        let init_dup = format!("{YAML}  initContainers:\n  - name: nginx\n    image: busybox\n");
        assert!(invalid(&init_dup).contains("Duplicate value"));
        let qty = format!("{YAML}    resources:\n      limits:\n        cpu: lots\n");
        assert!(invalid(&qty).contains("resources.limits[cpu]"));
        let below = format!(
            "{YAML}    resources:\n      requests:\n        memory: 2Gi\n      limits:\n        memory: 1Gi\n"
        );
        assert!(invalid(&below).contains("must be less than or equal to memory limit"));
        let negative = format!("{YAML}    resources:\n      requests:\n        cpu: \"-1\"\n");
        assert!(invalid(&negative).contains("greater than or equal to 0"));
        let restart = format!("{YAML}  restartPolicy: Sometimes\n");
        assert!(invalid(&restart).contains("spec.restartPolicy: Unsupported value"));
        let no_image = YAML.replace("    image: nginx:1.27\n", "");
        assert!(invalid(&no_image).contains("image: Required"));
        let bad_cname = YAML.replace("- name: nginx", "- name: Nginx_1");
        assert!(invalid(&bad_cname).contains("DNS-1123"));
    }

    #[test]
    fn valid_resources_pass() {
        let ok = format!(
            "{YAML}    resources:\n      requests:\n        cpu: 100m\n        memory: 1Gi\n      limits:\n        cpu: \"1\"\n        memory: 1024Mi\n"
        );
        decode_static_pod(ok.as_bytes(), &file(), NODE).unwrap();
    }

    #[test]
    fn static_pods_may_not_reference_api_objects() {
        let sa = format!("{YAML}  serviceAccountName: builder\n");
        assert!(invalid(&sa).contains("serviceaccounts"));
        let secret = format!("{YAML}  volumes:\n  - name: s\n    secret:\n      secretName: x\n");
        assert!(invalid(&secret).contains("may not reference secrets"));
        let ctb = format!(
            "{YAML}  volumes:\n  - name: ctb\n    projected:\n      sources:\n      - clusterTrustBundle:\n          name: my-ctb\n          path: ctb-file\n"
        );
        assert!(invalid(&ctb).contains("may not reference clustertrustbundles"));
        let claims =
            format!("{YAML}  resourceClaims:\n  - name: my-claim\n    resourceClaimName: ext\n");
        assert!(invalid(&claims).contains("may not reference resourceclaims"));
        let env = format!(
            "{YAML}    env:\n    - name: A\n      valueFrom:\n        configMapKeyRef:\n          name: cm\n          key: k\n"
        );
        assert!(invalid(&env).contains("configmaps"));
        let host = format!(
            "{YAML}    volumeMounts:\n    - name: data\n      mountPath: /data\n  volumes:\n  - name: data\n    hostPath:\n      path: /var/data\n"
        );
        decode_static_pod(host.as_bytes(), &file(), NODE).unwrap();
        let missing =
            format!("{YAML}    volumeMounts:\n    - name: nope\n      mountPath: /data\n");
        assert!(invalid(&missing).contains("volumeMounts[0].name: Not found"));
    }

    // Upstream TestDecodeSinglePodTerminationGracePeriodSeconds.
    #[test]
    fn negative_grace_period_is_clamped() {
        let data = format!("{YAML}  terminationGracePeriodSeconds: -1\n");
        let pod = decode_static_pod(data.as_bytes(), &file(), NODE).unwrap();
        assert_eq!(pod.spec.unwrap().termination_grace_period_seconds, Some(1));
    }

    #[test]
    fn not_a_pod_is_a_decode_error() {
        for data in [
            "",
            "   \n",
            "not: [valid",
            "[1, 2]",
            "kind: Pod\nmetadata:\n  name: x\n",
            "apiVersion: apps/v1\nkind: Deployment\n",
            "apiVersion: v1\nkind: Pod\nspec: 7\n",
            "---\napiVersion: v1\nkind: Pod\n---\napiVersion: v1\nkind: Pod\n",
        ] {
            let err = decode_static_pod(data.as_bytes(), &file(), NODE).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{data:?}: {err:?}");
            assert!(
                err.to_string()
                    .starts_with("/etc/kubernetes/manifests/web.yaml"),
                "{err}"
            );
        }
        // A list is not accepted by the file decoder.
        let list = r#"{"apiVersion":"v1","kind":"PodList","items":[]}"#;
        assert!(decode_static_pod(list.as_bytes(), &file(), NODE).is_err());
    }

    #[test]
    fn yaml_scalars_read_as_serde_yaml_read_them() {
        // YAML 1.2 core schema: `yes`/`on` and leading-zero or underscored
        // digits are strings; a duplicate key keeps its last value.
        let data = format!("{YAML}    args: [yes, on, 0755, 1_000]\n    image: nginx:1.28\n");
        let pod = decode_static_pod(data.as_bytes(), &file(), NODE).unwrap();
        let c = &pod.spec.unwrap().containers[0];
        assert_eq!(
            c.args.as_deref(),
            Some(&["yes".to_owned(), "on".into(), "0755".into(), "1_000".into()][..])
        );
        assert_eq!(c.image.as_deref(), Some("nginx:1.28"));
    }

    #[test]
    fn too_large_is_rejected_before_parsing() {
        let data = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
        assert!(matches!(
            decode_static_pod(&data, &file(), NODE),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn pod_list_decodes_and_one_bad_pod_rejects_all() {
        let url = ManifestOrigin::Url("http://127.0.0.1/pods".into());
        let pod = |name: &str| {
            format!(
                r#"{{"metadata":{{"name":"{name}"}},"spec":{{"containers":[{{"name":"c","image":"i"}}]}}}}"#
            )
        };
        let list = format!(
            r#"{{"apiVersion":"v1","kind":"PodList","items":[{},{}]}}"#,
            pod("a"),
            pod("b")
        );
        let pods = decode_static_pods(list.as_bytes(), &url, NODE).unwrap();
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a-node-1", "b-node-1"]);
        assert_ne!(pods[0].metadata.uid, pods[1].metadata.uid);
        let bad = format!(
            r#"{{"apiVersion":"v1","kind":"PodList","items":[{},{}]}}"#,
            pod("a"),
            pod("")
        );
        let err = decode_static_pods(bad.as_bytes(), &url, NODE).unwrap_err();
        assert!(err.to_string().contains("items[1]"), "{err}");
        let single = decode_static_pods(YAML.as_bytes(), &url, NODE).unwrap();
        assert_eq!(single.len(), 1);
    }

    #[test]
    fn api_defaults_make_a_limits_only_pod_guaranteed_and_keep_what_is_set() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: g}\nspec:\n  containers:\n  - name: a\n    image: busybox\n    resources:\n      limits: {memory: 64Mi, cpu: 2}\n      requests: {cpu: 1}\n    ports: [{containerPort: 80}]\n    readinessProbe: {httpGet: {port: 80}}\n  - name: b\n    image: registry.example/x:1.2\n    imagePullPolicy: Never\n  - name: c\n    image: registry.example:5000/x\n";
        let origin = ManifestOrigin::file("/m/g.yaml");
        let pod = decode_static_pod(yaml.as_bytes(), &origin, "n").unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        let a = &spec.containers[0];
        let req = a.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(req["memory"].0, "64Mi", "request copied from the limit");
        assert_eq!(req["cpu"].0, "1", "a request that is set is kept");
        assert_eq!(a.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            a.ports.as_ref().unwrap()[0].protocol.as_deref(),
            Some("TCP")
        );
        let probe = a.readiness_probe.as_ref().unwrap();
        assert_eq!(
            (
                probe.timeout_seconds,
                probe.period_seconds,
                probe.success_threshold,
                probe.failure_threshold
            ),
            (Some(1), Some(10), Some(1), Some(3))
        );
        assert_eq!(probe.http_get.as_ref().unwrap().path.as_deref(), Some("/"));
        assert_eq!(
            spec.containers[1].image_pull_policy.as_deref(),
            Some("Never")
        );
        assert_eq!(
            spec.containers[2].image_pull_policy.as_deref(),
            Some("Always")
        );
        assert_eq!(default_pull_policy("x:1@sha256:abc"), "IfNotPresent");
        assert_eq!(default_pull_policy("host:5000/x:2"), "IfNotPresent");
    }
}
