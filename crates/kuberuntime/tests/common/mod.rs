//! A CRI runtime for the image GC and log rotation tests: `FakeRuntime` for
//! sandboxes and containers, plus what it lacks — images with sizes and pins,
//! an `ImageFsInfo` with a mountpoint, removal by image ID, and a
//! `ReopenContainerLog` that (like containerd) makes a new live log file.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kubelet_cri_client::api::{
    AuthConfig, Container, ContainerConfig, ContainerFilter, ContainerMetadata, ContainerStats,
    ContainerStatsFilter, ContainerStatusResponse, ExecSyncResponse, FilesystemIdentifier,
    FilesystemUsage, Image, ImageFilter, ImageFsInfoResponse, ImageSpec, LinuxContainerResources,
    PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata, PodSandboxStats,
    PodSandboxStatsFilter, PodSandboxStatusResponse, RuntimeConfigResponse, StatusResponse,
    UInt64Value, VersionResponse,
};
use kubelet_cri_client::{
    Call, ContainerEventStream, Error, FakeRuntime, ImageService, Result, RuntimeService,
};

/// What `ReopenContainerLog` does after the fake accepted the call.
pub type ReopenHook = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
pub struct TestCri {
    pub fake: FakeRuntime,
    /// Images by ID.
    pub images: Mutex<BTreeMap<String, Image>>,
    pub mountpoint: Mutex<Option<String>>,
    pub removed: Mutex<Vec<String>>,
    pub remove_fails: Mutex<HashSet<String>>,
    pub on_reopen: Mutex<Option<ReopenHook>>,
    /// Runs before the fake answers (and maybe fails) ReopenContainerLog.
    pub before_reopen: Mutex<Option<ReopenHook>>,
}

impl TestCri {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds an image of `size` bytes; returns its ID (the one the fake gives
    /// containers that use it as `image_ref`).
    pub async fn add_image(&self, name: &str, size: u64, pinned: bool) -> String {
        self.fake.add_image(name);
        let id = self
            .fake
            .list_images(None)
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.repo_tags.iter().any(|t| t == name))
            .unwrap()
            .id;
        self.images.lock().unwrap().insert(
            id.clone(),
            Image {
                id: id.clone(),
                repo_tags: vec![name.to_owned()],
                size,
                pinned,
                ..Default::default()
            },
        );
        id
    }

    pub fn has_image(&self, id: &str) -> bool {
        self.images.lock().unwrap().contains_key(id)
    }

    pub fn removed(&self) -> Vec<String> {
        self.removed.lock().unwrap().clone()
    }

    /// A ready sandbox; returns its ID and config.
    pub async fn sandbox(&self, name: &str) -> (String, PodSandboxConfig) {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let id = self.fake.run_pod_sandbox(config.clone(), "").await.unwrap();
        (id, config)
    }

    /// A container of `image` in a new sandbox, started when `start`.
    pub async fn container(&self, name: &str, image: &str, log_path: &str, start: bool) -> String {
        let (sb, config) = self.sandbox(name).await;
        let id = self
            .fake
            .create_container(
                &sb,
                ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: name.into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: image.into(),
                        ..Default::default()
                    }),
                    log_path: log_path.into(),
                    ..Default::default()
                },
                config,
            )
            .await
            .unwrap();
        if start {
            self.fake.start_container(&id).await.unwrap();
        }
        id
    }

    pub fn set_reopen_hook(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        *self.on_reopen.lock().unwrap() = Some(Box::new(hook));
    }

    /// On reopen, create the container's live log file at `path` (as
    /// containerd does with O_CREAT).
    pub fn recreate_on_reopen(&self, path: PathBuf) {
        self.set_reopen_hook(move |_| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
        });
    }
}

