"""Open Inference Protocol tensor datatypes and their numpy equivalents."""

import numpy as np

from model_server.errors import InvalidInputError, echo

#: Protocol datatype name -> numpy dtype (little-endian, as the protocol's raw format is).
NUMPY_DTYPES: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def unsupported_datatype(field: str, datatype: str) -> InvalidInputError:
    """The error for a datatype that is not a protocol datatype, naming `field`."""
    supported = ", ".join(NUMPY_DTYPES)
    return InvalidInputError(
        f"{field}: datatype {echo(datatype)} is not supported (supported: {supported})"
    )
