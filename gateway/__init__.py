"""REST front door to the model servers: the Open Inference Protocol over HTTP/JSON.

`python -m gateway` serves OIP REST v2 and forwards every call over gRPC to one of the
configured model servers, continuing the caller's W3C trace across the hop.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("inferwatch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
