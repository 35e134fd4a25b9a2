//! A real Kubernetes control plane on loopback, and a non-loopback address
//! for a test node: `scripts/testbed/controlplane-start.sh` and
//! `scripts/testbed/node-net.sh`, started from Rust and torn down on drop.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::require::{k8s_binary, require, root, testbed_run};
use crate::scripts_dir;

/// Runs `bash SCRIPT ARGS...` from `scripts/testbed`; `Ok(stdout)` when it
/// succeeds, else the error names the script, its exit status and output.
fn run_script(script: &str, args: &[&str]) -> Result<String, String> {
    let path = scripts_dir().join(script);
    if !path.exists() {
        return Err(format!("{} is missing", path.display()));
    }
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} {} failed ({}):\n{}{}",
            path.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn output_result(what: &str, out: std::io::Result<Output>) -> Result<String, String> {
    let out = out.map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

fn pid_alive(pid: &str) -> bool {
    !pid.is_empty() && Path::new("/proc").join(pid).exists()
}

/// Reads `KEY=VALUE` lines.
fn read_env_file(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

/// A running Kubernetes control plane of its own (etcd, kube-apiserver,
/// kube-controller-manager, kube-scheduler, v1.35.4) on loopback ports,
/// with a node identity for one node; stopped, and its directory removed,
/// on drop.
///
/// The API server runs with `--authorization-mode=Node,RBAC` and the
/// `NodeRestriction` admission plugin: [`ControlPlane::node_kubeconfig`]
/// (user `system:node:<node>`, group `system:nodes`) may create and update
/// its own Node and nothing else's, as a kubelet's credentials in a real
/// cluster. The controller manager runs every default controller (node
/// lifecycle included, default grace periods), so a Node whose kubelet
/// stops posting turns NotReady, pods get their `default` ServiceAccount,
/// and the scheduler binds pods to Ready nodes.
///
/// ```no_run
/// use kubelet_testbed::ControlPlane;
/// let Some(cp) = ControlPlane::start("node-a") else { return };
/// assert_eq!(cp.kubectl(&["get", "--raw", "/readyz"]).unwrap(), "ok");
/// // A kubelet under test talks to cp.server() with cp.node_kubeconfig().
/// println!("{} {}", cp.server(), cp.node_kubeconfig().display());
/// ```
#[derive(Debug)]
pub struct ControlPlane {
    dir: tempfile::TempDir,
    node_name: String,
    env: HashMap<String, String>,
}

impl ControlPlane {
    /// Starts a control plane for the node `node_name`, or returns `None`
    /// (skip) when it cannot run here and this is not CI. Panics under CI:
    /// it is [`require`] on [`ControlPlane::try_start`].
    pub fn start(node_name: &str) -> Option<ControlPlane> {
        require("a Kubernetes control plane", Self::try_start(node_name))
    }

    /// Starts a control plane for the node `node_name` (a DNS subdomain);
    /// the error says why it could not. Takes about 10 s on an idle
    /// machine; needs the binaries of `scripts/testbed/build-controlplane.sh`
    /// but not root.
    pub fn try_start(node_name: &str) -> Result<ControlPlane, String> {
        for name in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubectl",
        ] {
            k8s_binary(name)?;
        }
        sweep_abandoned_control_planes();
        let dir = tempfile::Builder::new()
            .prefix("kubelet-cp-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create the control plane's directory: {e}"))?;
        // Who owns it, so a later run can sweep it if this process is
        // killed before its Drop runs (even during the start); the marker
        // tells controlplane-start.sh that the folder is a control plane's.
        let _ = std::fs::write(dir.path().join(".kubelet-testbed-controlplane"), "");
        let _ = std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string());
        let mut cp = ControlPlane {
            dir,
            node_name: node_name.to_owned(),
            env: HashMap::new(),
        };
        let path = cp.dir.path().to_string_lossy().into_owned();
        // On failure `cp` drops here and runs controlplane-stop.sh.
        run_script("controlplane-start.sh", &[&path, node_name])?;
        cp.env = read_env_file(&cp.dir.path().join("controlplane.env"))?;
        eprintln!(
            "testbed: control plane {} at {} in {}",
            cp.env_value("K8S_VERSION").unwrap_or("?"),
            cp.server(),
            cp.dir().display()
        );
        Ok(cp)
    }

    /// A value of `DIR/controlplane.env` as it was when the control plane
    /// became ready (`APISERVER_PID` changes with
    /// [`ControlPlane::start_apiserver`]: see [`ControlPlane::apiserver_pid`]):
    /// `ETCD_PORT`, `ETCD_PEER_PORT`, `APISERVER_PORT`,
    /// `CONTROLLER_MANAGER_PORT`, `SCHEDULER_PORT`, `*_PID`, `CA_CERT`,
    /// `CA_KEY`, `PKI_DIR`, `LOG_DIR`, `KUBECTL`, `KUBELET`, `BIN_DIR`,
    /// `SERVICE_CLUSTER_IP_RANGE`, ...
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    fn path_of(&self, key: &str, default: &str) -> PathBuf {
        self.env_value(key)
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir.path().join(default))
    }

    /// The control plane's directory (certificates, kubeconfigs, etcd's
    /// data, `logs/`, `controlplane.env`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node name the node credentials are for.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        self.env_value("SERVER").unwrap_or_default()
    }

    /// A kubeconfig of a cluster admin (group `system:masters`), the
    /// certificates embedded.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.path_of("ADMIN_KUBECONFIG", "admin.kubeconfig")
    }

    /// The node's kubeconfig (user `system:node:<node_name>`, group
    /// `system:nodes`; server [`ControlPlane::server`], the CA and client
    /// certificate embedded): what the kubelet under test uses.
    pub fn node_kubeconfig(&self) -> PathBuf {
        self.path_of("NODE_KUBECONFIG", "node.kubeconfig")
    }

    /// The cluster CA's certificate (it also signs kubelet serving
    /// certificates the API server will trust: key at `CA_KEY`).
    pub fn ca_cert(&self) -> PathBuf {
        self.path_of("CA_CERT", "pki/ca.crt")
    }

    /// The directory of the daemons' logs (`etcd.log`,
    /// `kube-apiserver.log`, ...).
    pub fn log_dir(&self) -> PathBuf {
        self.path_of("LOG_DIR", "logs")
    }

    /// A kubelet serving certificate for `ip`, signed by the cluster CA
    /// (what TLS bootstrap would get approved), so the API server, which
    /// verifies kubelets against that CA, can reach the node API: the
    /// certificate and key files, made once per address in the control
    /// plane's directory.
    pub fn kubelet_serving_cert(&self, ip: std::net::IpAddr) -> Result<(PathBuf, PathBuf), String> {
        let dir = self.dir().join("kubelet-serving");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let crt = dir.join(format!("{ip}.crt"));
        let key = dir.join(format!("{ip}.key"));
        if crt.is_file() && key.is_file() {
            return Ok((crt, key));
        }
        let csr = dir.join(format!("{ip}.csr"));
        let ext = dir.join(format!("{ip}.ext"));
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth\nsubjectAltName=IP:{ip}\n"
            ),
        )
        .map_err(|e| format!("{}: {e}", ext.display()))?;
        let run = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("openssl")
                .args(args)
                .stdin(Stdio::null())
                .output();
            output_result("openssl", out).map(|_| ())
        };
        let s = |p: &Path| p.as_os_str().to_owned();
        run(&[
            "genpkey".as_ref(),
            "-algorithm".as_ref(),
            "EC".as_ref(),
            "-pkeyopt".as_ref(),
            "ec_paramgen_curve:P-256".as_ref(),
            "-out".as_ref(),
            &s(&key),
        ])?;
        run(&[
            "req".as_ref(),
            "-new".as_ref(),
            "-key".as_ref(),
            &s(&key),
            "-subj".as_ref(),
            format!("/O=system:nodes/CN=system:node:{}", self.node_name()).as_ref(),
            "-out".as_ref(),
            &s(&csr),
        ])?;
        run(&[
            "x509".as_ref(),
            "-req".as_ref(),
            "-in".as_ref(),
            &s(&csr),
            "-CA".as_ref(),
            &s(&self.ca_cert()),
            "-CAkey".as_ref(),
            &s(&self.path_of("CA_KEY", "pki/ca.key")),
            "-CAcreateserial".as_ref(),
            "-days".as_ref(),
            "2".as_ref(),
            "-sha256".as_ref(),
            "-extfile".as_ref(),
            &s(&ext),
            "-out".as_ref(),
            &s(&crt),
        ])?;
        let _ = std::fs::remove_file(&csr);
        let _ = std::fs::remove_file(&ext);
        Ok((crt, key))
    }

    /// The 1.35 kubectl the control plane was built with.
    pub fn kubectl_path(&self) -> PathBuf {
        self.path_of("KUBECTL", "kubectl")
    }

    /// Runs the 1.35 kubectl with the admin kubeconfig: `Ok(stdout)` when
    /// it exits 0, else `Err` with its exit status and stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_as(&self.admin_kubeconfig(), args)
    }

    /// Runs the 1.35 kubectl with `kubeconfig` (say
    /// [`ControlPlane::node_kubeconfig`], to act as the node).
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
        let out = Command::new(self.kubectl_path())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output();
        output_result(&format!("kubectl {}", args.join(" ")), out)
    }

    /// Kills the API server (SIGTERM, SIGKILL after 3 s) and waits until
    /// it is gone; etcd, the controller manager and the scheduler keep
    /// running. A no-op when it is already stopped.
    pub fn stop_apiserver(&self) -> Result<(), String> {
        let dir = self.dir.path().to_string_lossy().into_owned();
        run_script("controlplane-apiserver.sh", &[&dir, "stop"]).map(drop)
    }

    /// Starts the API server again with the same flags, port and etcd (so
    /// every object survives) and waits for `/readyz`. A no-op when it runs.
    pub fn start_apiserver(&self) -> Result<(), String> {
        let dir = self.dir.path().to_string_lossy().into_owned();
        run_script("controlplane-apiserver.sh", &[&dir, "start"]).map(drop)
    }

    /// The pid of the running API server, `None` while it is stopped.
    pub fn apiserver_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("kube-apiserver.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .filter(|p: &u32| pid_alive(&p.to_string()))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        if let Err(e) = run_script("controlplane-stop.sh", &[&dir]) {
            eprintln!("testbed: {e}");
        }
    }
}

