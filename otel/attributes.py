"""Attribute names both services put on their metrics and spans, spelled once."""

MODEL_NAME = "model.name"
MODEL_VERSION = "model.version"
STATUS = "status"
RESULT = "result"
"""Outcome of one feedback item (`ok`, `unknown_id`, ...)."""
UNKNOWN_MODEL = "_unknown"
"""Stands for any model name the service does not know, so clients cannot grow cardinality."""
