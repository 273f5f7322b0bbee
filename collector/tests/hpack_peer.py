# HTTP/2 peers with small HPACK tables, on Python's h2 library (prior knowledge, cleartext),
# for collector/tests/http2.rs: each side announces a small SETTINGS_HEADER_TABLE_SIZE, so the
# other's encoder sends a dynamic table size update and evicts entries all the time, and the
# client raises its size halfway (another update). Statuses outside HPACK's static table
# (201, 299, 418, 503) are indexed; a repeated one is sent as a reference to the dynamic
# table (12 of the 96 responses), as long as it was not evicted.
#
#   serve PORT TABLE      prints "ready" once it listens; answers GET /STATUS/I with STATUS, three
#                         headers that change with I, and I % 3 body bytes
#   call PORT TABLE N     N requests one after the other on one connection, statuses in turn;
#                         prints "STATUS COUNT" per status, sorted
import socket, sys
import h2.events, h2.settings

from h2_peer_util import connection, serve_forever

STATUSES = [418, 418, 503, 503, 201, 299, 200, 404]


def table_setting(table):
    return {h2.settings.SettingCodes.HEADER_TABLE_SIZE: table}


def respond(conn, stream, path):
    _, status, i = path.split("/")
    i = int(i)
    conn.send_headers(
        stream,
        [(":status", status), ("x-resp", f"r{i % 5}" * 10), ("content-type", "text/plain"), ("x-seq", str(i))],
    )
    conn.send_data(stream, b"x" * (i % 3), end_stream=True)


def serve_one(sock, table):
    conn = connection(client_side=False)
    conn.initiate_connection()
    conn.update_settings(table_setting(table))
    sock.sendall(conn.data_to_send())
    while True:
        data = sock.recv(65536)
        if not data:
            return
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                respond(conn, ev.stream_id, dict(ev.headers)[":path"])
        out = conn.data_to_send()
        if out:
            sock.sendall(out)


def call(port, table, n):
    s = socket.create_connection(("127.0.0.1", port))
    conn = connection(client_side=True)
    conn.initiate_connection()
    conn.update_settings(table_setting(table))
    s.sendall(conn.data_to_send())
    counts = {}
    for i in range(n):
        if i == n // 2:
            # A larger table from now on: the server's encoder sends another size update.
            conn.update_settings(table_setting(4 * table))
        status = STATUSES[i % len(STATUSES)]
        sid = conn.get_next_available_stream_id()
        headers = [
            (":method", "GET"),
            (":path", f"/{status}/{i}"),
            (":scheme", "http"),
            (":authority", "hpack.test"),
            ("x-req", f"q{i % 7}" * 8),
        ]
        conn.send_headers(sid, headers, end_stream=True)
        s.sendall(conn.data_to_send())
        got, done = None, False
        while not done:
            data = s.recv(65536)
            if not data:
                sys.exit("connection closed")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    got = dict(ev.headers)[":status"]
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
            out = conn.data_to_send()
            if out:
                s.sendall(out)
        counts[got] = counts.get(got, 0) + 1
    conn.close_connection()
    s.sendall(conn.data_to_send())
    s.close()
    for st in sorted(counts):
        print(st, counts[st])


if sys.argv[1] == "serve":
    serve_forever(int(sys.argv[2]), serve_one, int(sys.argv[3]))
else:
    call(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