/// Stops the control planes of test processes that died without dropping
/// their [`ControlPlane`].
fn sweep_abandoned_control_planes() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_cp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("kubelet-cp-"));
        let owner = std::fs::read_to_string(dir.join("owner.pid")).unwrap_or_default();
        if is_cp && !owner.trim().is_empty() && !pid_alive(owner.trim()) {
            eprintln!(
                "testbed: sweeping control plane {} (owner {} is gone)",
                dir.display(),
                owner.trim()
            );
            let _ = run_script("controlplane-stop.sh", &[&dir.to_string_lossy()]);
        }
    }
}

/// A non-loopback IPv4 address for a test node (upstream's kubelet refuses
/// a loopback node IP): the root end of a veth pair whose peer lives in a
/// network namespace of its own, made by `scripts/testbed/node-net.sh up`.
/// Dropping it runs `node-net.sh down`, which deletes both ends and the
/// namespace. Needs root.
///
/// ```no_run
/// use kubelet_testbed::NodeNet;
/// let Some(net) = NodeNet::up("node-a") else { return };
/// println!("--node-ip={}", net.address());
/// ```
#[derive(Debug)]
pub struct NodeNet {
    name: String,
    address: Ipv4Addr,
}

impl NodeNet {
    /// Brings up the node network `name`, or returns `None` (skip) when it
    /// cannot here and this is not CI; panics under CI ([`require`] on
    /// [`NodeNet::try_up`]).
    pub fn up(name: &str) -> Option<NodeNet> {
        require(
            "a node network (veth pair and network namespace)",
            Self::try_up(name),
        )
    }

