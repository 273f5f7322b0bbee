# An HTTP/1.1 server that switches to HTTP/2 when a request asks for it (`Upgrade: h2c`,
# RFC 7540 §3.2), with the h2 library: the 101, the server's SETTINGS, then the request's
# response on stream 1, and later requests as HTTP/2 streams. For collector/tests/http2.rs:
# `PORT`; prints `ready` once it listens. /missing is 404, /big 20 KiB, else 25 bytes.
import sys
import h2.events, h2.exceptions

from h2_peer_util import connection, serve_forever

def body(path):
    if path == "/missing":
        return "404", b"not found"
    if path == "/big":
        return "200", b"x" * (20 << 10)
    return "200", b"hello from h2c upgrade\n\n"

def respond(conn, stream, path):
    status, b = body(path)
    conn.send_headers(stream, [(":status", status), ("content-length", str(len(b)))])
    step = conn.max_outbound_frame_size
    for i in range(0, len(b), step):
        conn.send_data(stream, b[i : i + step], end_stream=i + step >= len(b))

def serve(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            return
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    path = lines[0].split()[1]
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    if headers.get("upgrade", "").lower() != "h2c":
        status, b = body(path)
        sock.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: {len(b)}\r\nConnection: close\r\n\r\n".encode() + b)
        return
    conn = connection(client_side=False)
    conn.initiate_upgrade_connection(headers["http2-settings"])
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    respond(conn, 1, path)
    sock.sendall(conn.data_to_send())
    data = rest
    while True:
        if data:
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    respond(conn, ev.stream_id, dict(ev.headers)[":path"])
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    sock.sendall(conn.data_to_send())
                    return
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        data = sock.recv(65536)
        if not data:
            return

# A client that closes or resets its connection ends it, quietly.
serve_forever(int(sys.argv[1]), serve, quiet=(OSError, h2.exceptions.ProtocolError))
