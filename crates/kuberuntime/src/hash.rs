//! The container hash: what decides that a running container no longer
//! matches its spec and must be restarted.
//!
//! Upstream (`pkg/kubelet/container/helpers.go`, `HashContainer`) hashed the
//! whole container spec for years, so every kubelet upgrade that added a
//! field to `v1.Container` changed every hash and restarted every container
//! on the node; it now hashes only the name and image. We hash an explicit,
//! **versioned** list of fields and record the version beside the hash
//! ([`crate::labels::CONTAINER_HASH_VERSION`]). A container is compared with
//! the field list of the version it was created with, so a new version
//! never restarts containers created under an old one.
//!
//! Version 1 covers the fields whose change means a different process:
//! name, image, command, args, working dir, env, ports, volume mounts,
//! security context, stdin and tty. (Resources are left out, so an in-place
//! resize never looks like a new container.)

use k8s_openapi::api::core::v1::Container;
use serde::Serialize;

/// The version new containers are hashed with.
pub const HASH_VERSION: u32 = 1;

pub use kubelet_container::ContainerHash;

#[derive(Serialize)]
struct FieldsV1<'a> {
    name: &'a str,
    image: Option<&'a str>,
    command: Option<&'a Vec<String>>,
    args: Option<&'a Vec<String>>,
    working_dir: Option<&'a str>,
    env: Option<&'a Vec<k8s_openapi::api::core::v1::EnvVar>>,
    ports: Option<&'a Vec<k8s_openapi::api::core::v1::ContainerPort>>,
    volume_mounts: Option<&'a Vec<k8s_openapi::api::core::v1::VolumeMount>>,
    security_context: Option<&'a k8s_openapi::api::core::v1::SecurityContext>,
    stdin: Option<bool>,
    tty: Option<bool>,
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn hash_v1(c: &Container) -> u64 {
    let fields = FieldsV1 {
        name: &c.name,
        image: c.image.as_deref(),
        command: c.command.as_ref(),
        args: c.args.as_ref(),
        working_dir: c.working_dir.as_deref(),
        env: c.env.as_ref(),
        ports: c.ports.as_ref(),
        volume_mounts: c.volume_mounts.as_ref(),
        security_context: c.security_context.as_ref(),
        stdin: c.stdin,
        tty: c.tty,
    };
    // Serializing plain data cannot fail; an empty hash would only make a
    // container look changed, never unchanged.
    fnv1a64(&serde_json::to_vec(&fields).unwrap_or_default())
}

/// The hashing of a container spec, on [`ContainerHash`] (the type lives in
/// `kubelet-container`; how a spec is hashed is this crate's business).
pub trait HashContainer: Sized {
    /// The hash of `container` under the current version.
    fn of(container: &Container) -> Self;
    /// The hash of `container` under `version`'s field list, if known.
    fn of_version(container: &Container, version: u32) -> Option<Self>;
    /// Whether a container created with this hash still matches `spec`,
    /// judged by the field list it was hashed with. A hash of an unknown
    /// version matches: restarting what we cannot judge would repeat
    /// upstream's upgrade restarts.
    fn matches(&self, spec: &Container) -> bool;
}

impl HashContainer for ContainerHash {
    fn of(container: &Container) -> Self {
        Self {
            version: HASH_VERSION,
            value: hash_v1(container),
        }
    }

    fn of_version(container: &Container, version: u32) -> Option<Self> {
        match version {
            1 => Some(Self {
                version,
                value: hash_v1(container),
            }),
            _ => None,
        }
    }

    fn matches(&self, spec: &Container) -> bool {
        match Self::of_version(spec, self.version) {
            Some(now) => now.value == self.value,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        Container {
            name: "app".into(),
            image: Some("busybox".into()),
            command: Some(vec!["sleep".into(), "1".into()]),
            ..Default::default()
        }
    }

    #[test]
    fn spec_changes_change_the_hash_and_resources_do_not() {
        let base = ContainerHash::of(&container());
        assert!(base.matches(&container()));
        let mut c = container();
        c.image = Some("busybox:2".into());
        assert!(!base.matches(&c));
        let mut c = container();
        c.args = Some(vec!["x".into()]);
        assert!(!base.matches(&c));
        let mut c = container();
        c.resources = Some(Default::default());
        assert!(base.matches(&c), "resources are not part of the hash");
    }

    #[test]
    fn unknown_versions_never_force_a_restart() {
        let foreign = ContainerHash {
            version: 0,
            value: 42,
        };
        assert!(foreign.matches(&container()));
        let hex = ContainerHash::of(&container()).hex();
        assert_eq!(
            ContainerHash::parse(1, &hex),
            Some(ContainerHash::of(&container()))
        );
    }

    #[test]
    fn the_hash_is_stable() {
        // Pinned: a change here restarts containers on upgrade. Bump
        // HASH_VERSION and add a new field list instead.
        assert_eq!(ContainerHash::of(&container()).hex(), GOLDEN);
    }

    const GOLDEN: &str = "a202187158b045f6";
}
