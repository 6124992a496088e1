"""Fine-tuning file rules that need no HTTP: what the validator accepts (tool calls, `weight: 0`) and keeps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from inhouse.services.fine_tuning_data import DataInvalid, Dataset, parse_dataset

TOOLS = [{"type": "function", "function": {"name": "weather", "description": "The weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}


def tool_example(i: int) -> dict[str, Any]:
    return {"messages": [
        {"role": "developer", "content": "Use the tools."},
        {"role": "user", "content": f"Weather in Paris? ({i})"},
        {"role": "assistant", "tool_calls": [CALL]},  # a call and no content
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny.", "weight": 0},
        {"role": "user", "content": "And tomorrow?"},
        {"role": "assistant", "content": "Sunny too.", "weight": 1},
    ], "tools": TOOLS}


def parse(examples: list[dict[str, Any]], method: str = "supervised") -> Dataset:
    async def chunks() -> AsyncIterator[bytes]:
        yield "\n".join(json.dumps(e) for e in examples).encode()

    return asyncio.run(parse_dataset(chunks(), param="training_file", method=method, max_line=1 << 20,
                                     min_examples=10))


def test_tool_call_examples_are_accepted_and_kept_whole() -> None:
    data = parse([tool_example(i) for i in range(10)])
    assert (data.kind, data.count) == ("chat", 10)
    first = data.examples[0]
    assert first["tools"] == TOOLS
    messages = first["messages"]
    assert [m["role"] for m in messages] == ["developer", "user", "assistant", "tool", "assistant", "user",
                                             "assistant"]
    assert messages[2]["tool_calls"] == [CALL]
    assert messages[3]["tool_call_id"] == "call_1"
    assert [m.get("weight") for m in messages] == [None, None, None, None, 0, None, 1]  # kept for the loss mask


def test_a_legacy_function_call_is_accepted() -> None:
    line = {"messages": [{"role": "user", "content": "Weather?"},
                         {"role": "assistant", "function_call": {"name": "weather", "arguments": "{}"}},
                         {"role": "function", "name": "weather", "content": "sunny"},
                         {"role": "assistant", "content": "Sunny."}]}
    assert parse([line] * 10).count == 10


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ({"role": "assistant"}, "Example 10, message 2 is missing content."),  # neither content nor a call
        ({"role": "assistant", "content": "x", "weight": 2}, "invalid 'weight'"),
        ({"role": "user", "content": "x", "weight": 0}, "invalid 'weight'"),  # weight is for assistant turns
        ({"role": "assistant", "content": "x", "tool_call": [CALL]}, "extra 'tool_call'"),
    ],
    ids=["no-content-no-call", "weight-2", "weight-on-user", "misspelt-key"],
)
def test_what_is_refused(message: dict[str, Any], needle: str) -> None:
    bad = {"messages": [{"role": "user", "content": "hi"}, message, {"role": "assistant", "content": "ok"}]}
    with pytest.raises(DataInvalid) as exc:
        parse([tool_example(i) for i in range(9)] + [bad])
    assert exc.value.code == "invalid_training_file" and needle in exc.value.message


PAIR = {"query": "is Kestrel in stock", "positive": "wireless noise-cancelling headphones"}


def test_pairs_are_an_embedding_models_format() -> None:
    rows = [PAIR] * 9 + [{**PAIR, "negative": "a cast iron frying pan"}]
    data = parse(rows, method="embedding")
    assert data.kind == "pairs" and data.count == 10
    assert data.examples[0] == {**PAIR, "negative": None}
    assert data.examples[9]["negative"] == "a cast iron frying pan"
    assert parse([{**PAIR, "negative": None}] * 10, method="embedding").examples[0]["negative"] is None


@pytest.mark.parametrize(("row", "needle"), [
    ({"query": "q"}, "Example 10 is missing key 'positive'"),
    ({"positive": "p"}, "Example 10 is missing key 'query'"),
    ({"query": "q", "positive": " "}, "Example 10 'positive' must be a non-empty string"),
    ({"query": 3, "positive": "p"}, "Example 10 'query' must be a non-empty string"),
    ({"query": "q", "positive": "p", "negative": ["n"]}, "Example 10 'negative' must be a non-empty string"),
    ({"query": "q", "positive": "p", "negative": "p"}, "same text as 'positive' and 'negative'"),
    ({"query": "q", "positive": "p", "score": 1}, "Example 10 contains an extra 'score'"),
    ({"query": "q", "positive": "p" * 40_000}, "longer than 32768 characters"),
    ({"messages": [{"role": "user", "content": "a"}]}, "Example 10 is in the chat format"),
])
def test_bad_pairs_name_the_example(row: dict[str, Any], needle: str) -> None:
    with pytest.raises(DataInvalid) as bad:
        parse([PAIR] * 9 + [row], method="embedding")
    assert bad.value.code == "invalid_training_file" and needle in bad.value.message


def test_formats_must_fit_the_model() -> None:
    with pytest.raises(DataInvalid, match="Query/positive pairs fine-tune an embedding model"):
        parse([PAIR] * 10)
    chat = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    with pytest.raises(DataInvalid, match="An embedding model is fine-tuned on pairs"):
        parse([chat] * 10, method="embedding")
    with pytest.raises(DataInvalid) as few:
        parse([PAIR] * 9, method="embedding")
    assert few.value.code == "invalid_n_examples"
