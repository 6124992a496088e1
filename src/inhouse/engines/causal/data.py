"""Turn validated examples into token ids and labels: loss only on the assistant's tokens (weight 1),
rendered with the base model's own chat template."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

IGNORE = -100
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


@dataclass(frozen=True)
class SftExample:
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class PreferenceExample:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def calls_as_text(message: dict[str, Any]) -> str:
    """An assistant turn's tool calls (or legacy function_call) as text after its content.

    Chat templates of small models (SmolLM2's among them) drop `tool_calls`, which would train a call turn as
    an empty answer; training and serving both render calls this way instead, so they see the same prompt."""
    calls = list(message.get("tool_calls") or [])
    if message.get("function_call"):
        calls.append({"type": "function", "function": message["function_call"]})
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        fn = fn if isinstance(fn, dict) else {}
        payload = json.dumps({"name": fn.get("name"), "arguments": fn.get("arguments")}, ensure_ascii=False)
        text += f"\n<tool_call>{payload}</tool_call>" if text else f"<tool_call>{payload}</tool_call>"
    return text


def calls_from_text(text: str, names: set[str]) -> tuple[str, list[tuple[str, str]]]:
    """The inverse of calls_as_text on a generated answer: its text without the call blocks (and, when there
    were calls, without trailing whitespace), and each call as (name, arguments as a JSON string). A block
    that is not JSON with a `name` among `names` stays text.
    `arguments` may be written as a string (as calls_as_text renders OpenAI's) or as an object."""
    calls: list[tuple[str, str]] = []

    def take(match: re.Match[str]) -> str:
        try:
            payload = json.loads(match.group(1))
        except ValueError:
            return match.group(0)
        if not isinstance(payload, dict) or payload.get("name") not in names:
            return match.group(0)
        args = payload.get("arguments", {})
        calls.append((payload["name"], args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)))
        return ""

    rest = _CALL.sub(take, text)
    return (rest.rstrip() if calls else rest), calls


def tools_prompt(tools: list[dict[str, Any]]) -> str:
    """Tools as system-turn text, for a chat template that does not render them itself (SmolLM2's among
    them): the call format it asks for is the one calls_as_text renders and calls_from_text reads."""
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (f"You may call these functions:\n<tools>\n{listed}\n</tools>\nTo call one, write "
            '<tool_call>{"name": <function name>, "arguments": <the arguments object as a JSON string>}</tool_call>')


def chat_text(tok: Any, messages: list[dict[str, Any]], tools: Any, generation_prompt: bool) -> str:
    """Messages through the model's chat template, with `tools` when there are any: given to the template,
    or, when the template renders the same text without them, put into the system turn (tools_prompt), so
    that a model sees the tools it may call whatever its template. Training and serving both render here."""
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": generation_prompt}
    plain = str(tok.apply_chat_template(messages, **kwargs))
    if not tools:
        return plain
    rendered = str(tok.apply_chat_template(messages, tools=tools, **kwargs))
    if rendered != plain:
        return rendered
    block = tools_prompt(tools)
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        head = str(first.get("content") or "")
        merged = [{**first, "content": f"{head}\n\n{block}" if head else block}, *messages[1:]]
    else:
        merged = [{"role": "system", "content": block}, *messages]
    return str(tok.apply_chat_template(merged, **kwargs))


def _render(tok: Any, messages: list[dict[str, Any]], tools: Any, generation_prompt: bool) -> list[int]:
    clean = []
    for m in messages:
        role = "system" if m.get("role") == "developer" else m.get("role")  # as serving renders it
        rendered = {k: v for k, v in m.items() if k not in ("weight", "tool_calls", "function_call")}
        rendered["role"] = role
        rendered["content"] = calls_as_text(m)
        clean.append(rendered)
    text = chat_text(tok, clean, tools, generation_prompt)
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
