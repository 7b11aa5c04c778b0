"""A gRPC inference server for PyTorch models speaking the Open Inference Protocol."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("inferwatch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
