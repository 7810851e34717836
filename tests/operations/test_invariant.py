"""The invariant's comparison of expected and written input lines (operations.collect)."""

from __future__ import annotations

import numpy as np
import pytest

from batch_pipeline.operations.collect import _compare_lines


def lines(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@pytest.mark.parametrize(
    ("expected", "actual", "missing", "duplicates", "unexpected"),
    [
        (lines(1, 2, 3), lines(3, 1, 2), [], [], []),
        (lines(1, 2, 3), lines(1, 3), [2], [], []),
        (lines(1, 2, 3), lines(1, 2, 2, 3, 3, 3), [], [2, 3], []),
        (lines(1, 2, 3), lines(1, 2, 3, 7, 7, 0, -4), [], [7], [-4, 0, 7]),
        (lines(2, 5), lines(1, 2, 3, 4, 5), [], [], [1, 3, 4]),
        (lines(), lines(1, 1), [], [1], [1]),
        (lines(1, 2), lines(), [1, 2], [], []),
    ],
)
def test_lines_missing_repeated_and_unexpected(expected, actual, missing, duplicates, unexpected):
    found = _compare_lines(expected, actual)
    assert [part.tolist() for part in found] == [missing, duplicates, unexpected]


def test_agrees_with_set_operations_on_random_lines() -> None:
    rng = np.random.default_rng(18)
    for _ in range(500):
        expected = np.sort(rng.choice(np.arange(1, 60), size=rng.integers(0, 40), replace=False))
        actual = rng.integers(-3, 70, size=rng.integers(0, 60))
        values, counts = np.unique(actual, return_counts=True)
        want = (np.setdiff1d(expected, values), values[counts > 1], np.setdiff1d(values, expected))
        for got, wanted in zip(_compare_lines(expected, actual), want, strict=True):
            assert got.tolist() == wanted.tolist()
