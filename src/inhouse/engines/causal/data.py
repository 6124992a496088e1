"""Turn validated examples into token ids and labels: loss only on the assistant's tokens (weight 1),
rendered with the base model's own chat template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORE = -100


@dataclass(frozen=True)
class SftExample:
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class PreferenceExample:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def _render(tok: Any, messages: list[dict[str, Any]], tools: Any, generation_prompt: bool) -> list[int]:
    clean = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    for m in clean:
        if m.get("content") is None:
            m["content"] = ""
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": generation_prompt}
    if tools:
        kwargs["tools"] = tools
    text = tok.apply_chat_template(clean, **kwargs)
    ids: list[int] = tok(text, add_special_tokens=False)["input_ids"]
    return ids


def encode_chat(tok: Any, example: dict[str, Any], max_length: int) -> SftExample:
    messages: list[dict[str, Any]] = example["messages"]
    tools = example.get("tools")
    full = _render(tok, messages, tools, False)
    labels = [IGNORE] * len(full)
    for i, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        start = len(_render(tok, messages[:i], tools, True))
        end = len(_render(tok, messages[: i + 1], tools, False))
        for j in range(start, min(end, len(full))):
            labels[j] = full[j]
    return SftExample(full[:max_length], labels[:max_length])


def encode_completion(tok: Any, example: dict[str, Any], max_length: int) -> SftExample:
    prompt: list[int] = tok(example["prompt"], add_special_tokens=False)["input_ids"]
    completion: list[int] = tok(example["completion"], add_special_tokens=False)["input_ids"]
    if tok.eos_token_id is not None:
        completion = [*completion, tok.eos_token_id]
    ids = prompt + completion
    labels = [IGNORE] * len(prompt) + completion
    return SftExample(ids[:max_length], labels[:max_length])


def encode_sft(tok: Any, example: dict[str, Any], max_length: int) -> SftExample:
    if "messages" in example:
        return encode_chat(tok, example, max_length)
    return encode_completion(tok, example, max_length)


def encode_preference(tok: Any, example: dict[str, Any], max_length: int) -> PreferenceExample:
    messages = example["input"]["messages"]
    tools = example["input"].get("tools")
    prompt = _render(tok, messages, tools, True)
    chosen_full = _render(tok, [*messages, {"role": "assistant", "content": example["preferred"]}], tools, False)
    rejected_full = _render(tok, [*messages, {"role": "assistant", "content": example["non_preferred"]}], tools,
                            False)
    keep = max(1, max_length // 2)
    return PreferenceExample(prompt[-keep:], chosen_full[len(prompt):][:keep], rejected_full[len(prompt):][:keep])


def token_count(example: SftExample | PreferenceExample) -> int:
    if isinstance(example, SftExample):
        return len(example.input_ids)
    return len(example.prompt_ids) * 2 + len(example.chosen_ids) + len(example.rejected_ids)
