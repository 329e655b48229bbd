"""A safetensors file's tensors as host numpy arrays, memory-mapped, bfloat16 included.

safetensors' own readers do not fit a loader that places weights over a device mesh: its numpy
backend refuses bfloat16 ("data type 'bfloat16' not understood"), and its flax backend puts every
tensor on the default device first (on a GPU host: device 0). The format is a little-endian u64
header length, a JSON header {name: {dtype, shape, data_offsets}} and the data: each tensor here is
a zero-copy view of one memory map, read from the page cache when used.

    file = HostSafetensors(path)
    file.shapes["model.norm.weight"]   # (576,)
    file.tensor("model.norm.weight")   # numpy [576] float32, a view of the file
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


class HostSafetensors:
    """The tensors of one safetensors file; ValueError for a damaged header."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        if self._map.size < 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", self._map[:8].tobytes())
        if not 2 <= length <= self._map.size - 8:
            raise ValueError(f"header length {length} does not fit a {self._map.size}-byte file")
        header = json.loads(self._map[8:8 + length].tobytes())
        header.pop("__metadata__", None)
        self._start = 8 + length
        self._entries = header
        self.shapes = {name: tuple(entry["shape"]) for name, entry in header.items()}
        past = [name for name, entry in header.items() if entry["data_offsets"][1] > self._map.size - self._start]
        if past:
            raise ValueError(f"tensor {past[0]} lies past the end of the file (truncated?)")

    def tensor(self, name: str) -> np.ndarray:
        entry = self._entries[name]
        if entry["dtype"] not in DTYPES:
            raise ValueError(f"tensor {name}: dtype {entry['dtype']} is not one of {', '.join(DTYPES)}")
        begin, end = entry["data_offsets"]
        data = self._map[self._start + begin:self._start + end]
        return data.view(DTYPES[entry["dtype"]]).reshape(self.shapes[name])
