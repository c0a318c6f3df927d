"""Every chunk of a group read once: which chunks are unreadable, which are missing.

``scan_group`` reads each array of a group chunk by chunk, by the array's chunk grid
(a few chunks in flight at a time, so a store's latency is paid once and memory stays
bounded), and catches a decode error per chunk: a truncated or corrupt chunk is found by
its index in the grid, and so by the rows along ``mid`` it covers. One listing of the
group's keys says which chunks the store lacks. Whether a lacking chunk is damage or an
unwritten one (it reads as the fill value, and Zarr never writes a chunk that holds only
the fill value) is for the caller to judge, from the ``done`` flags (``store.check``).

Arrays named in ``keep`` come back whole, their unreadable chunks read as the fill value,
for the checks that follow (the ``mid`` coordinate, flags, lineage).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import numpy as np
from zarr.core.sync import sync

from ml4ml import dims
from ml4ml.store.backend import zarr_store
from ml4ml.store.layout import quiet

__all__ = ["ArrayScan", "scan_group", "read_rows"]

_IN_FLIGHT = 16  # chunk reads at a time
# bytes of the rows ``read_rows`` holds at a time (at least one row)
_BLOCK_BYTES = 64 * 2**20


@dataclass
class ArrayScan:
    """What reading every chunk of one array found.

    damaged : {chunk index: why it cannot be read} (truncated, corrupt).
    missing : chunk indices whose key the store lacks (they read as the fill value).
    keys : {chunk index: store key} of the damaged and missing chunks.
    values : the whole array (unreadable chunks as the fill value), if asked for.
    """

    name: str
    dims: tuple
    shape: tuple
    chunks: tuple
    fill: object
    damaged: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)
    keys: dict = field(default_factory=dict)
    values: np.ndarray | None = None

    @property
    def along_mid(self) -> bool:
        return dims.MID in self.dims

    def rows(self, index) -> range:
        """Rows along ``mid`` that chunk ``index`` covers (every row if there is no mid)."""
        if not self.along_mid:
            return range(0)
        axis = self.dims.index(dims.MID)
        start = index[axis] * self.chunks[axis]
        return range(start, min(start + self.chunks[axis], self.shape[axis]))

    def bad_rows(self) -> set:
        """Rows of the damaged and missing chunks."""
        return {r for index in list(self.damaged) + self.missing for r in self.rows(index)}


def _grid(shape, chunks):
    return itertools.product(*(range(-(-s // c) if c else 0) for s, c in zip(shape, chunks)))


def _selection(index, shape, chunks):
    return tuple(slice(i * c, min((i + 1) * c, s)) for i, s, c in zip(index, shape, chunks))


def _why(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 100 else text[:97] + "..."


def scan_group(path, group: str, *, keep=()) -> dict[str, ArrayScan]:
    """{array name: ArrayScan} for every array of the committed ``group``."""
    from ml4ml.store.groups import zarr_group

    with quiet():
        node = zarr_group(path, group, mode="r", committed=True)
        arrays = dict(node.arrays())
    store = zarr_store(path, read_only=True)

    async def listed():
        return {key async for key in store.list_prefix(f"{group}/")}

    with quiet():
        present = sync(listed())
        return sync(_scan(group, arrays, present, set(keep)))


async def _scan(group, arrays, present, keep) -> dict[str, ArrayScan]:
    gate = asyncio.Semaphore(_IN_FLIGHT)
    scans = {}
    reads = []
    for name, array in arrays.items():
        meta = array.metadata
        chunks = tuple(meta.chunks)
        scan = ArrayScan(name, tuple(meta.dimension_names or ()), tuple(array.shape), chunks,
                         meta.fill_value)
        if name in keep:
            dtype = object if array.dtype.kind in "OT" else array.dtype
            fill = scan.fill
            scan.values = np.full(scan.shape, "" if dtype is object else fill, dtype=dtype)
        scans[name] = scan
        for index in _grid(scan.shape, chunks):
            key = f"{group}/{name}/{meta.encode_chunk_key(index)}"
            if key not in present:
                scan.missing.append(index)
                scan.keys[index] = key
                continue
            reads.append(_read(gate, array._async_array, scan, index, key))
    await asyncio.gather(*reads)
    return scans


async def _read(gate, array, scan: ArrayScan, index, key) -> None:
    selection = _selection(index, scan.shape, scan.chunks)
    async with gate:
        try:
            data = await array.getitem(selection)
        except Exception as exc:  # noqa: BLE001 - any decode error: that chunk is damaged
            scan.damaged[index] = _why(exc)
            scan.keys[index] = key
            return
    if scan.values is not None:
        data = np.asarray(data)
        scan.values[selection] = data.astype(object) if data.dtype.kind == "T" else data


def read_rows(arrays: dict, rows, *, block_bytes: int = _BLOCK_BYTES):
    """Yield (row, {name: that row's values}) for each of ``rows`` (ascending), reading
    the zarr ``arrays`` (along ``mid`` first) a block of consecutive rows at a time.

    One read per block and array (its chunks fetched concurrently) rather than one per row
    and array: a store of thousands of models is read in seconds. A block holds only rows
    asked for (a row left out, e.g. one whose chunk is unreadable, is never read) and at
    most ``block_bytes`` of them, so memory stays bounded whatever a model's rows hold.
    """
    rows = [int(r) for r in rows]
    row_bytes = sum(int(np.prod(a.shape[1:], dtype=np.int64)) * max(a.dtype.itemsize, 8)
                    for a in arrays.values())
    per_block = max(1, block_bytes // max(row_bytes, 1))
    k = 0
    while k < len(rows):
        first = rows[k]
        stop = k
        while stop < len(rows) and rows[stop] == first + (stop - k) \
                and stop - k < per_block:
            stop += 1
        last = rows[stop - 1]
        with quiet():
            block = {name: array[first:last + 1] for name, array in arrays.items()}
        for row in rows[k:stop]:
            yield row, {name: values[row - first] for name, values in block.items()}
        k = stop
