"""How rollouts and weights travel: gRPC codec, servicers, server and client (no torch here)."""
