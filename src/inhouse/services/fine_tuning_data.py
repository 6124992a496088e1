"""Validate fine-tuning files as OpenAI does, streaming line by line: chat, prompt/completion and preference
formats for chat models, query/positive pairs for embedding models, with OpenAI's error codes and a message
naming the example."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from inhouse.services.checks import HOP_BYTES, LineSplitter, LineTooLong, json_dict

MIN_EXAMPLES = 10
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
MESSAGE_KEYS = {"role", "content", "name", "function_call", "tool_calls", "weight", "tool_call_id", "refusal"}


@dataclass
class DataInvalid(Exception):
    code: str
    message: str
    param: str


PAIR_KEYS = {"query", "positive", "negative"}
# Longest text of a pair: far beyond any encoder's window (training reads each text up to the model's
# max_seq_length), small enough that a file of them stays a bounded amount of memory per example.
MAX_PAIR_TEXT_CHARS = 32_768


@dataclass(frozen=True)
class Dataset:
    kind: str  # "chat", "completion", "preference" or "pairs"
    count: int
    examples: list[dict[str, Any]]  # empty unless asked to keep them


def _content_ok(content: Any) -> bool:
    if isinstance(content, str):
        return bool(content)
    if isinstance(content, list):
        if any(isinstance(p, dict) and p.get("type") == "image_url" for p in content):
            # Never dropped silently: the local base models read text only.
            raise ValueError("contains an image; the configured base models are text-only.")
        return all(isinstance(p, dict) and p.get("type") == "text" for p in content) and bool(content)
    return False


def _text(content: Any) -> Any:
    if isinstance(content, list):  # text parts joined
        return "".join(p.get("text", "") for p in content if p.get("type") == "text")
    return content


def check_chat(ex: dict[str, Any], n: int) -> dict[str, Any]:
    messages = ex.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"Example {n} is missing key 'messages'.")
    out = []
    for m, msg in enumerate(messages, start=1):
        where = f"Example {n}, message {m}"
        if not isinstance(msg, dict):
            raise ValueError(f"{where} is not an object.")
        if "role" not in msg:
            raise ValueError(f"{where} Discriminator 'role' is missing in value")
        if msg["role"] not in ROLES:
            raise ValueError(f"{where} has an unrecognized role {msg['role']!r}.")
        extra = set(msg) - MESSAGE_KEYS
        if extra:
            raise ValueError(f"{where} contains an extra {sorted(extra)[0]!r}.")
        if "weight" in msg and (msg["role"] != "assistant" or msg["weight"] not in (0, 1)):
            raise ValueError(f"{where} has an invalid 'weight' (only 0 or 1, on assistant messages).")
        has_call = bool(msg.get("tool_calls") or msg.get("function_call"))
        try:
            content_ok = _content_ok(msg.get("content"))
        except ValueError as exc:
            raise ValueError(f"{where} {exc}") from None
        if not has_call and not content_ok:
            raise ValueError(f"{where} is missing content.")
        out.append({**msg, "content": _text(msg.get("content"))})
    if not any(msg["role"] == "assistant" for msg in out):
        raise ValueError(f"Example {n} has no assistant message.")
    result: dict[str, Any] = {"messages": out}
    if ex.get("tools"):
        result["tools"] = ex["tools"]
    return result


def check_completion(ex: dict[str, Any], n: int) -> dict[str, Any]:
    if not isinstance(ex.get("prompt"), str) or not isinstance(ex.get("completion"), str):
        raise ValueError(f"Example {n} must have string 'prompt' and 'completion'.")
    if not ex["completion"]:
        raise ValueError(f"Example {n} has an empty completion.")
    return {"prompt": ex["prompt"], "completion": ex["completion"]}


def _one_assistant(value: Any, key: str, n: int) -> str:
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise ValueError(f"Example {n} '{key}' must hold exactly one assistant message.")
    msg = value[0]
    if msg.get("role") != "assistant" or not _content_ok(msg.get("content")):
        raise ValueError(f"Example {n} '{key}' must be an assistant message with content.")
    return str(_text(msg["content"]))


def check_preference(ex: dict[str, Any], n: int) -> dict[str, Any]:
    if "input" not in ex:
        raise ValueError(f"Invalid file format. Example {n} is missing key 'input'.")
    inp = ex["input"]
    if not isinstance(inp, dict) or not isinstance(inp.get("messages"), list) or not inp["messages"]:
        raise ValueError(f"Example {n} 'input' must hold 'messages'.")
    preferred = ex.get("preferred_output", ex.get("preferred_completion"))
    rejected = ex.get("non_preferred_output", ex.get("non_preferred_completion"))
    checked = check_chat({"messages": [*inp["messages"], {"role": "assistant", "content": "x"}]}, n)
    return {"input": {"messages": checked["messages"][:-1], "tools": inp.get("tools")},
            "preferred": _one_assistant(preferred, "preferred_output", n),
            "non_preferred": _one_assistant(rejected, "non_preferred_output", n)}


def check_pair(ex: dict[str, Any], n: int) -> dict[str, Any]:
    """{"query": …, "positive": …} with an optional "negative": texts, non-empty, nothing else."""
    extra = set(ex) - PAIR_KEYS
    if extra:
        raise ValueError(f"Example {n} contains an extra {sorted(extra)[0]!r}; a pair has 'query', 'positive' "
                         "and optionally 'negative'.")
    for key in ("query", "positive", "negative"):
        if key == "negative" and ex.get(key) is None:
            continue
        value = ex.get(key)
        if key not in ex:
            raise ValueError(f"Example {n} is missing key {key!r}.")
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"Example {n} {key!r} must be a non-empty string.")
        if len(value) > MAX_PAIR_TEXT_CHARS:
            raise ValueError(f"Example {n} {key!r} is longer than {MAX_PAIR_TEXT_CHARS} characters.")
    if ex.get("negative") is not None and ex["negative"] == ex["positive"]:
        raise ValueError(f"Example {n} has the same text as 'positive' and 'negative'.")
    return {"query": ex["query"], "positive": ex["positive"], "negative": ex.get("negative")}


def kind_of(ex: dict[str, Any]) -> str:
    if "query" in ex or "positive" in ex:
        return "pairs"
    if "input" in ex or "preferred_output" in ex or "preferred_completion" in ex:
        return "preference"
    if "messages" in ex:
        return "chat"
    if "prompt" in ex:
        return "completion"
    return "chat"


async def parse_dataset(chunks: AsyncIterator[bytes], *, param: str, method: str, max_line: int,
                        min_examples: int, keep: bool = True) -> Dataset:
    """Examples of one file, or DataInvalid naming the first bad one. `method` is "supervised" or "dpo" for a
    chat model, "embedding" for an embedding model's (supervised) fine-tune. With keep=False only the count is
    kept, so checking a file takes memory bounded by its longest line, whatever its size."""
    label = "training file" if param == "training_file" else "validation file"

    def bad(why: str) -> DataInvalid:
        return DataInvalid("invalid_training_file" if param == "training_file" else "invalid_validation_file",
                           f"The job failed due to an invalid {label}. {why}", param)

    examples: list[dict[str, Any]] = []
    splitter = LineSplitter(max_line)
    state: dict[str, Any] = {"kind": None, "n": 0}

    def check(raw: bytes) -> None:
        if not raw.strip():
            return
        state["n"] += 1
        n = state["n"]
        try:
            ex = json.loads(raw.decode("utf-8-sig" if n == 1 else "utf-8"), object_pairs_hook=json_dict)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise bad(f"Invalid file format. Example {n} cannot be parsed. Error: {str(exc)[:120]}") from None
        if not isinstance(ex, dict):
            raise bad(f"Invalid file format. Example {n} is not a JSON object.")
        this = kind_of(ex)
        kind = state["kind"] = state["kind"] or this
        if this != kind:
            raise bad(f"Invalid file format. Example {n} is in the {this} format, but the file starts in the "
                      f"{kind} format.")
        try:
            if kind == "preference":
                example = check_preference(ex, n)
            elif kind == "pairs":
                example = check_pair(ex, n)
            elif kind == "completion":
                example = check_completion(ex, n)
            else:
                example = check_chat(ex, n)
        except ValueError as exc:
            message = str(exc)
            raise bad(message if message.startswith("Invalid") else f"Invalid file format. {message}") from None
        if keep:
            examples.append(example)

    def check_batch(batch: list[bytes], last: bool) -> None:
        """Splitting, JSON parsing and checks, on a worker thread ~1 MiB at a time: a big file must not stall
        the event loop the embedded server shares with the worker, and a hop per line would cost too much."""
        try:
            for data in batch:
                for raw in splitter.feed(data):
                    check(raw)
            if last:
                for raw in splitter.close():
                    check(raw)
        except LineTooLong:
            raise bad(f"Invalid file format. Example {state['n'] + 1} is longer than {max_line} bytes.") from None

    batch: list[bytes] = []
    size = 0
    async for chunk in chunks:
        batch.append(chunk)
        size += len(chunk)
        if size >= HOP_BYTES:
            await asyncio.to_thread(check_batch, batch, False)
            batch, size = [], 0
    await asyncio.to_thread(check_batch, batch, True)
    kind = state["kind"]
    if method == "embedding" and kind not in (None, "pairs"):
        raise bad("Invalid file format. An embedding model is fine-tuned on pairs: one JSON object per line with "
                  "'query', 'positive' and optionally 'negative'.")
    if method != "embedding" and kind == "pairs":
        raise bad("Invalid file format. Query/positive pairs fine-tune an embedding model; a chat model needs "
                  "the chat format ('messages').")
    if method == "dpo" and kind not in (None, "preference"):
        raise bad("Invalid file format. DPO needs the preference format: 'input', 'preferred_output' and "
                  "'non_preferred_output'.")
    if method == "supervised" and kind == "preference":
        raise bad("Invalid file format. The preference format needs method type 'dpo'.")
    count = state["n"]
    if count < min_examples:
        raise DataInvalid("invalid_n_examples",
                          f"{label.capitalize()} has {count} example(s), but must have at least "
                          f"{min_examples} examples", param)
    return Dataset(kind or "chat", count, examples)
