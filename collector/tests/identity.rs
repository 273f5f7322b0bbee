//! Service identity: series are named after the process, not the thread that created the
//! socket (threads of a pool often share a name, or rename themselves one by one).
mod common;

use std::process::{Command, Stdio};

use common::{
    CgroupTree, Collector, FAST, Metrics, in_cgroup,
    process::{KillOnDrop, free_port, run_ok, wait_port},
};

/// Eight threads that rename themselves (prctl PR_SET_NAME "worker-1" … "worker-8") and each
/// listen on the port (SO_REUSEPORT) and answer keep-alive requests.
const SERVER: &str = r#"
import ctypes, socket, sys, threading
libc = ctypes.CDLL(None)
port = int(sys.argv[1])
def handle(c):
    buf = b""
    while True:
        d = c.recv(65536)
        if not d:
            return
        buf += d
        while b"\r\n\r\n" in buf:
            _, buf = buf.split(b"\r\n\r\n", 1)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
def serve(i):
    libc.prctl(15, b"worker-%d" % i, 0, 0, 0)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
for i in range(1, 9):
    threading.Thread(target=serve, args=(i,), daemon=True).start()
threading.Event().wait()
"#;

/// Eight threads renamed "client-1" … "client-8", each making `n` requests on a connection of
/// its own, then the process exits.
const CLIENT: &str = r#"
import ctypes, http.client, sys, threading
libc = ctypes.CDLL(None)
port, n = int(sys.argv[1]), int(sys.argv[2])
def run(i):
    libc.prctl(15, b"client-%d" % i, 0, 0, 0)
    c = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(n):
        c.request("GET", "/")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"ok"
    c.close()
ts = [threading.Thread(target=run, args=(i,)) for i in range(1, 9)]
for t in ts: t.start()
for t in ts: t.join()
"#;

/// service_name → requests, of one side's series for `port`.
fn by_service(m: &Metrics, side: &str, port: u16) -> Vec<(String, f64)> {
    let p = port.to_string();
    let mut out: Vec<(String, f64)> = Vec::new();
    for s in m.find(&format!("http_{side}_request_duration_seconds_count"), &[("server_port", &p)]) {
        let name = s.labels["service_name"].clone();
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 += s.value,
            None => out.push((name, s.value)),
        }
    }
    out
}

#[test]
fn renamed_threads_are_one_series_named_after_their_process() {
    let c = Collector::start(FAST);
    let port = free_port();
    let _server = KillOnDrop(Command::new("python3").args(["-c", SERVER, &port.to_string()]).spawn().unwrap());
    wait_port(port);
    let st = Command::new("python3").args(["-c", CLIENT, &port.to_string(), "5"]).status().unwrap();
    assert!(st.success());
    // The client process has exited: its series keep the name it had.
    let m = c.scrape();
    // wait_port's probe connection carries no request; the client made 40.
    assert_eq!(by_service(&m, "server", port), vec![("python3".to_owned(), 40.0)]);
    assert_eq!(by_service(&m, "client", port), vec![("python3".to_owned(), 40.0)]);
}

#[test]
fn a_short_lived_client_and_the_collector_itself_are_named_after_their_executables() {
    let c = Collector::start(FAST);
    let port = free_port();
    let _server = KillOnDrop(Command::new("python3").args(["-c", SERVER, &port.to_string()]).spawn().unwrap());
    wait_port(port);
    for _ in 0..3 {
        let st = Command::new("curl").args(["-s", "-o", "/dev/null", &format!("http://127.0.0.1:{port}/")]).status();
        assert!(st.unwrap().success());
    }
    let m = c.scrape();
    assert_eq!(by_service(&m, "client", port), vec![("curl".to_owned(), 3.0)]);
    // The collector's own endpoint (a tokio server: its threads are all "tokio-rt-worker"),
    // scraped once more so the first scrape's exchange is complete.
    let own: u16 = c.addr.rsplit(':').next().unwrap().parse().unwrap();
    let m = c.scrape();
    let served = by_service(&m, "server", own);
    assert!(!served.is_empty() && served.iter().all(|(n, _)| n == "collector"), "{served:?}");
}

