"""Frozen-encoder vectors of a sampling window, in memory or on disk in partitions.

Selection reads them by row number: `take(rows)` for a shortlist or a sample, `blocks(rows)` to stream a
neighbour search over the whole window. A window sampled in partitions keeps its vectors in one `.npy` file a
partition (`PartitionedVectors`), so no more than one block of them is in memory at a time; a test or a
benchmark hands an array (`as_vectors`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

BLOCK_ROWS = 4096  # rows a streamed neighbour search holds at once (6 MiB of 384-dim float32)


class Vectors(Protocol):
    dim: int

    def __len__(self) -> int: ...
    def take(self, rows: np.ndarray) -> np.ndarray: ...


class InMemory:
    """An (n, dim) array as `Vectors`."""

    def __init__(self, array: np.ndarray):
        self.array = np.asarray(array)
        self.dim = self.array.shape[1] if self.array.ndim == 2 else 0

    def __len__(self) -> int:
        return len(self.array)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.array[np.asarray(rows, dtype=int)]


class PartitionedVectors:
    """Vectors written one partition at a time (`append`), read back by row number across the partitions. Each
    read maps the files it needs and lets them go: what stays resident is the rows asked for."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self.starts: list[int] = [0]
        self.dim = 0

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=np.float32)
        if len(array) and self.dim and array.shape[1] != self.dim:
            raise ValueError(f"vectors of {array.shape[1]} dimensions after {self.dim}")
        path = self.folder / f"vectors-{len(self.files):05d}.npy"
        np.save(path, array)
        self.files.append(path)
        self.starts.append(self.starts[-1] + len(array))
        self.dim = self.dim or (array.shape[1] if array.ndim == 2 and len(array) else 0)

    def __len__(self) -> int:
        return self.starts[-1]

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=int)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        if not len(rows):
            return out
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for p in np.unique(part):
            mine = np.flatnonzero(part == p)
            mapped = np.load(self.files[p], mmap_mode="r")
            out[mine] = mapped[rows[mine] - self.starts[p]]
            del mapped
        return out


class Subset:
    """Rows `rows` of `base`, renumbered 0..len(rows)-1."""

    def __init__(self, base: Vectors, rows: np.ndarray):
        self.base, self.rows, self.dim = base, np.asarray(rows, dtype=int), base.dim

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.base.take(self.rows[np.asarray(rows, dtype=int)])


def as_vectors(x: Vectors | np.ndarray) -> Vectors:
    return InMemory(x) if isinstance(x, np.ndarray) else x


def subset(x: Vectors | np.ndarray, rows: np.ndarray) -> Vectors:
    """Rows of `x`: a copy for an array (as indexing always did), a view for vectors on disk."""
    if isinstance(x, np.ndarray | InMemory):
        return InMemory(as_vectors(x).take(rows))
    return Subset(x, rows)


def everything(x: Vectors) -> np.ndarray:
    return x.take(np.arange(len(x)))


def blocks(x: Vectors, size: int = BLOCK_ROWS) -> Iterator[np.ndarray]:
    """All rows of `x` in order, `size` at a time."""
    for start in range(0, len(x), size):
        yield x.take(np.arange(start, min(start + size, len(x))))
