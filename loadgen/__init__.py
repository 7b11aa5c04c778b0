"""`inferwatch-load`: a traffic generator for InferWatch (and any Open Inference Protocol server).

Closed loop (a number of concurrent clients) or open loop (requests per second), over gRPC or
REST, for a duration or a count, with fault injection: drifted inputs, malformed requests,
server-side latency and errors (the model server's `fault_injection` setting), and bursts.
"""
