//! The other TLS peers of the HTTPS tests: Node.js's server and clients, a ctypes harness that
//! calls any libssl (OpenSSL 1.1, BoringSSL) directly, and the Go crypto/tls server and client.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{common::process::run_ok, tls_util::PYTHON};

/// A Node.js HTTPS server: same paths as the Python one. Prints `ready` once it listens.
/// `PORT CERT KEY [plain]`: with `plain`, the same handler over cleartext HTTP.
pub const NODE_SERVER: &str = r#"
const https = require('https');
const fs = require('fs');
const [port, cert, key, plain] = process.argv.slice(2);
const big = Buffer.alloc(10 << 20, 120);
const handle = (req, res) => {
  const send = (status, body) => {
    res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
    res.end(body);
  };
  if (req.url === '/ok') send(200, Buffer.from('ok'));
  else if (req.url === '/delay') setTimeout(() => send(200, Buffer.from('delayed')), 10);
  else if (req.url === '/big') send(200, big);
  else send(404, Buffer.from('not found'));
};
const server = plain === 'plain'
  ? require('http').createServer(handle)
  : https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, handle);
server.keepAliveTimeout = 30000;
server.listen(Number(port), '127.0.0.1', () => console.log('ready'));
"#;

/// A Node.js HTTPS client, certificate unverified: `PORT PATH...`, one request after the other
/// through an agent with keepAlive (one socket); prints `status body-length reused` each.
pub const NODE_CLIENT: &str = r#"
const https = require('https');
const [port, ...paths] = process.argv.slice(2);
const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
function get(path) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: Number(port), path, agent, rejectUnauthorized: false }, (res) => {
      let n = 0;
      res.on('data', (chunk) => { n += chunk.length; });
      res.on('end', () => resolve(`${res.statusCode} ${n} ${req.reusedSocket ? 1 : 0}`));
    });
    req.on('error', reject);
    req.setTimeout(20000, () => req.destroy(new Error('timeout')));
  });
}
(async () => {
  for (const p of paths) console.log(await get(p));
  agent.destroy();
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// A Node.js TLS client timing requests without the https module (its own work around the
/// reads and writes, which no collector can see, took milliseconds a request here):
/// `PORT PATH N [plain]`, N requests on one `tls` socket (with `plain`, a cleartext one), each
/// timed from just before it is written to the data event that completes its response; prints
/// `status body-length seconds` each.
pub const NODE_TIMED: &str = r#"
const [port, path, n, plain] = process.argv.slice(2);
const opts = { host: '127.0.0.1', port: Number(port), rejectUnauthorized: false };
const connect = (ready) => plain === 'plain' ? require('net').connect(opts, ready) : require('tls').connect(opts, ready);
const sock = connect(async () => {
  sock.setNoDelay(true);
  let buf = Buffer.alloc(0);
  let wake = null;
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); if (wake) wake(); });
  const request = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  for (let i = 0; i < Number(n); i++) {
    const t = process.hrtime.bigint();
    sock.write(request);
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      const m = end >= 0 ? /content-length:\s*(\d+)/i.exec(buf.subarray(0, end).toString()) : null;
      if (m && buf.length >= end + 4 + Number(m[1])) {
        const secs = Number(process.hrtime.bigint() - t) / 1e9;
        console.log(`${buf.subarray(9, 12).toString()} ${m[1]} ${secs}`);
        buf = buf.subarray(end + 4 + Number(m[1]));
        break;
      }
      await new Promise((r) => { wake = r; });
      wake = null;
    }
  }
  sock.end();
});
sock.on('error', (e) => { console.error(e); process.exit(1); });
"#;

/// An HTTPS server and clients that call a given libssl through ctypes: `SSL_read`,
/// `SSL_write`, `SSL_accept`/`SSL_connect`, `SSL_shutdown`, `SSL_free`, the calls C programs
/// (nginx, curl, Ruby, PHP) make, with no other TLS code in the process (Python's own `ssl`
/// module, linked to the system's libssl.so.3, is not imported). The same API in OpenSSL 1.1,
/// 3 and BoringSSL. `server LIB PORT CERT KEY`: the paths and replies of `PY_SERVER`
/// (headers and body in two writes, the 10 MiB body in 64 KiB writes), keep-alive, a thread
/// per connection; prints `ready`. `client LIB PORT keepalive|new PATH...`: every request on
/// one connection, or a new one per request; prints `status body-length seconds` per request
/// (from just before the request is written to just after the last body byte is read).
pub const CTYPES_TLS: &str = r#"
import ctypes, socket, sys, threading, time
from ctypes import c_char_p, c_int, c_void_p
mode, lib = sys.argv[1], ctypes.CDLL(sys.argv[2])
for name, res, args in [
    ("TLS_server_method", c_void_p, []), ("TLS_client_method", c_void_p, []),
    ("SSL_CTX_new", c_void_p, [c_void_p]),
    ("SSL_CTX_use_certificate_chain_file", c_int, [c_void_p, c_char_p]),
    ("SSL_CTX_use_PrivateKey_file", c_int, [c_void_p, c_char_p, c_int]),
    ("SSL_new", c_void_p, [c_void_p]), ("SSL_set_fd", c_int, [c_void_p, c_int]),
    ("SSL_accept", c_int, [c_void_p]), ("SSL_connect", c_int, [c_void_p]),
    ("SSL_read", c_int, [c_void_p, c_void_p, c_int]), ("SSL_write", c_int, [c_void_p, c_char_p, c_int]),
    ("SSL_shutdown", c_int, [c_void_p]), ("SSL_free", None, [c_void_p]),
]:
    f = getattr(lib, name)
    f.restype, f.argtypes = res, args
