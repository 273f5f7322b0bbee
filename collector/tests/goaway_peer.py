# HTTP/2 peers on Python's h2 library (prior knowledge, cleartext) for a server that goes away
# with requests open (collector/tests/http2_tables.rs): the client sends N requests at once on
# one connection; the server answers the first ANSWER of them, then sends GOAWAY with the last
# of those as its last stream id (RFC 9113 §6.8: the others were not processed) and closes.
#
#   serve PORT N ANSWER   prints "ready" once it listens
#   call PORT N           prints "answered A refused R" (refused: above the GOAWAY's last id)
import socket, sys, time
import h2.events

from h2_peer_util import connection, serve_forever


def serve_one(sock, n, answer):
    conn = connection(client_side=False)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    streams = []
    while len(streams) < n:
        data = sock.recv(65536)
        if not data:
            return
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                streams.append(ev.stream_id)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    streams.sort()
    for sid in streams[:answer]:
        conn.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")])
        conn.send_data(sid, b"ok", end_stream=True)
    # With debug data (the kernel sends the daemon the frame's first 8 bytes only).
    conn.close_connection(last_stream_id=streams[answer - 1], additional_data=b"goaway-debug-data " * 20)
    sock.sendall(conn.data_to_send())
    time.sleep(0.5)


def call(port, n):
    s = socket.create_connection(("127.0.0.1", port))
    conn = connection(client_side=True)
    conn.initiate_connection()
    sids = []
    for i in range(n):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(
            sid, [(":method", "GET"), (":path", f"/{i}"), (":scheme", "http"), (":authority", "goaway.test")],
            end_stream=True,
        )
        sids.append(sid)
    s.sendall(conn.data_to_send())
    ended, last = set(), None
    while last is None or any(sid <= last and sid not in ended for sid in sids):
        data = s.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.StreamEnded):
                ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                last = ev.last_stream_id
        out = conn.data_to_send()
        if out:
            s.sendall(out)
    s.close()
    print("answered", len(ended), "refused", sum(1 for sid in sids if last is not None and sid > last))


if sys.argv[1] == "serve":
    serve_forever(int(sys.argv[2]), serve_one, int(sys.argv[3]), int(sys.argv[4]))
else:
    call(int(sys.argv[2]), int(sys.argv[3]))
