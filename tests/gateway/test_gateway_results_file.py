"""iter_result_items reads a saved results answer item by item, whatever the chunking, formatting
or size, and reports a broken document in one line."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_pipeline.gateway import (
    BatchResultsResponse,
    ResultsFileError,
    iter_result_items,
    results_file,
)

EXAMPLES = Path(__file__).parent / "data" / "bifrost_notes_examples.jsonl"


def notes_results_document() -> dict[str, Any]:
    for line in EXAMPLES.read_text().splitlines():
        example = json.loads(line)
        if example["model"] == "BatchResultsResponse":
            return example["json"]
    raise AssertionError("no results example")


def items_of(path: Path) -> list[dict[str, Any]]:
    return [item.model_dump(mode="json", exclude_unset=True) for item in iter_result_items(path)]


def test_reads_the_notes_example(tmp_path: Path) -> None:
    document = notes_results_document()
    path = tmp_path / "results.json"
    path.write_text(json.dumps(document))
    expected = BatchResultsResponse.model_validate(document).results
    assert list(iter_result_items(path)) == expected


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
result_item = st.fixed_dictionaries(
    {"custom_id": st.text(max_size=12)},
    optional={
        "response": st.fixed_dictionaries(
            {"status_code": st.integers(100, 599)},
            optional={"body": st.dictionaries(st.text(max_size=6), json_value, max_size=3)},
        ),
        "error": st.fixed_dictionaries({"code": st.text(max_size=8), "message": st.text()}),
        "novel": json_value,
    },
)


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(result_item, max_size=8),
    before=st.dictionaries(st.sampled_from(["batch_id", "object", "x"]), json_value, max_size=2),
    after=st.dictionaries(
        st.sampled_from(["has_more", "extra_fields", "y"]), json_value, max_size=2
    ),
    indent=st.sampled_from([None, 0, 2]),
    chunk=st.integers(min_value=1, max_value=50),
)
def test_any_chunking_and_formatting_yields_the_same_items(
    tmp_path_factory: pytest.TempPathFactory,
    items: list[dict[str, Any]],
    before: dict[str, Any],
    after: dict[str, Any],
    indent: int | None,
    chunk: int,
) -> None:
    document = {**before, "results": items, **after}
    path = tmp_path_factory.mktemp("doc") / "results.json"
    path.write_text(json.dumps(document, indent=indent, ensure_ascii=False), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(results_file, "_CHUNK_CHARS", chunk)
        assert items_of(path) == items


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", []),
        ('{"results": []}', []),
        ('{"results": null, "batch_id": "b"}', []),
        ('\ufeff{"batch_id": "b", "results": [{"custom_id": "a"}]}', [{"custom_id": "a"}]),
    ],
)
def test_edge_documents(tmp_path: Path, text: str, expected: list[dict[str, Any]]) -> None:
    path = tmp_path / "results.json"
    path.write_text(text, encoding="utf-8")
    assert items_of(path) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected '{', found 'end of file'"),
        ("[1, 2]", "expected '{', found '['"),
        ('{"results": [{"custom_id": "a"}', "expected ',', found 'end of file'"),
        ('{"results": [{"custom_id": "a"} {"custom_id": "b"}]}', "expected ','"),
        ('{"results": [{"custom_id": "a"}, 5]}', "results[1] is not a result item"),
        ('{"results": [{"custom_id": tru', "invalid JSON"),
        ('{"batch_id" "b"}', "expected ':'"),
    ],
)
def test_broken_documents_fail_in_one_line(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(text)
    with pytest.raises(ResultsFileError) as info:
        items_of(path)
    message = str(info.value)
    assert message.startswith(f"{path}: at character ")
    assert reason in message
    assert "\n" not in message


def test_memory_stays_bounded_by_one_item(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    body = {"choices": [{"message": {"content": "z" * 2000}}]}
    count = 8000
    with path.open("w") as out:
        out.write('{"batch_id":"b","results":[')
        for i in range(count):
            item = {"custom_id": f"r{i}", "response": {"status_code": 200, "body": body}}
            out.write(("," if i else "") + json.dumps(item))
        out.write('],"extra_fields":{"request_type":"batch_results"}}')
    assert path.stat().st_size > 16 * 1024 * 1024
    seen = 0
    tracemalloc.start()
    try:
        for item in iter_result_items(path):
            seen += item.custom_id is not None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == count
    assert peak < 4 * 1024 * 1024, peak
