"""A stand-in for a SPIFFE Workload API agent (SPIRE agent), for Latch's tests.

Serves the published workload.proto (`SpiffeWorkloadAPI`, the generated code shipped in the
`spiffe` PyPI package) over gRPC on a Unix socket. Only FetchJWTSVID answers: the JWT-SVID in
SVID_FILE (read at each call, so a test can rotate it), for the audience AUDIENCE. Like SPIRE,
a call without the `workload.spiffe.io: true` metadata header is refused (InvalidArgument), as
is a request for another audience (PermissionDenied). Every call is appended to SVID_FILE.log
as one line `<header> <audiences>` so the test sees what the client sent.

Usage: server.py SOCKET_PATH SVID_FILE AUDIENCE SPIFFE_ID
Prints `ready` on stdout once it listens.
"""

import sys
import time
from concurrent import futures

import grpc
from spiffe._proto import workload_pb2, workload_pb2_grpc


class Agent(workload_pb2_grpc.SpiffeWorkloadAPIServicer):
    def __init__(self, svid_file, audience, spiffe_id):
        self.svid_file = svid_file
        self.audience = audience
        self.spiffe_id = spiffe_id

    def FetchJWTSVID(self, request, context):
        header = dict(context.invocation_metadata()).get("workload.spiffe.io", "")
        with open(self.svid_file + ".log", "a") as log:
            log.write(f"{header or '-'} {','.join(request.audience)}\n")
        if header != "true":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request")
        if self.audience not in request.audience:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "audience not allowed")
        with open(self.svid_file) as f:
            token = f.read().strip()
        return workload_pb2.JWTSVIDResponse(
            svids=[workload_pb2.JWTSVID(spiffe_id=self.spiffe_id, svid=token)]
        )


def main():
    socket_path, svid_file, audience, spiffe_id = sys.argv[1:5]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(
        Agent(svid_file, audience, spiffe_id), server
    )
    server.add_insecure_port(f"unix:{socket_path}")
    server.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    main()