/// A 64-hex container id and a pod uid of this test run.
fn container_id(n: u32) -> String {
    format!("{n:056x}{:08x}", std::process::id())
}
fn pod_uid(n: u32) -> String {
    format!("{:08x}-{n:04x}-4000-8000-{:012x}", std::process::id(), n)
}

/// Pods (both cgroup drivers, kubelet naming, a `/var/log/pods` tree), a Docker compose
/// container (an engine-like container store), a container that matches neither, and
/// processes that declare their service the OpenTelemetry way: every identity label on the HTTP,
/// network and disk series of real processes.
#[test]
fn containers_pods_and_declared_names_label_every_family() {
    let names = tempfile::tempdir().unwrap();
    let (pods, links, docker) =
        (names.path().join("pods"), names.path().join("containers"), names.path().join("docker"));
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut tree = CgroupTree::new("identity");
    // Pod A: Deployment "checkout" (systemd driver), one container "app": the server.
    let (uid_a, cid_a) = (pod_uid(1), container_id(1));
    let pod_a = "checkout-7d4b9c8f6d-x2k9p";
    std::fs::create_dir_all(pods.join(format!("shop_{pod_a}_{uid_a}/app"))).unwrap();
    let procs_a = tree.make(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{cid_a}.scope",
        uid_a.replace('-', "_")
    ));
    // Pod B: StatefulSet "db" (cgroupfs driver), containers "main" and "sidecar"; the client
    // runs in the sidecar, named by its log link.
    let (uid_b, cid_b) = (pod_uid(2), container_id(2));
    for c in ["main", "sidecar"] {
        std::fs::create_dir_all(pods.join(format!("data_db-0_{uid_b}/{c}"))).unwrap();
    }
    std::fs::create_dir_all(&links).unwrap();
    std::fs::write(links.join(format!("db-0_data_sidecar-{cid_b}.log")), "").unwrap();
    let procs_b = tree.make(&format!("kubepods/burstable/pod{uid_b}/{cid_b}"));
    // Pod C: Deployment "orders" whose server declares its name and namespace.
    let (uid_c, cid_c) = (pod_uid(3), container_id(3));
    let pod_c = "orders-6b8d9f7c5d-q2w4z";
    std::fs::create_dir_all(pods.join(format!("shop_{pod_c}_{uid_c}/server"))).unwrap();
    let procs_c = tree.make(&format!("kubepods/besteffort/pod{uid_c}/{cid_c}"));
    // A compose container: a client that also writes to disk.
    let cid_d = container_id(4);
    std::fs::create_dir_all(docker.join(&cid_d)).unwrap();
    std::fs::write(
        docker.join(&cid_d).join("config.v2.json"),
        format!(
            r#"{{"ID":"{cid_d}","Name":"/shop-web-1","Config":{{"Labels":{{"com.docker.compose.project":"shop","com.docker.compose.service":"web"}}}}}}"#
        ),
    )
    .unwrap();
    let procs_d = tree.make(&format!("system.slice/docker-{cid_d}.scope"));
    // A container of a pod with no pod log directory: container id only, counted.
    let cid_u = container_id(5);
    let procs_u = tree.make(&format!("kubepods/besteffort/pod{}/{cid_u}", pod_uid(5)));

    let c = Collector::start(&[
        "--identity.pod-logs-dir",
        pods.to_str().unwrap(),
        "--identity.container-logs-dir",
        links.to_str().unwrap(),
        "--identity.docker-dir",
        docker.to_str().unwrap(),
    ]);
    let www = data.path().display().to_string();
    let serve = |procs: &str, env: &str, port: u16| {
        let script = format!("exec env {env} python3 -m http.server {port} --bind 127.0.0.1 --directory {www}");
        let child = KillOnDrop(in_cgroup(procs, &script).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
        wait_port(port);
        child
    };
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let _s1 = serve(&procs_a, "", p1);
    let _s2 = serve(&procs_c, "OTEL_SERVICE_NAME=payments OTEL_RESOURCE_ATTRIBUTES=service.namespace=store", p2);
    // Another user's process: its environment is readable with CAP_SYS_PTRACE only.
    let _s3 = KillOnDrop(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "env"])
            .args(["OTEL_RESOURCE_ATTRIBUTES=service.name=cart%2Dsvc", "python3", "-m", "http.server"])
            .args([&p3.to_string(), "--bind", "127.0.0.1", "--directory", "/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(p3);
    let curl =
        |port: u16, n: usize| format!("for i in $(seq {n}); do curl -sf -o /dev/null http://127.0.0.1:{port}/; done");
    run_ok(&mut in_cgroup(&procs_b, &curl(p1, 3)));
    run_ok(&mut in_cgroup(
        &procs_d,
        &format!(
            "dd if=/dev/zero of={www}/direct.bin bs=1M count=8 oflag=direct conv=fsync status=none && {}",
            curl(p1, 2)
        ),
    ));
    run_ok(&mut in_cgroup(&procs_u, &curl(p1, 1)));
    run_ok(Command::new("bash").arg("-c").arg(format!("{} && {}", curl(p2, 1), curl(p3, 1))));

    let m = c.scrape();
    let count = "http_server_request_duration_seconds_count";
    let one = |name: &str, want: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        let found = m.find(name, want);
        assert_eq!(found.len(), 1, "one {name}{want:?}: {found:#?}");
        found[0].labels.clone()
    };
    // The server in pod A: named after its Deployment, 6 requests.
    let p = p1.to_string();
    let s = one(count, &[("server_port", &p)]);
    for (k, v) in [
        ("service_name", "checkout"),
        ("service_namespace", "shop"),
        ("k8s_namespace_name", "shop"),
        ("k8s_pod_name", pod_a),
        ("k8s_container_name", "app"),
        ("k8s_owner_name", "checkout"),
    ] {
        assert_eq!(s.get(k).map(String::as_str), Some(v), "{k} of {s:?}");
    }
    assert_eq!(m.get(count, &[("server_port", &p)]), 6.0);
    // Clients of it, one series each.
    let client = "http_client_request_duration_seconds_count";
    let b = one(client, &[("server_port", &p), ("k8s_pod_name", "db-0")]);
    assert_eq!(
        ["service_name", "service_namespace", "k8s_namespace_name", "k8s_container_name", "k8s_owner_name"]
            .map(|k| b.get(k).cloned().unwrap_or_default()),
        ["db", "data", "data", "sidecar", "db"]
    );
    assert_eq!(m.get(client, &[("server_port", &p), ("k8s_pod_name", "db-0")]), 3.0);
    let d = one(client, &[("server_port", &p), ("container_name", "shop-web-1")]);
    assert_eq!((d["service_name"].as_str(), d["service_namespace"].as_str()), ("web", "shop"));
    assert_eq!(m.get(client, &[("server_port", &p), ("container_name", "shop-web-1")]), 2.0);
    let u = one(client, &[("server_port", &p), ("service_name", "curl")]);
    assert!(!u.keys().any(|k| k.starts_with("k8s_") || k == "container_name" || k == "service_namespace"), "{u:?}");
    assert_eq!(m.get("collector_identity_unresolved_containers", &[]), 1.0);
    // Declared names win over the pod's; the pod's labels stay.
    let s = one(count, &[("server_port", &p2.to_string())]);
    assert_eq!(
        ["service_name", "service_namespace", "k8s_owner_name"].map(|k| s.get(k).cloned().unwrap_or_default()),
        ["payments", "store", "orders"]
    );
    let s = one(count, &[("server_port", &p3.to_string())]);
    assert_eq!(s["service_name"], "cart-svc");
    assert!(!s.contains_key("service_namespace") && !s.contains_key("k8s_pod_name"), "{s:?}");
    // Network and disk series of the same cgroups carry the same names.
    let rx = m.get(
        "cgroup_network_packets_total",
        &[
            ("k8s_pod_name", pod_a),
            ("k8s_container_name", "app"),
            ("k8s_owner_name", "checkout"),
            ("direction", "receive"),
        ],
    );
    assert!(rx > 0.0);
    let unnamed = one("cgroup_network_packets_total", &[("container_id", &cid_u), ("direction", "transmit")]);
    assert!(!unnamed.keys().any(|k| k.starts_with("k8s_")), "{unnamed:?}");
    let written: f64 = m
        .find("cgroup_disk_io_bytes_total", &[("container_name", "shop-web-1"), ("operation", "write")])
        .iter()
        .map(|s| s.value)
        .sum();
    assert!(written >= (8 << 20) as f64, "{written}");
}
