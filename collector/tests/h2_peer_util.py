# What the Python HTTP/2 test peers (goaway_peer.py, hpack_peer.py, h2c_upgrade_server.py) share:
# an h2 connection with text headers, and a server loop with a thread per connection. Imported
# from the peer's own folder (Python puts a script's folder first on its path).
import socket, threading
import h2.config, h2.connection


def connection(client_side):
    """An h2 connection for one side, its header names and values as text."""
    return h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8")
    )


def _run_and_close(handle, sock, args, quiet):
    try:
        handle(sock, *args)
    except quiet:
        pass
    finally:
        sock.close()


def serve_forever(port, handle, *args, quiet=()):
    """Listens on 127.0.0.1:`port`, prints "ready" once it does, and runs `handle(sock, *args)` for
    each connection in a thread of its own, then closes the socket. Exceptions of the types in
    `quiet` end a connection without a trace (a client that resets it, say)."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(64)
    print("ready", flush=True)
    while True:
        s, _ = ls.accept()
        # The socket goes to the thread as an argument: a closure would read `s` when it runs,
        # by then the next connection's once the loop has accepted it.
        threading.Thread(target=_run_and_close, args=(handle, s, args, quiet), daemon=True).start()
