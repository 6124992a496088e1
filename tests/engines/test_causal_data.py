"""Training data as the trainer sees it: the loss covers the assistant turns with weight 1 and nothing else;
tool calls render with the model's template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inhouse.engines.causal.data import IGNORE, encode_chat
from tests.llm import tokenizer

USER = {"role": "user", "content": "ping"}


def trained_text(tok: Any, example: dict[str, Any]) -> str:
    encoded = encode_chat(tok, example, 512)
    assert len(encoded.labels) == len(encoded.input_ids)
    kept = [label for label in encoded.labels if label != IGNORE]
    assert all(encoded.input_ids[i] == label for i, label in enumerate(encoded.labels) if label != IGNORE)
    return str(tok.decode(kept))


def test_weight_zero_turns_carry_no_loss(tiny_llm: Path) -> None:
    tok = tokenizer(tiny_llm)
    both = [USER, {"role": "assistant", "content": "no no"}, USER, {"role": "assistant", "content": "pong pong"}]
    assert trained_text(tok, {"messages": both}) == "no no<|im_end|>\npong pong<|im_end|>\n"
    first_off = [USER, {**both[1], "weight": 0}, USER, {**both[3], "weight": 1}]
    assert trained_text(tok, {"messages": first_off}) == "pong pong<|im_end|>\n"
    # The unweighted turn is still in the input, as context for what follows.
    assert encode_chat(tok, {"messages": first_off}, 512).input_ids == encode_chat(tok, {"messages": both},
                                                                                   512).input_ids
    last_off = [USER, both[1], USER, {**both[3], "weight": 0}]
    assert trained_text(tok, {"messages": last_off}) == "no no<|im_end|>\n"


def test_tool_call_turns_render(tiny_llm: Path) -> None:
    tok = tokenizer(tiny_llm)
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    messages = [USER, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "assistant", "content": "pong"}]
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    assert trained_text(tok, {"messages": messages, "tools": tools}).endswith("pong<|im_end|>\n")


def test_a_tool_call_turn_trains_the_call_not_an_empty_answer(tiny_llm: Path) -> None:
    """Templates like SmolLM2's drop `tool_calls`; the call is rendered as text, the same way serving renders
    an assistant turn with calls in the chat history."""
    from inhouse.services.chat import normalize_messages

    tok = tokenizer(tiny_llm)
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}
    turn = {"role": "assistant", "content": None, "tool_calls": [call]}
    text = trained_text(tok, {"messages": [USER, turn]})
    assert text == '<tool_call>{"name": "weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}</tool_call><|im_end|>\n'
    served = normalize_messages([USER, turn])
    assert served[1]["content"] + "<|im_end|>\n" == text


def test_developer_trains_as_the_system_role_it_is_served_as(tiny_llm: Path) -> None:
    tok = tokenizer(tiny_llm)
    developer = [{"role": "developer", "content": "be brief"}, USER, {"role": "assistant", "content": "pong"}]
    system = [{"role": "system", "content": "be brief"}, USER, {"role": "assistant", "content": "pong"}]
    assert encode_chat(tok, {"messages": developer}, 512) == encode_chat(tok, {"messages": system}, 512)
