"""A tree of plain data and arrays as one compact object, and back (the monitor's checkpoints).

Dicts, lists, numbers, strings, booleans and None go into a JSON document;
numpy arrays of numbers and Arrow string arrays go beside it as ``.npy``
entries of one uncompressed zip (``numpy.savez``), read back without pickle::

    data = pack({"count": 3, "times": np.array([1.0, 2.0]), "ids": pa.array(["a", "b"])})
    tree = unpack(data)
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import pyarrow as pa

DOCUMENT = "document"


def pack(tree: Any) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    document = _encode(tree, arrays)
    arrays[DOCUMENT] = np.frombuffer(json.dumps(document).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack(data: bytes) -> Any:
    """The tree ``pack`` was given; ValueError when ``data`` is not such an object."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        document = json.loads(arrays.pop(DOCUMENT).tobytes())
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"not a packed snapshot: {error}") from None
    return _decode(document, arrays)


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if "$array" in value or "$strings" in value:
            raise ValueError(f"a snapshot key may not be $array or $strings: {sorted(value)}")
        return {str(key): _encode(item, arrays) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(item, arrays) for item in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"only numeric arrays go into a snapshot, not {value.dtype}")
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {"$array": name}
    if isinstance(value, pa.Array | pa.ChunkedArray):
        strings = value.combine_chunks() if isinstance(value, pa.ChunkedArray) else value
        strings = strings.cast(pa.large_string())
        if strings.null_count:
            raise ValueError("a string array with nulls cannot go into a snapshot")
        offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset : strings.offset + len(strings) + 1]
        data = strings.buffers()[2]
        raw = np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]] if data is not None else np.empty(0, np.uint8)
        name = f"a{len(arrays)}"
        arrays[name + "o"], arrays[name + "d"] = offsets - offsets[0], raw.copy()
        return {"$strings": name}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{type(value).__name__} cannot go into a snapshot")


def _decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if "$array" in value:
            return arrays[value["$array"]]
        if "$strings" in value:
            name = value["$strings"]
            offsets, data = arrays[name + "o"], arrays[name + "d"]
            strings = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets.astype(np.int64)),
                                                       pa.py_buffer(data.tobytes()))
            return strings.cast(pa.string())
        return {key: _decode(item, arrays) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item, arrays) for item in value]
    return value
