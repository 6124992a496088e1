"""Generation on a base causal LM with LoRA adapters applied per request (cached), off the event loop,
one generation at a time per model, with stop sequences, streaming and batches of prompts."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inhouse.engines.causal import batched
from inhouse.engines.causal.adapters import attach_adapter, load_full
from inhouse.engines.causal.data import chat_text
from inhouse.engines.causal.loading import load_model, load_tokenizer
from inhouse.engines.causal.sampling import Constraint, RowSampler, TokenTable, hf_hooks, row_generator, token_table

MAX_ADAPTERS = 8  # LoRA adapters kept attached per base model
# generate_batch's bounds on one batch: rows, and rows x (longest prompt + most new tokens), which bounds its KV
# cache (~46 KB a token on SmolLM2-135M in float32: 16384 tokens ~ 0.75 GB) and its prefill. Larger requests
# are split into several batches.
MAX_BATCH_ROWS = 16
MAX_BATCH_TOKENS = 16384


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
        done = any(s in text for s in self.stop)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool)


class CausalEngine:
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
        self.lock = threading.Lock()  # one generation step at a time on this model
        # Live requests (generate, stream) take the lock ahead of a batch's next decode step: a batch takes it
        # step by step, and only while no live request waits for it.
        self._turn = threading.Condition()
        self._live_waiting = 0
        self._adapters: OrderedDict[str, bool] = OrderedDict()
        self.last_used = time.monotonic()
        self.busy = 0
        self.max_batch_rows, self.max_batch_tokens = MAX_BATCH_ROWS, MAX_BATCH_TOKENS

    def idle_since(self) -> float | None:
        return None if self.busy else self.last_used

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
    def _select(self, adapter: tuple[str, Callable[[], bytes]] | None) -> Any:
        """Make `adapter` active (loading it if needed), or return a context that disables adapters."""
        from peft import PeftModel

        if adapter is None:
            if isinstance(self.model, PeftModel):
                return self.model.disable_adapter()
            return contextlib.nullcontext()
        name, load = adapter
        key = name.replace(".", "_").replace(":", "_").replace("/", "_")
        if key not in self._adapters:
            if len(self._adapters) >= MAX_ADAPTERS and isinstance(self.model, PeftModel):
                old, _ = self._adapters.popitem(last=False)
                self.model.delete_adapter(old)
            self.model = attach_adapter(self.model, key, load())
            self._adapters[key] = True
        self._adapters.move_to_end(key)
        self.model.set_adapter(key)
        return contextlib.nullcontext()

    # -- generation ---------------------------------------------------------------------------------------
    def token_table(self) -> TokenTable:
        """Each token's bytes, built on first use (a constrained row needs it); two threads that race to build
        it build the same table."""
        if self._token_table is None:
            self._token_table = token_table(self.tok, self.vocab_size)
        return self._token_table

    def sampler(self, params: SamplingParams, rng: Any) -> RowSampler:
        """The row's token choice (sampling.RowSampler): the one seam both decode loops go through."""
        return RowSampler(params, self.vocab_size, rng, self.token_table)

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id  # where generate stops (it may differ from the tokenizer's)
        return set() if eos is None else {eos} if isinstance(eos, int) else set(eos)

    def _kwargs(self, prompt_len: int, params: SamplingParams) -> tuple[dict[str, Any], RowSampler | None]:
        """generate's arguments for one choice, and the RowSampler that chooses its tokens when it does more
        than temperature and top_p (generate then runs greedy and takes the sampler's choice, drawn from
        torch's default generator as generate's own draws are)."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "pad_token_id": self.tok.pad_token_id}
        criteria: list[Any] = []
        if params.stop:
            criteria.append(_StopOnText(self.tok, prompt_len, params.stop))
        sampler = self.sampler(params, None)
        if sampler.plain:  # generate samples (or takes the argmax) itself, as it always has
            if params.temperature <= 0:
                kwargs["do_sample"] = False
            else:
                kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            fallback = min(self._eos_ids() or {self.tok.eos_token_id or 0})
            choose, finished = hf_hooks(sampler, prompt_len, fallback)
            kwargs.update(do_sample=False, logits_processor=LogitsProcessorList([choose]))
            criteria.append(finished)
        if criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
        return kwargs, None if sampler.plain else sampler

    def _finish(self, new_ids: list[int], params: SamplingParams, complete: bool = False) -> Generated:
        """The choice as text; `complete`: its grammar's text is whole (it ended there, not at max_tokens)."""
        text = self.tok.decode(new_ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in params.stop if s in text), default=-1)
        if cut >= 0:
            return Generated(text[:cut], "stop", len(new_ids))
        ended = complete or (bool(new_ids) and new_ids[-1] in {self.tok.eos_token_id, *self._eos_ids()})
        return Generated(text, "stop" if ended or len(new_ids) < params.max_new_tokens else "length", len(new_ids))

    def _run(self, ids: Any, prompt_len: int, params: SamplingParams, **extra: Any) -> tuple[list[int], bool]:
        """One choice through Hugging Face generate: its new token ids, and whether its grammar is whole."""
        kwargs, sampler = self._kwargs(prompt_len, params)
        seq = self.model.generate(input_ids=ids, attention_mask=ids.new_ones(ids.shape), **kwargs, **extra)
        new: list[int] = seq[0, prompt_len:].tolist()
        if sampler is not None and sampler.stuck and new:
            new = new[:-1]  # the fallback token that ended generate is not the row's
        return new, sampler is not None and sampler.finished

    @contextlib.contextmanager
    def _live(self) -> Iterator[None]:
        """The lock for a live request, for its whole generation, ahead of any batch's next step."""
        with self._turn:
            self._live_waiting += 1
        try:
            self.lock.acquire()
        finally:
            with self._turn:
                self._live_waiting -= 1
                self._turn.notify_all()
        try:
            yield
        finally:
            self.lock.release()

    @contextlib.contextmanager
    def _background_step(self) -> Iterator[None]:
        """The lock for one step of a batch, once no live request waits for it (a live request that starts to
        wait during the step waits for that step alone)."""
        with self._turn:
            self._turn.wait_for(lambda: self._live_waiting == 0)
        with self.lock:
            yield

    def generate(self, prompt: list[int], params: SamplingParams, n: int,
                 adapter: tuple[str, Callable[[], bytes]] | None) -> list[Generated]:
        import torch

        with self._live():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            ids = torch.tensor([prompt], dtype=torch.long)
            out = []
            with self._select(adapter), torch.inference_mode():
                for _ in range(n):
                    new, complete = self._run(ids, len(prompt), params)
                    out.append(self._finish(new, params, complete))
            return out

    def batches(self, rows: list[tuple[list[int], SamplingParams]]) -> list[list[int]]:
        """Indices of `rows` grouped into the batches generate_batch runs (bounded by max_batch_rows/_tokens)."""
        return batched.plan(rows, self.max_batch_rows, self.max_batch_tokens)

    def generate_batch(self, rows: list[tuple[list[int], SamplingParams]],
                       adapter: tuple[str, Callable[[], bytes]] | None) -> list[Generated]:
        """One result per (prompt, params) row, in order, built as generate builds them; rows are decoded
        together in batches (self.batches), under the same lock as generate, one batch at a time.

        Greedy rows give generate's text; a seeded row's sampling depends on its own seed only (batched.decode
        says what holds)."""
        import torch

        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0  # any id: padding is masked

        def stopped(new_ids: list[int], stop: tuple[str, ...]) -> bool:  # _StopOnText on a row's new tokens
            text = self.tok.decode(new_ids, skip_special_tokens=True)
            return any(s in text for s in stop)

        def step(forward: Callable[[Any], Any]) -> Any:
            # Lock and adapter are taken per step: between two steps live requests go first, and may attach or
            # switch adapters (or wrap the model in a PeftModel), so the step selects its own and calls the
            # model as it is now. The KV cache the steps share holds tensors only.
            with self._background_step(), self._select(adapter), torch.inference_mode():
                return forward(self.model)

        out: list[Generated | None] = [None] * len(rows)
        gc = self.model.generation_config
        eos_ids = self._eos_ids()
        for group in self.batches(rows):
            part = [rows[i] for i in group]
            if batched.same_as_generate(gc):
                samplers = [self.sampler(params, row_generator(params)) for _, params in part]
                new = batched.decode(step, part, samplers, eos_ids, pad, stopped)
                done = [(ids, s.finished) for ids, s in zip(new, samplers, strict=True)]
            else:  # the model's generation_config adds logits processors the batched loop does not apply
                done = [step(functools.partial(self._one_on, ids, params)) for ids, params in part]
            for i, (ids, complete) in zip(group, done, strict=True):
                out[i] = self._finish(ids, rows[i][1], complete)
        return [g for g in out if g is not None]

    def _one_on(self, prompt: list[int], params: SamplingParams, _model: Any) -> tuple[list[int], bool]:
        return self._one(prompt, params)

    def _one(self, prompt: list[int], params: SamplingParams) -> tuple[list[int], bool]:
        """One row through Hugging Face generate, as generate runs a choice."""
        import torch

        if params.seed is not None:
            torch.manual_seed(params.seed)
        return self._run(torch.tensor([prompt], dtype=torch.long), len(prompt), params)

    def stream(self, prompt: list[int], params: SamplingParams,
               adapter: tuple[str, Callable[[], bytes]] | None) -> Iterator[tuple[str, Generated | None]]:
        """Yields text deltas, then ("", Generated) once done. Holds back text that could start a stop
        string, so a stop sequence never leaks into the stream."""
        import torch
        from transformers import TextIteratorStreamer

        with self._live():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            ids = torch.tensor([prompt], dtype=torch.long)
            streamer: Any = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
            result: dict[str, Any] = {}

            def run() -> None:
                try:
                    with self._select(adapter), torch.inference_mode():
                        result["run"] = self._run(ids, len(prompt), params, streamer=streamer)
                except BaseException as exc:  # surfaced to the caller below
                    result["error"] = exc
                    streamer.end()

            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            sent, text = 0, ""
            hold = max((len(s) for s in params.stop), default=0)
            for piece in streamer:
                text += piece
                cut = min((text.find(s) for s in params.stop if s in text), default=-1)
                if cut >= 0:
                    if cut > sent:
                        yield text[sent:cut], None
                    sent = cut
                    break
                safe = len(text) - hold
                if safe > sent:
                    yield text[sent:safe], None
                    sent = safe
            worker.join()
            if "error" in result:
                raise result["error"]
            new, complete = result["run"]
            final = self._finish(new, params, complete)
            if len(final.text) > sent:
                yield final.text[sent:], None
            yield "", final

    def close(self) -> None:
        del self.model
