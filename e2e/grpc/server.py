"""A gRPC test backend for e2e/grpc.rs (grpcio, no generated code: raw bytes messages).

Service `alb.test.Echo`:
  Unary(bytes) -> b"<name>:" + request
  Count(b"N")  -> N messages b"<name>:0" .. b"<name>:N-1" (server streaming)
server.py NAME [CERT_PEM_FILE KEY_PEM_FILE]
With a certificate and key the port speaks TLS (a grpcs backend), else h2c.
Prints `port <N>` on stdout once serving on 127.0.0.1. Stops on SIGTERM.
"""
import signal
import sys
import threading
from concurrent import futures

import grpc


def main():
    name = sys.argv[1].encode()

    def unary(request, context):
        return name + b":" + request

    def count(request, context):
        for i in range(int(request.decode())):
            yield name + b":" + str(i).encode()

    handler = grpc.method_handlers_generic_handler(
        "alb.test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Count": grpc.unary_stream_rpc_method_handler(count),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    if len(sys.argv) > 3:
        with open(sys.argv[2], "rb") as c, open(sys.argv[3], "rb") as k:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"port {port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(0)


if __name__ == "__main__":
    main()
