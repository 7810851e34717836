"""Arrow compute helpers the columnar conversion shares: nested fields, lists, mapped values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def constant(value: str | None, count: int) -> pa.Array:
    """A string column of `count` rows all holding `value` (null when it is None)."""
    if value is None:
        return pa.nulls(count, pa.string())
    return pa.array([value] * count, pa.string())


def field(array: pa.Array, *path: str) -> pa.Array:
    """A nested struct field; null wherever the struct or any parent on the path is null (or the
    field is not in the type: a shape reads what the decoder was told to keep)."""
    for name in path:
        if not pa.types.is_struct(array.type) or array.type.get_field_index(name) < 0:
            return pa.nulls(len(array))
        array = pc.struct_field(array, name)
    return array


def is_set(array: pa.Array) -> np.ndarray:
    """Where a value is present (not null), as a numpy mask."""
    return np.asarray(array.is_valid())


def first(lists: pa.Array) -> pa.Array:
    """Element 0 of each list; null for a null or empty list."""
    if pa.types.is_null(lists.type):
        return lists
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    offsets = lists.offsets.to_numpy()[:-1]
    indices = pa.array(offsets, mask=lengths == 0, type=pa.int64())
    return lists.values.take(indices)


def joined_texts(parts: pa.Array, rows: np.ndarray, count: int, keep: pa.Array) -> pa.Array:
    """Per row, the concatenation of `parts` (strings, each belonging to row `rows[i]`, in row
    order) where `keep` is true; null for a row with none kept."""
    mask = np.asarray(pc.fill_null(keep, False))
    texts = parts.filter(pa.array(mask))
    owners = rows[mask]
    counts = np.bincount(owners, minlength=count)
    offsets = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    grouped = pa.ListArray.from_arrays(pa.array(offsets), texts)
    joined = pc.binary_join(grouped, "")
    return pc.if_else(pa.array(counts > 0), joined, pa.scalar(None, pa.string()))


def flattened(lists: pa.Array, rows: np.ndarray | None = None) -> tuple[pa.Array, np.ndarray]:
    """The values of each list in order, and the row (of `rows`, else of `lists`) each one
    belongs to."""
    if pa.types.is_null(lists.type):
        return pa.nulls(0), np.empty(0, dtype=np.int64)
    parents = pc.list_parent_indices(lists).to_numpy()
    values = pc.list_flatten(lists)
    return values, (parents if rows is None else rows[parents])


def mapped(values: pa.Array, function: Callable[[Any], Any], type_: pa.DataType) -> pa.Array:
    """`function` applied to each distinct value (a handful: finish reasons, error codes), then
    spread back over the rows; nulls are passed to it too."""
    encoded = pc.dictionary_encode(values)
    dictionary = encoded.dictionary.to_pylist()
    results = pa.array([function(v) for v in dictionary], type=type_)
    indices = encoded.indices
    out = results.take(indices)
    if indices.null_count:
        return pc.if_else(indices.is_valid(), out, pa.scalar(function(None), type_))
    return out


def strings_in(values: pa.Array, options: tuple[str, ...]) -> pa.Array:
    """Where a string equals one of `options` (false for null)."""
    return pc.fill_null(pc.is_in(values, value_set=pa.array(options, pa.string())), False)
