"""Chat completions and legacy completions on base models, fine-tuned models and their checkpoints
(LoRA adapters applied on the base). Generation runs off the event loop; a bounded queue answers 429."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from inhouse import observability
from inhouse.config import FineTuning as FineTuningSettings
from inhouse.config import ModelEntry
from inhouse.engines.causal.adapters import header_is_full
from inhouse.engines.causal.data import calls_as_text
from inhouse.engines.causal.generation import CausalEngine, Generated, SamplingParams
from inhouse.engines.executors import ModelExecutors
from inhouse.engines.registry import ModelRegistry
from inhouse.errors import InhouseError, InvalidRequest
from inhouse.services.admission import Admission
from inhouse.services.models import ModelsService, model_not_found
from inhouse.storage.base import BlobStore, MetadataStore, read_all

T = TypeVar("T")
ADAPTER_CACHE_COUNT = 16  # adapters' bytes kept after use (the engine keeps 8 attached per base model)
ADAPTER_CACHE_BYTES = 256 * 1024 * 1024
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


@dataclass(frozen=True)
class Target:
    name: str
    entry: ModelEntry  # the model to load: a configured base, or (full fine-tunes) its own weights
    adapter_key: str | None  # a LoRA adapter applied on that model per request

    @property
    def metrics_label(self) -> str:
        """A configured model's id, or `fine-tuned` for every fine-tune (their names grow with every job)."""
        fine_tuned = self.adapter_key is not None or self.entry.kind == "chat-weights"
        return observability.model_label(observability.FINE_TUNED if fine_tuned else self.entry.id)


def _record_generation(target: Target, prompt_tokens: int, tokens: int, seconds: float) -> None:
    label = target.metrics_label
    observability.PROMPT_TOKENS.labels(label).inc(prompt_tokens)
    observability.GENERATED_TOKENS.labels(label).inc(tokens)
    observability.GENERATION_SECONDS.labels(label).inc(seconds)


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type") not in ("text", "image_url", "input_audio", "file",
                                                                "refusal"):
                raise InvalidRequest("Invalid content part in messages.", param="messages")
            if p.get("type") == "text":
                parts.append(str(p.get("text", "")))
            elif p.get("type") != "refusal":
                raise InvalidRequest(f"Content parts of type {p.get('type')!r} are not supported by this model.",
                                     param="messages")
        return "".join(parts)
    raise InvalidRequest("Message content must be a string or an array of content parts.", param="messages")


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a list or dict role is unhashable
            raise InvalidRequest(f"Invalid value for 'messages[{i}].role': {role!r:.80}.",
                                 param=f"messages[{i}].role")
        if role == "tool" and not m.get("tool_call_id"):
            raise InvalidRequest(f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                                 param=f"messages[{i}].tool_call_id")
        content = _text(m.get("content"))
        if role == "assistant" and (m.get("tool_calls") or m.get("function_call")):
            content = calls_as_text({**m, "content": content})  # as fine-tuning rendered them
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


@dataclass(frozen=True)
class Prompt:
    """A prompt before tokenizing: its size is known, so an oversized one is refused without tokenizing."""

    param: str  # where it came from: "messages" or "prompt"
    chars: int
    render: Callable[[CausalEngine], list[int]]  # blocking: tokenizes


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    params: SamplingParams  # max_new_tokens cut to the room the prompt leaves in the context


def _context_exceeded(engine: CausalEngine, prompt: Prompt, got: str, reduce: str = "") -> InvalidRequest:
    return InvalidRequest(f"This model's maximum context length is {engine.context} tokens. However, {got}. "
                          f"Please reduce the length of the {prompt.param}{reduce}.", param=prompt.param,
                          code="context_length_exceeded")


