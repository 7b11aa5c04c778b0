"""The gRPC transport: Open Inference Protocol servicer, health and reflection."""
