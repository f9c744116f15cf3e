"""helm test: every trainer of the job answers grpc.health.v1 Check("") with SERVING.

Run as `python -c <this file> TIMEOUT_S ADDRESS...` inside the a2c image (grpcio and
grpcio-health-checking are dependencies of a2c, so nothing is downloaded). Exit 0 when all
trainers serve within TIMEOUT_S seconds, 1 otherwise.
"""

import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def check(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
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
