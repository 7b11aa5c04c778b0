"""Data and prediction drift of a served model against its training-time reference.

Transport-agnostic: numpy in, dataclasses and JSON out; no scipy at runtime.
"""
