//! The control plane test bed itself: it starts, answers, restricts the
//! node's credentials to its own Node, survives an API server restart, and
//! leaves no process behind; the node network comes up and goes away.

use std::path::Path;

use kubelet_testbed::{ControlPlane, NodeNet};

/// Pids of processes whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

fn node_manifest(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("node-{name}.json"));
    let json = format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}"}}}}"#);
    std::fs::write(&path, json).expect("write node manifest");
    path.to_string_lossy().into_owned()
}

#[test]
fn control_plane_serves_restricts_the_node_restarts_and_leaves_nothing_behind() {
    let node = format!("tb-node-{}", std::process::id());
    let Some(cp) = ControlPlane::start(&node) else {
        return;
    };
    let dir = cp.dir().to_string_lossy().into_owned();
    assert!(
        cp.server().starts_with("https://127.0.0.1:"),
        "{}",
        cp.server()
    );

    let readyz = cp.kubectl(&["get", "--raw", "/readyz"]).expect("readyz");
    assert_eq!(readyz.trim(), "ok");
    let version = cp.kubectl(&["version", "-o", "json"]).expect("version");
    assert!(version.contains("\"gitVersion\": \"v1.35.4\""), "{version}");
    // The controller manager made the default ServiceAccount.
    cp.kubectl(&["get", "serviceaccount", "default", "-n", "default"])
        .expect("default service account");

    // NodeRestriction: the node may create its own Node, not another.
    let own = node_manifest(cp.dir(), &node);
    cp.kubectl_as(&cp.node_kubeconfig(), &["create", "-f", &own])
        .expect("the node creates its own Node");
    let other = node_manifest(cp.dir(), "someone-else");
    let err = cp
        .kubectl_as(&cp.node_kubeconfig(), &["create", "-f", &other])
        .expect_err("the node must not create another node's Node");
    assert!(err.contains("forbidden"), "{err}");
    let nodes = cp
        .kubectl(&["get", "nodes", "-o", "name"])
        .expect("list nodes");
    assert_eq!(nodes.trim(), format!("node/{node}"));

    // Kill the API server and bring it back: the Node is still there.
    let first = cp.apiserver_pid().expect("apiserver pid");
    cp.stop_apiserver().expect("stop the API server");
    assert_eq!(cp.apiserver_pid(), None);
    assert!(
        cp.kubectl(&["get", "--raw", "/readyz", "--request-timeout=3s"])
            .is_err()
    );
    cp.start_apiserver().expect("start the API server");
    assert_ne!(cp.apiserver_pid(), Some(first));
    assert!(cp.apiserver_pid().is_some());
    let nodes = cp
        .kubectl(&["get", "nodes", "-o", "name"])
        .expect("list nodes after the restart");
    assert_eq!(nodes.trim(), format!("node/{node}"));

    assert!(!processes_mentioning(&dir).is_empty(), "daemons run");
    drop(cp);
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "left running: {left:#?}");
    assert!(!Path::new(&dir).exists(), "{dir} is removed");
}

#[test]
fn node_net_gives_a_non_loopback_address_and_removes_it() {
    let name = format!("tb-net-{}", std::process::id());
    let Some(net) = NodeNet::up(&name) else {
        return;
    };
    let address = net.address();
    assert!(!address.is_loopback());
    assert_eq!(address.octets()[..2], [172, 30]);
    assert_eq!(address.octets()[3], 1);
    // A local address: something can listen on it.
    let listener = std::net::TcpListener::bind((address, 0)).expect("bind the node address");
    let port = listener.local_addr().expect("addr").port();
    std::net::TcpStream::connect((address, port)).expect("connect to the node address");
    let netns = net.netns();
    let namespaces = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(String::from_utf8_lossy(&namespaces.stdout).contains(&netns));

    drop(net);
    let addrs = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("ip addr");
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert!(!addrs.contains(&format!(" {address}/")), "{addrs}");
    let namespaces = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(!String::from_utf8_lossy(&namespaces.stdout).contains(&netns));
}