class Conn:
    def __init__(self, ctx, sock, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.ssl, self.buf = sock, lib.SSL_new(ctx), b""
        self.rbuf = ctypes.create_string_buffer(1 << 16)
        assert lib.SSL_set_fd(self.ssl, sock.fileno()) == 1
        assert (lib.SSL_accept if server else lib.SSL_connect)(self.ssl) == 1, "handshake"
    def fill(self):
        n = lib.SSL_read(self.ssl, self.rbuf, len(self.rbuf))
        if n > 0:
            self.buf += self.rbuf.raw[:n]
        return n > 0
    def head(self):
        while b"\r\n\r\n" not in self.buf:
            if not self.fill():
                return None
        h, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return h.decode()
    def body(self, n):
        while len(self.buf) < n:
            assert self.fill(), "closed in a body"
        b, self.buf = self.buf[:n], self.buf[n:]
        return b
    def send(self, data):
        for off in range(0, len(data), 1 << 16):
            chunk = data[off:off + (1 << 16)]
            assert lib.SSL_write(self.ssl, chunk, len(chunk)) == len(chunk), "SSL_write"
    def close(self):
        lib.SSL_shutdown(self.ssl)
        lib.SSL_free(self.ssl)
        self.sock.close()
if mode == "server":
    port, cert, key = int(sys.argv[3]), sys.argv[4], sys.argv[5]
    ctx = lib.SSL_CTX_new(lib.TLS_server_method())
    assert lib.SSL_CTX_use_certificate_chain_file(ctx, cert.encode()) == 1, "certificate"
    assert lib.SSL_CTX_use_PrivateKey_file(ctx, key.encode(), 1) == 1, "key"
    BIG = b"x" * (10 << 20)
    def serve(sock):
        c = Conn(ctx, sock, True)
        while True:
            h = c.head()
            if h is None:
                break
            path = h.split(" ")[1]
            if path == "/ok":
                status, body = 200, b"ok"
            elif path == "/delay":
                time.sleep(0.01)
                status, body = 200, b"delayed"
            elif path == "/big":
                status, body = 200, BIG
            else:
                status, body = 404, b"not found"
            reason = "OK" if status == 200 else "Not Found"
            c.send(f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            c.send(body)
        c.close()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(64)
    print("ready", flush=True)
    while True:
        s, _ = ls.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()
else:
    port, how, paths = int(sys.argv[3]), sys.argv[4], sys.argv[5:]
    ctx = lib.SSL_CTX_new(lib.TLS_client_method())
    def connect():
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        s.settimeout(None)  # a blocking descriptor, as libssl's blocking calls expect
        return Conn(ctx, s, False)
    c = connect() if how == "keepalive" else None
    for path in paths:
        if how == "new":
            c = connect()
        t = time.perf_counter()
        c.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        h = c.head()
        assert h, "closed before a response"
        length = int(next(l.split(":")[1] for l in h.lower().split("\r\n") if l.startswith("content-length:")))
        n = len(c.body(length))
        print(int(h.split(" ")[1]), n, time.perf_counter() - t, flush=True)
        if how == "new":
            c.close()
    if how == "keepalive":
        c.close()
"#;

/// Python running the ctypes harness `harness` with the libssl `lib` (and the libcrypto beside
/// it) found first.
pub fn ctypes_python(harness: &Path, lib: &Path) -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.env("LD_LIBRARY_PATH", lib.parent().unwrap()).arg(harness);
    cmd
}

/// The libraries `cargo xtask test` extracted from Debian's packages (target/tls-libs, or
/// `$TLS_LIBS`): directory `name` holds `file` and the libcrypto it needs.
pub fn fetched_lib(name: &str, file: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    let base = std::env::var_os("TLS_LIBS").map(|d| repo.join(d)).unwrap_or_else(|| repo.join("target/tls-libs"));
    let lib = base.join(name).join(file);
    assert!(lib.exists(), "{} is missing: `cargo xtask test` fetches it (Debian packages)", lib.display());
    lib
}

/// The Go crypto/tls server and client of `tests/tls_go` (Debian's golang-go), built once into
/// cargo's test directory. Where that is read-only (the kernel matrix's guests see the checkout
/// read-only) and the binary is missing or older than its source, it is built in `tmp`.
pub fn go_binary(tmp: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls_go");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_src = ["main.go", "go.mod"].iter().filter_map(|f| modified(&src.join(f))).max().unwrap();
    let cached = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls_go");
    if modified(&cached).is_some_and(|t| t >= newest_src) {
        return cached;
    }
    let out = if std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).is_ok()
        && std::fs::metadata(env!("CARGO_TARGET_TMPDIR")).is_ok_and(|m| !m.permissions().readonly())
        && std::fs::File::create(cached.with_extension("probe")).is_ok()
    {
        let _ = std::fs::remove_file(cached.with_extension("probe"));
        cached
    } else {
        tmp.join("tls_go")
    };
    run_ok(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&src)
            .env("GOFLAGS", "-mod=mod")
            .env("GOCACHE", std::env::temp_dir().join("collector-tests-gocache"))
            .env("GOPATH", std::env::temp_dir().join("collector-tests-gopath")),
    );
    out
}
