"""Chat completions and legacy completions on base models, fine-tuned models and their checkpoints
(LoRA adapters applied on the base, per row of one decode batch). Generation runs on each model's scheduler
thread; a bounded queue answers 429."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Any

from inhouse import observability
from inhouse.config import FineTuning as FineTuningSettings
from inhouse.config import ModelEntry
from inhouse.engines.causal.adapters import header_is_full
from inhouse.engines.causal.data import calls_as_text
from inhouse.engines.causal.generation import Generated, SamplingParams, choice_params
from inhouse.engines.causal.multi_lora import Adapter
from inhouse.engines.causal.scheduler import Row, Sink
from inhouse.errors import InhouseError, InvalidRequest
from inhouse.services.admission import Admission
from inhouse.services.models import ModelsService, model_not_found
from inhouse.services.ports import ChatModel, LoadedModels, ModelPools
from inhouse.storage.base import BlobStore, MetadataStore, read_all

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
    render: Callable[[ChatModel], list[int]]  # blocking: tokenizes


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    params: SamplingParams  # max_new_tokens cut to the room the prompt leaves in the context


def _context_exceeded(engine: ChatModel, prompt: Prompt, got: str, reduce: str = "") -> InvalidRequest:
    return InvalidRequest(f"This model's maximum context length is {engine.context} tokens. However, {got}. "
                          f"Please reduce the length of the {prompt.param}{reduce}.", param=prompt.param,
                          code="context_length_exceeded")


class ChatService:
    def __init__(self, models: ModelsService, meta: MetadataStore, blobs: BlobStore,
                 engines: LoadedModels[ChatModel], full_engines: LoadedModels[ChatModel],
                 settings: FineTuningSettings, executors: ModelPools) -> None:
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

    async def _is_full(self, key: str) -> bool:
        if key not in self._full:
            async for head in self.blobs.read(key, 1024 * 1024):
                self._full[key] = header_is_full(head)
                break
        return self._full.get(key, False)

    def _registry(self, target: Target) -> LoadedModels[ChatModel]:
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

        def render(text: str) -> Callable[[ChatModel], list[int]]:
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

    async def _adapter(self, engine: ChatModel, target: Target) -> Adapter | None:
        """The target's LoRA adapter, parsed by the engine (which keeps the newest); its bytes are read here, on
        the loop, only when the engine does not hold it."""
        key = target.adapter_key
        if key is None:
            return None
        adapter = engine.cached_adapter(key)
        if adapter is None:
            data = await read_all(self.blobs, key)
            adapter = await self.executors.run("chat", engine.add_adapter, key, data)
        return adapter

    async def _results(self, engine: ChatModel, rows: list[tuple[list[int], SamplingParams]],
                       adapter: Adapter | None, background: bool) -> list[Generated]:
        """Submit rows and wait for every result, in order; a caller that is cancelled (its client gone)
        cancels its rows, which leave the batch at the next step."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Generated]] = [loop.create_future() for _ in rows]

        def settle(future: asyncio.Future[Generated], result: Generated | None, error: BaseException | None) -> None:
            if not future.done():
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)  # type: ignore[arg-type]

        def sink(future: asyncio.Future[Generated]) -> Sink:
            def put(text: str, result: Generated | None, error: BaseException | None) -> None:
                if result is not None or error is not None:
                    loop.call_soon_threadsafe(settle, future, result, error)
            return put

        submitted = [engine.row(ids, params, adapter, sink(f), background=background)
                     for (ids, params), f in zip(rows, futures, strict=True)]
        engine.submit(submitted)
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for row in submitted:
                row.cancel()  # no-op for a row that ended

    async def generate(self, target: Target, prompts: list[Prompt], params: SamplingParams,
                       n: int, requested_max: int | None = None) -> list[tuple[list[Generated], int]]:
        """`n` choices for each prompt, with its prompt token count; every prompt is checked before any runs,
        then every choice of every prompt is a row of the model's batch."""
        with self.admit():
            encoded = await self.encode(target, prompts, params, requested_max)
            engine = await self._registry(target).get(target.entry)
            engine.busy += 1
            try:
                adapter = await self._adapter(engine, target)
                rows = [(enc.ids, choice_params(enc.params, k)) for enc in encoded for k in range(n)]
                t0 = time.perf_counter()
                done = await self._results(engine, rows, adapter, False)
            finally:
                engine.busy -= 1
                engine.last_used = time.monotonic()
            _record_generation(target, sum(len(e.ids) for e in encoded) * n, sum(g.tokens for g in done),
                               time.perf_counter() - t0)
            return [(done[i * n:(i + 1) * n], len(enc.ids)) for i, enc in enumerate(encoded)]

    async def generate_many(self, target: Target, items: list[tuple[Prompt, SamplingParams, int, int | None]]
                            ) -> list[tuple[list[Generated], int] | InhouseError]:
        """For each (prompt, params, n, asked max_tokens) item: its `n` choices and prompt token count, or the
        error that item alone gets (encoded as encode does: context exceeded...). Every choice of every item
        is a background row of the model's batch: it joins while no live request waits, and fills at most half
        of the batch, so interactive requests keep their pace.

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
                rows.append((enc.ids, choice_params(enc.params, copy)))
                owner.append(i)
        choices: dict[int, list[Generated]] = {i: [] for i in encoded}
        engine.busy += 1
        try:
            adapter = await self._adapter(engine, target)
            t0 = time.perf_counter()
            done = await self._results(engine, rows, adapter, True)
        finally:
            engine.busy -= 1
            engine.last_used = time.monotonic()
        _record_generation(target, sum(len(r[0]) for r in rows), sum(g.tokens for g in done),
                           time.perf_counter() - t0)
        for r, i in enumerate(owner):  # rows were made item by item, copy by copy: choices come out in order
            choices[i].append(done[r])
        return [errors[i] if i in errors else (choices[i], len(encoded[i].ids)) for i in range(len(items))]

    async def stream(self, target: Target, prompt: Encoded, n: int = 1
                     ) -> tuple[AsyncGenerator[tuple[int, str, Generated | None], None], int]:
        """The `n` choices of a prompt from encode(), streamed together: (choice, text delta, None) items, and
        (choice, "", result) once per choice; it ends after the last choice's result. The choices are rows of
        the batch, seeded as generate seeds them (so streamed and plain answers are the same). The caller holds
        a slot of self.admit for the whole stream. Closing the iterator early (the client left) cancels the
        rows: they leave the batch at once."""
        engine = await self._registry(target).get(target.entry)
        ids = prompt.ids
        adapter = await self._adapter(engine, target)
        loop = asyncio.get_running_loop()
        # Unbounded on purpose: a row sends at most max_new_tokens + 2 items, and a full queue would let a
        # client that stops reading stall the batch every other row is in.
        queue: asyncio.Queue[tuple[int, str, Generated | None, BaseException | None]] = asyncio.Queue()
        t0 = time.perf_counter()

        def sink(choice: int) -> Sink:
            def put(text: str, result: Generated | None, error: BaseException | None) -> None:
                if result is not None:  # timed on the model's thread: a client that reads slowly adds nothing
                    _record_generation(target, len(ids), result.tokens, time.perf_counter() - t0)
                loop.call_soon_threadsafe(queue.put_nowait, (choice, text, result, error))
            return put

        rows: list[Row] = [engine.row(ids, choice_params(prompt.params, k), adapter, sink(k), stream=True)
                           for k in range(n)]

        async def chunks() -> AsyncGenerator[tuple[int, str, Generated | None], None]:
            nonlocal t0
            engine.busy += 1
            try:
                t0 = time.perf_counter()
                engine.submit(rows)
                left = n
                while left:
                    choice, text, result, error = await queue.get()
                    if error is not None:
                        raise error
                    left -= result is not None
                    yield choice, text, result
            finally:
                for row in rows:
                    row.cancel()
                engine.busy -= 1
                engine.last_used = time.monotonic()

        return chunks(), len(ids)
