"""REST front door to the model servers (Open Inference Protocol REST v2)."""
