"""Open Inference Protocol tensor datatypes and their numpy equivalents."""

import numpy as np

from model_server.errors import InvalidInputError

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


def numpy_dtype(datatype: str, field: str) -> np.dtype[np.generic]:
    """The numpy dtype for a protocol datatype, or InvalidInputError naming `field`."""
    try:
        return NUMPY_DTYPES[datatype]
    except KeyError:
        supported = ", ".join(NUMPY_DTYPES)
        raise InvalidInputError(
            f"{field}: datatype {datatype!r} is not supported (supported: {supported})"
        ) from None
