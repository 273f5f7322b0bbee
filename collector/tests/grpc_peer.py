# The gRPC peer of the tests (collector/tests/http2.rs, deploy_live.rs): a grpcio server
# (`serve PORT`) with generic handlers for `test.Echo`, whose requests say what to do
# ("delay_ms status count"), and a client (`call PORT KIND DELAY_MS STATUS SIZE REPS [TIMEOUT_S]`)
# that makes the calls (with a deadline when given) and prints each one's status and duration
# by its own clock; `session PORT`
# keeps one channel open and calls on it as told (a connection open before the collector
# starts); `for PORT SECS` is a load for cargo xtask bench.
import sys, time, grpc
from concurrent import futures

def parse(b):
    d, s, n = b.decode().split()
    return int(d), s, int(n)

def finish(ctx, status):
    if status != "OK":
        ctx.abort(getattr(grpc.StatusCode, status), "as asked")

def unary(req, ctx):
    d, s, n = parse(req)
    time.sleep(d / 1000)
    finish(ctx, s)
    return b"r" * n

def server_stream(req, ctx):
    d, s, n = parse(req)
    for i in range(n):
        time.sleep(d / 1000)
        yield b"m" * 100
    finish(ctx, s)

def client_stream(reqs, ctx):
    last = None
    k = 0
    for r in reqs:
        last = parse(r)
        k += 1
    time.sleep(last[0] / 1000)
    finish(ctx, last[1])
    return str(k).encode()

def bidi(reqs, ctx):
    for r in reqs:
        d, s, n = parse(r)
        time.sleep(d / 1000)
        yield b"e" * n

ident = lambda b: b
if sys.argv[1] == "serve":
    h = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, ident, ident),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident),
    })
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    s.add_generic_rpc_handlers((h,))
    s.add_insecure_port("127.0.0.1:" + sys.argv[2])
    s.start()
    print("ready", flush=True)
    s.wait_for_termination()
elif sys.argv[1] == "session":
    # One channel kept open (`session PORT`): each line read, "N", makes N unary calls (OK,
    # nothing to wait for) one after the other on it, then prints "done N".
    ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[2])
    call = ch.unary_unary("/test.Echo/Unary", ident, ident)
    for line in sys.stdin:
        n = int(line)
        for _ in range(n):
            call(b"0 OK 64")
        print("done", n, flush=True)
elif sys.argv[1] == "for":
    # A load (cargo xtask bench): unary calls with nothing to wait for, one after the other,
    # for SECS seconds; prints how many.
    ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[2])
    call = ch.unary_unary("/test.Echo/Unary", ident, ident)
    end, n = time.monotonic() + float(sys.argv[3]), 0
    while time.monotonic() < end:
        call(b"0 OK 64")
        n += 1
    print(n, flush=True)
else:
    ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[2])
    kind, d, status, n, reps = sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
    timeout = float(sys.argv[8]) if len(sys.argv) > 8 else None
    req = f"{d} {status} {n}".encode()
    for _ in range(reps):
        t = time.monotonic()
        try:
            if kind == "Unary":
                ch.unary_unary("/test.Echo/Unary", ident, ident)(req, timeout=timeout)
            elif kind == "ServerStream":
                for _ in ch.unary_stream("/test.Echo/ServerStream", ident, ident)(req, timeout=timeout):
                    pass
            elif kind == "ClientStream":
                ch.stream_unary("/test.Echo/ClientStream", ident, ident)(iter([req] * 5), timeout=timeout)
            else:
                for _ in ch.stream_stream("/test.Echo/Bidi", ident, ident)(iter([req] * 5), timeout=timeout):
                    pass
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
        print(code, time.monotonic() - t, flush=True)
