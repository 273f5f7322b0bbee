//! Service identity: series are named after the process, not the thread that created the
//! socket (threads of a pool often share a name, or rename themselves one by one).
mod common;

use std::process::Command;

use common::{
    Collector, FAST, Metrics,
    process::{KillOnDrop, free_port, wait_port},
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
