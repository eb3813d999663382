"""gRPC test client for e2e/grpc.rs: one unary call and one server-streaming call, printed as JSON.

client.py TARGET AUTHORITY [CA_PEM_FILE]
With CA_PEM_FILE the channel is TLS (SNI/authority AUTHORITY), else h2c.
"""
import json
import sys

import grpc


def main():
    target, authority = sys.argv[1], sys.argv[2]
    opts = [("grpc.default_authority", authority)]
    if len(sys.argv) > 3:
        with open(sys.argv[3], "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        opts.append(("grpc.ssl_target_name_override", authority))
        channel = grpc.secure_channel(target, creds, options=opts)
    else:
        channel = grpc.insecure_channel(target, options=opts)
    out = {}
    try:
        unary = channel.unary_unary("/alb.test.Echo/Unary")
        out["unary"] = unary(b"hello", timeout=10).decode()
        count = channel.unary_stream("/alb.test.Echo/Count")
        out["stream"] = [m.decode() for m in count(b"5", timeout=10)]
        out["code"] = "OK"
    except grpc.RpcError as e:
        out["code"] = e.code().name
        out["details"] = e.details()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