class ChatService:
    def __init__(self, models: ModelsService, meta: MetadataStore, blobs: BlobStore,
                 engines: ModelRegistry[CausalEngine], full_engines: ModelRegistry[CausalEngine],
                 settings: FineTuningSettings, executors: ModelExecutors) -> None:
        self.models = models
        self.meta = meta
        self.blobs = blobs
        self.engines = engines
        self.full_engines = full_engines
        self.settings = settings
        # generate() takes a slot itself; a streamed answer takes one before its 200 (api/chat.py) and holds
        # it until the last frame, since its generation outlives the handler.
        self.admit = Admission(lambda: self.settings.max_queued_generations,
                               "Too many generation requests are waiting; retry shortly.", 2.0, kind="chat")
        self.executors = executors
        self._full: dict[str, bool] = {}
        # Adapter bytes read on the event loop, handed to the engine (which attaches an adapter on its thread
        # when it does not hold it yet); kept a while, so a busy adapter is not read for every request.
        self._adapter_bytes: OrderedDict[str, bytes] = OrderedDict()

    async def _is_full(self, key: str) -> bool:
        if key not in self._full:
            async for head in self.blobs.read(key, 1024 * 1024):
                self._full[key] = header_is_full(head)
                break
        return self._full.get(key, False)

    def _registry(self, target: Target) -> ModelRegistry[CausalEngine]:
        return self.full_engines if target.entry.kind == "chat-weights" else self.engines

    async def resolve(self, project_id: str, name: str) -> Target:
        entry = self.models.resolve_configured(name, "chat")
        if entry is not None:
            return Target(name, entry, None)
        created = await self.meta.models.get_model(project_id, name)
        base_id, key = None, None
        if created is not None and created.kind == "chat":
            base_id, key = created.base_model, created.artifact_key
        elif ":ckpt-step-" in name:
            # The final checkpoint carries the model's own name: it serves only while the model exists.
            ckpt = await self.meta.jobs.checkpoint_by_name(project_id, name)
            if ckpt is not None:
                job = await self.meta.jobs.get_job(project_id, ckpt.job_id)
                base_id, key = (job.base_model if job else None), ckpt.artifact_key
        base = next((e for e in self.models.entries if e.id == base_id and e.kind == "chat"), None)
        if base is None or key is None:
            raise model_not_found(name, param="model")
        if await self._is_full(key):
            # Fully fine-tuned weights: a model of its own, loaded like the base and keyed by its artifact.
            own = ModelEntry(id=key, kind="chat-weights", path=base.path, gguf_file=base.gguf_file, aliases=[base.id])
            return Target(name, own, None)
        return Target(name, base, key)

    def params(self, *, max_tokens: int | None, default_max: int, temperature: float | None, top_p: float | None,
               n: int | None, stop: str | list[str] | None, seed: int | None) -> tuple[SamplingParams, int]:
        cap = self.settings.max_new_tokens
        if max_tokens is not None and not max_tokens >= 1:
            raise InvalidRequest("max_tokens must be at least 1.", param="max_tokens")
        count = 1 if n is None else n
        if not 1 <= count <= self.settings.max_n:
            raise InvalidRequest(f"n must be between 1 and {self.settings.max_n}.", param="n")
        t = 1.0 if temperature is None else temperature
        if not 0 <= t <= 2:
            raise InvalidRequest("temperature must be between 0 and 2.", param="temperature")
        p = 1.0 if top_p is None else top_p
        if not 0 < p <= 1:
            raise InvalidRequest("top_p must be in (0, 1].", param="top_p")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise InvalidRequest("stop takes at most 4 non-empty strings.", param="stop")
        if seed is not None and not -(2**63) <= seed < 2**63:  # the spec's int64; torch takes no more
            raise InvalidRequest("seed must be an integer from -9223372036854775808 to 9223372036854775807.",
                                 param="seed")
        return SamplingParams(min(max_tokens or default_max, cap), t, p, tuple(stops), seed), count

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> Prompt:
        """The messages (and the tools the model may call) as the model's chat template renders them."""
        cap = self.settings.max_prompt_items
        if len(messages) > cap:
            raise InvalidRequest(f"messages holds {len(messages)} messages; at most {cap} are allowed.",
                                 param="messages")
        normalized = normalize_messages(messages)
        tool_chars = len(json.dumps(tools)) if tools else 0
        return Prompt("messages", sum(len(m["content"]) for m in normalized) + tool_chars,
                      lambda engine: engine.chat_prompt(normalized, tools))

    def text_prompts(self, prompts: list[str]) -> list[Prompt]:
        cap = self.settings.max_prompt_items
        if len(prompts) > cap:
            raise InvalidRequest(f"prompt holds {len(prompts)} prompts; at most {cap} are allowed.", param="prompt")

        def render(text: str) -> Callable[[CausalEngine], list[int]]:
            return lambda engine: engine.text_prompt(text)

        return [Prompt("prompt", len(text), render(text)) for text in prompts]

    async def encode(self, target: Target, prompts: list[Prompt], params: SamplingParams,
                     requested_max: int | None = None) -> list[Encoded]:
        """Every prompt checked against the model's context (by size first, then tokenized off the event loop),
        before any is generated from. Call it holding an admission slot: it loads the model and tokenizes.

        A `max_tokens` the client asked for must fit beside the prompt (400, as OpenAI answers); the default
        one is cut to the room the prompt leaves."""
        engine = await self._registry(target).get(target.entry)
        unknown = next((t for t, _ in params.logit_bias if t >= engine.vocab_size), None)
        if unknown is not None:
            raise InvalidRequest(f"Invalid key in 'logit_bias': {unknown}. This model's token ids go from 0 to "
                                 f"{engine.vocab_size - 1}.", param="logit_bias", code="invalid_value")
        for prompt in prompts:
            if prompt.chars > engine.max_prompt_chars:
                raise _context_exceeded(engine, prompt, f"your {prompt.param} hold {prompt.chars} characters, "
                                        "far more than fit in it")
        out = []
        for prompt in prompts:
            ids = await asyncio.to_thread(prompt.render, engine)
            if len(ids) >= engine.context:
                raise _context_exceeded(engine, prompt, f"your {prompt.param} resulted in {len(ids)} tokens")
            if requested_max is not None and len(ids) + params.max_new_tokens > engine.context:
                raise _context_exceeded(
                    engine, prompt, f"you requested {len(ids) + params.max_new_tokens} tokens ({len(ids)} in the "
                    f"{prompt.param}, {params.max_new_tokens} in the completion)", " or the completion")
            room = min(params.max_new_tokens, engine.context - len(ids))
            out.append(Encoded(ids, replace(params, max_new_tokens=room)))
        return out

    async def _adapter(self, target: Target) -> tuple[str, Callable[[], bytes]] | None:
        """The target's LoRA adapter as the engine takes it: its key, and its bytes (read here, on the loop)."""
        key = target.adapter_key
        if key is None:
            return None
        data = self._adapter_bytes.get(key)
        if data is None:
            data = await read_all(self.blobs, key)
            self._adapter_bytes[key] = data
            # Bounded in count and bytes, least recently used first out; the newest stays even when alone past
            # the byte bound (it is in use now).
            while len(self._adapter_bytes) > 1 and (
                    len(self._adapter_bytes) > ADAPTER_CACHE_COUNT
                    or sum(map(len, self._adapter_bytes.values())) > ADAPTER_CACHE_BYTES):
                self._adapter_bytes.popitem(last=False)
        self._adapter_bytes.move_to_end(key)
        return key, lambda: data

    async def generate(self, target: Target, prompts: list[Prompt], params: SamplingParams,
                       n: int, requested_max: int | None = None) -> list[tuple[list[Generated], int]]:
        """`n` choices for each prompt, with its prompt token count; every prompt is checked before any runs."""
        with self.admit():
            encoded = await self.encode(target, prompts, params, requested_max)
            engine = await self._registry(target).get(target.entry)
            adapter = await self._adapter(target)
            results = []
            for enc in encoded:
                engine.busy += 1
                t0 = time.perf_counter()
                try:
                    out = await self.executors.run("chat", engine.generate, enc.ids, enc.params, n, adapter)
                finally:
                    engine.busy -= 1
                    engine.last_used = time.monotonic()
                _record_generation(target, len(enc.ids) * n, sum(o.tokens for o in out), time.perf_counter() - t0)
                results.append((out, len(enc.ids)))
            return results

    async def generate_many(self, target: Target, items: list[tuple[Prompt, SamplingParams, int, int | None]]
                            ) -> list[tuple[list[Generated], int] | InhouseError]:
        """For each (prompt, params, n, asked max_tokens) item: its `n` choices and prompt token count, or the
        error that item alone gets (encoded as encode does: context exceeded...). Every choice of every item
        is one row of CausalEngine.generate_batch; rows run in the engine's bounded batches, one executor call
        per batch, so the engine's lock is free between batches for interactive requests.

        The caller holds one slot of self.admit for the whole call (a batch of lines waits as one request);
        this takes none. A model that fails to load raises, as generate does."""
        engine = await self._registry(target).get(target.entry)
        encoded: dict[int, Encoded] = {}
        errors: dict[int, InhouseError] = {}
        rows: list[tuple[list[int], SamplingParams]] = []
        owner: list[int] = []  # the item behind each row
        for i, (prompt, params, n, asked) in enumerate(items):
            try:
                [enc] = await self.encode(target, [prompt], params, asked)
            except InhouseError as exc:
                errors[i] = exc
                continue
            encoded[i] = enc
            for copy in range(n):
                # generate draws n choices from one seeded stream; here each choice has its own generator, so
                # copies after the first get seeds derived from the item's (different, still reproducible).
                seed = enc.params.seed
                if seed is not None and copy:
                    seed = (seed + copy * 0x9E3779B97F4A7C15) % 2**64
                rows.append((enc.ids, replace(enc.params, seed=seed)))
                owner.append(i)
        adapter = await self._adapter(target)
        choices: dict[int, list[Generated]] = {i: [] for i in encoded}
        results: dict[int, Generated] = {}
        engine.busy += 1
        try:
            for batch in engine.batches(rows):
                t0 = time.perf_counter()
                done = await self.executors.run("chat", engine.generate_batch, [rows[r] for r in batch], adapter)
                _record_generation(target, sum(len(rows[r][0]) for r in batch), sum(g.tokens for g in done),
                                   time.perf_counter() - t0)
                results.update(zip(batch, done, strict=True))
        finally:
            engine.busy -= 1
            engine.last_used = time.monotonic()
        for r, i in enumerate(owner):  # rows were made item by item, copy by copy: choices come out in order
            choices[i].append(results[r])
        return [errors[i] if i in errors else (choices[i], len(encoded[i].ids)) for i in range(len(items))]

    async def stream(self, target: Target, prompt: Encoded) -> tuple[AsyncIterator[tuple[str, Generated | None]], int]:
        """One streamed choice of a prompt from encode(); the caller holds a slot of self.admit for the whole
        stream."""
        engine = await self._registry(target).get(target.entry)
        ids, params = prompt.ids, prompt.params
        adapter = await self._adapter(target)

        def timed() -> Iterator[tuple[str, Generated | None]]:
            # Timed on the model's thread, so a client that reads slowly does not count as generation time.
            t0 = time.perf_counter()
            for item in engine.stream(ids, params, adapter):
                if item[1] is not None:  # the last item; a stream cut off before it is not counted
                    _record_generation(target, len(ids), item[1].tokens, time.perf_counter() - t0)
                yield item

        async def chunks() -> AsyncIterator[tuple[str, Generated | None]]:
            engine.busy += 1
            try:
                async for item in _in_thread(timed, self.executors.pool("chat")):
                    yield item
            finally:
                engine.busy -= 1
                engine.last_used = time.monotonic()

        return chunks(), len(ids)


async def _in_thread(make: Callable[[], Iterator[T]], pool: Executor) -> AsyncIterator[T]:
    """Drive a blocking iterator on a thread of `pool`, handing items to the event loop through a queue."""
    loop = asyncio.get_running_loop()
    # Unbounded on purpose: a choice yields at most max_new_tokens items, and a full queue would let a client
    # that stops reading hold a model thread and the engine's lock for as long as it likes.
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancelled = threading.Event()

    def pump() -> None:
        try:
            for item in make():
                if cancelled.is_set():
                    return
                asyncio.run_coroutine_threadsafe(queue.put(("item", item)), loop).result()
            asyncio.run_coroutine_threadsafe(queue.put(("done", None)), loop).result()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(queue.put(("error", exc)), loop).result()

    task = loop.run_in_executor(pool, pump)
    try:
        while True:
            kind, value = await queue.get()
            if kind == "done":
                break
            if kind == "error":
                raise value
            yield value
    finally:
        cancelled.set()
        while not queue.empty():
            queue.get_nowait()
        await task