#[async_trait]
impl RuntimeService for TestCri {
    async fn version(&self) -> Result<VersionResponse> {
        self.fake.version().await
    }
    async fn status(&self, verbose: bool) -> Result<StatusResponse> {
        self.fake.status(verbose).await
    }
    async fn runtime_config(&self) -> Result<RuntimeConfigResponse> {
        self.fake.runtime_config().await
    }
    async fn run_pod_sandbox(&self, config: PodSandboxConfig, handler: &str) -> Result<String> {
        self.fake.run_pod_sandbox(config, handler).await
    }
    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        self.fake.stop_pod_sandbox(id).await
    }
    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.fake.remove_pod_sandbox(id).await
    }
    async fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<PodSandboxStatusResponse> {
        self.fake.pod_sandbox_status(id, verbose).await
    }
    async fn list_pod_sandbox(&self, filter: Option<PodSandboxFilter>) -> Result<Vec<PodSandbox>> {
        self.fake.list_pod_sandbox(filter).await
    }
    async fn create_container(
        &self,
        sandbox: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String> {
        self.fake
            .create_container(sandbox, config, sandbox_config)
            .await
    }
    async fn start_container(&self, id: &str) -> Result<()> {
        self.fake.start_container(id).await
    }
    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<()> {
        self.fake.stop_container(id, timeout).await
    }
    async fn remove_container(&self, id: &str) -> Result<()> {
        self.fake.remove_container(id).await
    }
    async fn list_containers(&self, filter: Option<ContainerFilter>) -> Result<Vec<Container>> {
        self.fake.list_containers(filter).await
    }
    async fn container_status(&self, id: &str, verbose: bool) -> Result<ContainerStatusResponse> {
        self.fake.container_status(id, verbose).await
    }
    async fn update_container_resources(
        &self,
        id: &str,
        linux: LinuxContainerResources,
    ) -> Result<()> {
        self.fake.update_container_resources(id, linux).await
    }
    async fn reopen_container_log(&self, id: &str) -> Result<()> {
        if let Some(hook) = self.before_reopen.lock().unwrap().as_ref() {
            hook(id);
        }
        self.fake.reopen_container_log(id).await?;
        if let Some(hook) = self.on_reopen.lock().unwrap().as_ref() {
            hook(id);
        }
        Ok(())
    }
    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecSyncResponse> {
        self.fake.exec_sync(id, cmd, timeout).await
    }
    async fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        self.fake.container_stats(id).await
    }
    async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>> {
        self.fake.list_container_stats(filter).await
    }
    async fn list_pod_sandbox_stats(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> Result<Vec<PodSandboxStats>> {
        self.fake.list_pod_sandbox_stats(filter).await
    }
    async fn get_container_events(&self) -> Result<ContainerEventStream> {
        self.fake.get_container_events().await
    }
}

#[async_trait]
impl ImageService for TestCri {
    async fn list_images(&self, _filter: Option<ImageFilter>) -> Result<Vec<Image>> {
        Ok(self.images.lock().unwrap().values().cloned().collect())
    }
    async fn image_status(&self, image: ImageSpec, _verbose: bool) -> Result<Option<Image>> {
        Ok(self.images.lock().unwrap().get(&image.image).cloned())
    }
    async fn pull_image(
        &self,
        image: ImageSpec,
        auth: Option<AuthConfig>,
        sandbox: Option<PodSandboxConfig>,
    ) -> Result<String> {
        self.fake.pull_image(image, auth, sandbox).await
    }
    async fn remove_image(&self, image: ImageSpec) -> Result<()> {
        if self.remove_fails.lock().unwrap().contains(&image.image) {
            return Err(Error::Unavailable {
                call: Call::with_id("RemoveImage", image.image),
                message: "injected".into(),
            });
        }
        self.images.lock().unwrap().remove(&image.image);
        self.removed.lock().unwrap().push(image.image);
        Ok(())
    }
    async fn image_fs_info(&self) -> Result<ImageFsInfoResponse> {
        let used: u64 = self.images.lock().unwrap().values().map(|i| i.size).sum();
        let Some(mountpoint) = self.mountpoint.lock().unwrap().clone() else {
            return Ok(ImageFsInfoResponse::default());
        };
        Ok(ImageFsInfoResponse {
            image_filesystems: vec![FilesystemUsage {
                timestamp: 1,
                fs_id: Some(FilesystemIdentifier { mountpoint }),
                used_bytes: Some(UInt64Value { value: used }),
                inodes_used: None,
            }],
            ..Default::default()
        })
    }
}
