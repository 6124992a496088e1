"""Generation on a causal LM: its rows (requests, choices, batch lines) decoded together by the model's scheduler
(continuous batching), each with its own LoRA adapter of the model (or none), sampling and stop strings."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from inhouse.engines.causal import batched, fast_decode, multi_lora
from inhouse.engines.causal.adapters import load_full
from inhouse.engines.causal.data import chat_text
from inhouse.engines.causal.loading import load_model, load_tokenizer
from inhouse.engines.causal.multi_lora import Adapter
from inhouse.engines.causal.sampling import Constraint, RowSampler, TokenTable, hf_hooks, row_generator, token_table
from inhouse.engines.causal.scheduler import Row, Scheduler, Sink, stop_at

# Parsed LoRA adapters kept per base model (a rank-8 adapter of SmolLM2-135M is ~8 MB); rows in the batch keep
# theirs alive after it leaves the cache.
MAX_ADAPTERS = 32
# The decode batch's bounds: rows, and rows x (widest cache + most tokens still to come), which bounds its KV
# cache (~46 KB a token on SmolLM2-135M in float32: 16384 tokens ~ 0.75 GB). Rows past them wait.
MAX_BATCH_ROWS = 16
MAX_BATCH_TOKENS = 16384
# How the choices after the first of a seeded request are seeded (each row draws from its own generator).
_CHOICE_SEED_STEP = 0x9E3779B97F4A7C15

AdapterSource = tuple[str, Callable[[], bytes]]  # an adapter's key and its bytes (read when not cached)


def choice_params(params: SamplingParams, choice: int) -> SamplingParams:
    """The params of a request's choice number `choice`: the first keeps the request's seed, the others get
    seeds derived from it (different, still reproducible)."""
    if params.seed is None or choice == 0:
        return params
    return replace(params, seed=(params.seed + choice * _CHOICE_SEED_STEP) % 2**64)


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    # OpenAI's penalties and logit_bias ((token id, bias) pairs, ids below vocab_size), applied by RowSampler.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    constraint: Constraint | None = None  # what the text must keep to (JSON mode, structured outputs, tools)


@dataclass(frozen=True)
class Generated:
    text: str
    finish_reason: str  # "stop" or "length"
    tokens: int


class _StopOnText:
    """Stops generation once the decoded continuation contains a stop string."""

    def __init__(self, tok: Any, prompt_len: int, stop: tuple[str, ...]) -> None:
        self.tok, self.prompt_len, self.stop = tok, prompt_len, stop

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        text = self.tok.decode(input_ids[0, self.prompt_len :], skip_special_tokens=True)
        done = stop_at(text, self.stop) >= 0
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool)


class CausalEngine:
    """A loaded model and its scheduler. Thread-safe: any thread may submit rows; one thread runs them."""

    def __init__(self, path: Path, threads: int, weights: bytes | None = None) -> None:
        self.path = path
        self.tok = load_tokenizer(path)
        self.model: Any = load_model(path, threads)
        if weights is not None:  # a fully fine-tuned model: the base's architecture with its own weights
            load_full(self.model, weights)
        # The context window, and a prompt length in characters that surely exceeds it: no token stands for
        # more characters than the longest vocabulary entry (x2 for normalizers that fold characters), so a
        # longer prompt is refused without being tokenized.
        self.context = int(getattr(self.model.config, "max_position_embeddings", 0) or self.tok.model_max_length)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])  # the logits' width
        self._token_table: TokenTable | None = None
        self.max_prompt_chars = self.context * 2 * max(len(t) for t in self.tok.get_vocab())
        self._adapters: OrderedDict[str, Adapter] = OrderedDict()
        self._adapters_lock = threading.Lock()
        # Touched by the scheduler's thread only: the Linear modules wrapped for per-row adapters, and the
        # adapters (by identity, per row) they hold now.
        self._wrappers: dict[str, Any] = {}
        self._rows = multi_lora.Rows()
        self._lora_key: tuple[int, ...] = ()
        self.last_used = time.monotonic()
        self.busy = 0
        self._plain_cache = self._cache_is_plain()
        # Decode steps of a Llama-family model run through the fast decoder (made on the first step, on the
        # scheduler's thread); others through the model's own forward.
        self._fast: fast_decode.FastDecoder | None = None
        self._fast_ok = fast_decode.supports(self.model)
        self.scheduler = Scheduler(self, MAX_BATCH_ROWS, MAX_BATCH_TOKENS)

    def _cache_is_plain(self) -> bool:
        """No sliding-window layers, whose columns the batch loop could not pad or trim."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        return all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers)

    def batchable(self) -> bool:
        return self._plain_cache and batched.same_as_generate(self.model.generation_config)

    def idle_since(self) -> float | None:
        return None if self.busy or self.scheduler.load else self.last_used

    # -- prompts ------------------------------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Messages (and tools) through the model's chat template, as fine-tuning renders them (data.py)."""
        text = chat_text(self.tok, messages, tools, True)
        ids: list[int] = self.tok(text, add_special_tokens=False)["input_ids"]
        return ids

    def text_prompt(self, prompt: str) -> list[int]:
        ids: list[int] = self.tok(prompt, add_special_tokens=False)["input_ids"]
        return ids

    # -- adapters -----------------------------------------------------------------------------------------
    def cached_adapter(self, key: str) -> Adapter | None:
        with self._adapters_lock:
            adapter = self._adapters.get(key)
            if adapter is not None:
                self._adapters.move_to_end(key)
            return adapter

    def add_adapter(self, key: str, data: bytes) -> Adapter:
        """A LoRA adapter of this model (fine-tuning's file), parsed once and kept (least recently used out)."""
        adapter = self.cached_adapter(key)
        if adapter is not None:
            return adapter
        adapter = multi_lora.parse(data, self.model.dtype)
        multi_lora.check(self.model, adapter)
        with self._adapters_lock:
            self._adapters[key] = adapter
            while len(self._adapters) > MAX_ADAPTERS:
                self._adapters.popitem(last=False)
        return adapter

    def _adapter(self, source: AdapterSource | None) -> Adapter | None:
        if source is None:
            return None
        key, load = source
        return self.cached_adapter(key) or self.add_adapter(key, load())

    def _use(self, adapters: Sequence[Adapter | None]) -> None:
        """Make the wrapped modules hold these adapters, row by row (scheduler thread only)."""
        key = tuple(0 if a is None else id(a) for a in adapters)
        if key == self._lora_key:
            return
        missing = sorted({p for a in adapters if a is not None for p in a.modules} - set(self._wrappers))
        if missing:
            self._wrappers.update(multi_lora.wrap(self.model, missing))
            self._rows.reset()
        self._rows.apply(self._wrappers, adapters)
        self._lora_key = key

    # -- the scheduler's model (scheduler.Model) ----------------------------------------------------------
    def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, cache: Any,
                adapters: Sequence[Adapter | None]) -> tuple[Any, Any]:
        import torch

        self._use(adapters)
        if self._fast_ok:
            if self._fast is None:
                self._fast = fast_decode.FastDecoder(self.model)
            if cache is not None and input_ids.shape[1] == 1:
                positions = (position_ids[:, 0] if position_ids is not None
                             else torch.full((input_ids.shape[0],), cache.get_seq_length(), dtype=torch.long))
                return self._fast.step(input_ids[:, 0], positions, attention_mask, cache, self._lora_key), cache
            if input_ids.shape[0] == 1 and attention_mask is None and position_ids is None:
                return self._fast.prefill(input_ids[0], cache, self._lora_key)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].to(dtype=torch.float32, copy=True), out.cache

    def text(self, ids: list[int]) -> str:
        text: str = self.tok.decode(ids, skip_special_tokens=True)
        return text

    def solo(self, row: Row, on_tokens: Callable[[list[int]], bool]) -> bool:
        import torch
        from transformers import StoppingCriteria
        from transformers.generation.streamers import BaseStreamer

        class Feed(BaseStreamer):
            def __init__(self) -> None:
                self.prompt, self.go = True, True

            def put(self, value: Any) -> None:
                if self.prompt:  # generate hands the prompt over first
                    self.prompt = False
                    return
                self.go = on_tokens([int(t) for t in value.flatten().tolist()])

            def end(self) -> None:
                pass

        feed = Feed()

        class Gone(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), not feed.go, dtype=torch.bool)

        self._use([row.adapter])
        new, complete = self._exact(row.ids, row.params, [Gone()], streamer=feed)
        row.out[:] = new
        return complete

    def _exact(self, prompt: list[int], params: SamplingParams, extra: list[Any],
               **more: Any) -> tuple[list[int], bool]:
        import torch

        if params.seed is not None:
            torch.manual_seed(params.seed % 2**64 if params.seed >= 2**63 else params.seed)
        return self._run(torch.tensor([prompt], dtype=torch.long), len(prompt), params, extra, **more)

    def generate_exact(self, prompt: list[int], params: SamplingParams) -> Generated:
        """One choice of the base model through Hugging Face generate alone, seeded with torch.manual_seed: the
        reference the batch loop keeps to (tests and benchmarks; call it while the scheduler is idle)."""
        import torch

        self._use([None])
        with torch.inference_mode():
            new, complete = self._exact(prompt, params, [])
        return self.finish(new, params, complete)

    # -- rows ---------------------------------------------------------------------------------------------
    def token_table(self) -> TokenTable:
        """Each token's bytes, built on first use (a constrained row needs it); two threads that race to build
        it build the same table."""
        if self._token_table is None:
            self._token_table = token_table(self.tok, self.vocab_size)
        return self._token_table

    def sampler(self, params: SamplingParams, rng: Any) -> RowSampler:
        """The row's token choice (sampling.RowSampler): the one seam both decode paths go through."""
        return RowSampler(params, self.vocab_size, rng, self.token_table)

    def row(self, prompt: list[int], params: SamplingParams, adapter: Adapter | None, sink: Sink, *,
            stream: bool = False, background: bool = False) -> Row:
        """A row to submit: it draws from its own generator, seeded as torch.manual_seed seeds generate."""
        return Row(prompt, params, adapter, self.sampler(params, row_generator(params)), sink, stream, background)

    def submit(self, rows: Sequence[Row]) -> None:
        """Queue rows for the batch; rows submitted together with the same prompt share its prefill."""
        self.last_used = time.monotonic()
        self.scheduler.submit(rows)

    def eos(self) -> set[int]:
        """Where rows end, as generate ends them: the generation config's eos tokens."""
        eos = self.model.generation_config.eos_token_id  # where generate stops (it may differ from the tokenizer's)
        return set() if eos is None else {eos} if isinstance(eos, int) else set(eos)

    def _kwargs(self, prompt_len: int, params: SamplingParams, extra: list[Any]) -> tuple[dict[str, Any],
                                                                                           RowSampler | None]:
        """generate's arguments for one choice, and the RowSampler that chooses its tokens when it does more
        than temperature and top_p (generate then runs greedy and takes the sampler's choice, drawn from
        torch's default generator as generate's own draws are)."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "pad_token_id": self.tok.pad_token_id}
        criteria: list[Any] = list(extra)
        if params.stop:
            criteria.append(_StopOnText(self.tok, prompt_len, params.stop))
        sampler = self.sampler(params, None)
        if sampler.plain:  # generate samples (or takes the argmax) itself, as it always has
            if params.temperature <= 0:
                kwargs["do_sample"] = False
            else:
                kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            fallback = min(self.eos() or {self.tok.eos_token_id or 0})
            choose, finished = hf_hooks(sampler, prompt_len, fallback)
            kwargs.update(do_sample=False, logits_processor=LogitsProcessorList([choose]))
            criteria.append(finished)
        if criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
        return kwargs, None if sampler.plain else sampler

    def finish(self, new_ids: list[int], params: SamplingParams, complete: bool = False) -> Generated:
        """The choice as text; `complete`: its grammar's text is whole (it ended there, not at max_tokens)."""
        text = self.tok.decode(new_ids, skip_special_tokens=True)
        cut = stop_at(text, params.stop)
        if cut >= 0:
            return Generated(text[:cut], "stop", len(new_ids))
        ended = complete or (bool(new_ids) and new_ids[-1] in {self.tok.eos_token_id, *self.eos()})
        return Generated(text, "stop" if ended or len(new_ids) < params.max_new_tokens else "length", len(new_ids))

    def _run(self, ids: Any, prompt_len: int, params: SamplingParams, extra: list[Any],
             **more: Any) -> tuple[list[int], bool]:
        """One choice through Hugging Face generate: its new token ids, and whether its grammar is whole."""
        kwargs, sampler = self._kwargs(prompt_len, params, extra)
        seq = self.model.generate(input_ids=ids, attention_mask=ids.new_ones(ids.shape), **kwargs, **more)
        new: list[int] = seq[0, prompt_len:].tolist()
        if sampler is not None and sampler.stuck and new:
            new = new[:-1]  # the fallback token that ended generate is not the row's
        return new, sampler is not None and sampler.finished

    # -- blocking conveniences (tests, tools): rows submitted and waited for ------------------------------
    def generate(self, prompt: list[int], params: SamplingParams, n: int,
                 adapter: AdapterSource | None) -> list[Generated]:
        """`n` choices of one prompt, as a live request makes them."""
        lora = self._adapter(adapter)
        return self._wait([(prompt, choice_params(params, k)) for k in range(n)], lora, False)

    def generate_batch(self, rows: list[tuple[list[int], SamplingParams]], adapter: AdapterSource | None,
                       background: bool = True) -> list[Generated]:
        """One result per (prompt, params) row, in order, run as batch work (or as live requests)."""
        return self._wait(rows, self._adapter(adapter), background)

    def _wait(self, rows: list[tuple[list[int], SamplingParams]], adapter: Adapter | None,
              background: bool) -> list[Generated]:
        results: list[Generated | BaseException | None] = [None] * len(rows)
        done = threading.Semaphore(0)

        def sink(i: int) -> Sink:
            def put(text: str, result: Generated | None, error: BaseException | None) -> None:
                if result is not None or error is not None:
                    results[i] = result if result is not None else error
                    done.release()
            return put

        self.submit([self.row(ids, params, adapter, sink(i), background=background)
                     for i, (ids, params) in enumerate(rows)])
        for _ in rows:
            done.acquire()
        out = []
        for r in results:
            if isinstance(r, BaseException):
                raise r
            assert r is not None
            out.append(r)
        return out

    def close(self) -> None:
        self.scheduler.stop()
        del self.model
