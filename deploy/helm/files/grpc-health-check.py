"""helm test: every trainer of the job answers grpc.health.v1 Check("") with SERVING.

Run as `python -c <this file> TIMEOUT_S ADDRESS...` inside the a2c image (grpcio and
grpcio-health-checking are dependencies of a2c, so nothing is downloaded). Exit 0 when all
trainers serve within TIMEOUT_S seconds, 1 otherwise.

With TLS on the trainers (job.tls.secretName) the pod mounts the job's Secret and sets A2C_TLS_CA (the CA
that signed the trainers' certificate) and, for mutual TLS, A2C_TLS_CERT / A2C_TLS_KEY (the client pair):
the same variables `a2c player` reads.
"""

import os
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def _read(var: str) -> bytes | None:
    path = os.environ.get(var, "")
    if not path:
        return None
    with open(path, "rb") as fh:
        return fh.read()


def open_channel(address: str) -> grpc.Channel:
    ca, cert, key = _read("A2C_TLS_CA"), _read("A2C_TLS_CERT"), _read("A2C_TLS_KEY")
    if ca is None and cert is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(ca, key, cert))


def check(address: str) -> str:
    with open_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: list[str]) -> int:
    deadline = time.monotonic() + float(argv[0])
    for address in argv[1:]:
        while True:
            status = check(address)
            print(f"{address}: {status}", flush=True)
            if status == "SERVING":
                break
            if time.monotonic() > deadline:
                print(f"{address} is not SERVING after {argv[0]} s", flush=True)
                return 1
            time.sleep(2)
    return 0


sys.exit(main(sys.argv[1:]))