    /// Brings up the node network `name` (lower-case letters, digits, `-`,
    /// `.`; unique among the node networks that are up): a veth pair
    /// `ktn<hash>`/`ktp<hash>`, the peer in network namespace
    /// `kubelet-testbed-<name>`, the root end's address `172.30.N.1/30`.
    pub fn try_up(name: &str) -> Result<NodeNet, String> {
        root()?;
        sweep_abandoned_node_nets();
        let stdout = run_script("node-net.sh", &["up", name])?;
        let address = stdout
            .lines()
            .last()
            .and_then(|l| l.trim().parse::<Ipv4Addr>().ok())
            .ok_or_else(|| format!("node-net.sh up {name} printed no address: {stdout:?}"));
        let address = match address {
            Ok(a) => a,
            Err(e) => {
                let _ = run_script("node-net.sh", &["down", name]);
                return Err(e);
            }
        };
        // Who owns it, for sweep_abandoned_node_nets.
        let claim = testbed_run()
            .join("node-nets")
            .join(address.octets()[2].to_string());
        let _ = std::fs::write(claim.join("owner.pid"), std::process::id().to_string());
        Ok(NodeNet {
            name: name.to_owned(),
            address,
        })
    }

    /// The node's address, `172.30.N.1`: give it to the kubelet as its node
    /// IP; it is a local address of this machine.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The name given to [`NodeNet::try_up`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace holding the veth peer (`172.30.N.2`).
    pub fn netns(&self) -> String {
        format!("kubelet-testbed-{}", self.name)
    }
}

impl Drop for NodeNet {
    fn drop(&mut self) {
        if let Err(e) = run_script("node-net.sh", &["down", &self.name]) {
            eprintln!("testbed: {e}");
        }
    }
}

/// Tears down the node networks of test processes that died without
/// dropping their [`NodeNet`].
fn sweep_abandoned_node_nets() {
    let Ok(entries) = std::fs::read_dir(testbed_run().join("node-nets")) else {
        return;
    };
    for entry in entries.flatten() {
        let owner_pid = std::fs::read_to_string(entry.path().join("owner.pid")).unwrap_or_default();
        let name = std::fs::read_to_string(entry.path().join("owner")).unwrap_or_default();
        if !owner_pid.trim().is_empty() && !pid_alive(owner_pid.trim()) && !name.trim().is_empty() {
            eprintln!(
                "testbed: sweeping node network {} (owner {} is gone)",
                name.trim(),
                owner_pid.trim()
            );
            let _ = run_script("node-net.sh", &["down", name.trim()]);
        }
    }
}
