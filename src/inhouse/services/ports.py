"""The ports: what services call on models, their registries, the model thread pools and the trainer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ParamSpec, Protocol, TypeVar

from inhouse.config import ModelEntry
from inhouse.engines.causal.generation import SamplingParams
from inhouse.engines.causal.multi_lora import Adapter
from inhouse.engines.causal.scheduler import Row, Sink
from inhouse.engines.embeddings.encoder import FloatArray
from inhouse.engines.executors import Kind
from inhouse.engines.images.pipelines import Render
from inhouse.engines.training import Resume, TrainingHooks, TrainingRun

P = ParamSpec("P")
T = TypeVar("T")
E_co = TypeVar("E_co", covariant=True)


class ModelSource(Protocol[E_co]):
    async def get(self, entry: ModelEntry) -> E_co:
        """The loaded model of `entry`, loading it off the loop on first use (concurrent callers share one load);
        raises EngineFailure (`model_load_failed`) when it cannot be loaded."""
        ...


class LoadedModels(ModelSource[E_co], Protocol[E_co]):
    """A registry of one kind's loaded models, as the process that owns it reads and frees them."""

    @property
    def kind(self) -> str:
        """The kind's name in metrics and logs ("chat", "image"...)."""
        ...

    def loaded(self) -> list[str]:
        """The ids of the models loaded now."""
        ...

    def engines(self) -> Sequence[E_co]:
        """The models loaded now, for reading their live state (queue depths) at scrape time."""
        ...

    async def unload_idle(self) -> list[str]:
        """Unloads every model idle longer than the kind's idle time; the ids it unloaded."""
        ...

    async def close(self) -> None:
        """Unloads every model; the registry loads again on the next `get`."""
        ...


class ChatModel(Protocol):
    """A loaded causal LM: tokenizes prompts and decodes rows in its batch on its own scheduler thread. `busy`
    counts the callers using it and `last_used` is when the last one finished; while busy it is never idle."""

    busy: int
    last_used: float

    @property
    def context(self) -> int:
        """The context window in tokens: a prompt and its completion together fit in it."""
        ...

    @property
    def vocab_size(self) -> int:
        """The number of token ids (the logits' width); every valid id is below it."""
        ...

    @property
    def max_prompt_chars(self) -> int:
        """A prompt length in characters that surely exceeds the context: longer ones are refused untokenized."""
        ...

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The token ids of `messages` (and `tools`) through the model's chat template. Blocking: call it off
        the loop."""
        ...

    def text_prompt(self, prompt: str) -> list[int]:
        """The token ids of `prompt` as it is, no special tokens added. Blocking."""
        ...

    def cached_adapter(self, key: str) -> Adapter | None:
        """The LoRA adapter stored under the blob `key` if the model holds it parsed already, else None."""
        ...

    def add_adapter(self, key: str, data: bytes) -> Adapter:
        """The adapter in `data` (fine-tuning's file), parsed, checked against the model and kept under `key`.
        Blocking; raises when `data` is not an adapter of this model."""
        ...

    def row(self, prompt: list[int], params: SamplingParams, adapter: Adapter | None, sink: Sink, *,
            stream: bool = False, background: bool = False) -> Row:
        """A row to submit (not yet queued): `sink` gets its text (each delta when `stream`) and then its result
        or its error, on the model's thread. A `background` row runs only while no live one waits."""
        ...

    def submit(self, rows: Sequence[Row]) -> None:
        """Queues `rows` for the batch (rows with the same prompt share its prefill); returns at once."""
        ...


class ImageModel(Protocol):
    """A loaded diffusion pipeline; `busy` and `last_used` as for ChatModel. Every call blocks: run it on the
    images pool."""

    busy: int
    last_used: float

    def generate(self, r: Render) -> list[Any]:
        """`r.n` PIL images of `r.prompt`, at the render's size."""
        ...

    def inpaint(self, r: Render, image: Any, mask: Any, strength: float = 1.0) -> list[Any]:
        """`r.n` PIL images: `image` repainted where `mask` is white."""
        ...

    def vary(self, r: Render, image: Any, strength: float) -> list[Any]:
        """`r.n` PIL variations of `image`, `strength` (0..1) away from it."""
        ...


class EmbeddingQueue(Protocol):
    """An embedding model's admission and its live depths."""

    @property
    def model(self) -> str:
        """The `model` label its metrics carry."""
        ...

    @property
    def queued_inputs(self) -> int:
        """Inputs admitted and not yet answered."""
        ...

    @property
    def pending_windows(self) -> int:
        """Windows waiting for the model thread."""
        ...

    def reserve(self, n_inputs: int) -> AbstractContextManager[None]:
        """Holds room for `n_inputs` inputs while the block runs; raises Overloaded (429) at once when the queue
        is full."""
        ...


class EmbeddingModel(Protocol):
    """A loaded embedding model."""

    @property
    def dimensions(self) -> int:
        """The length of its vectors."""
        ...

    @property
    def batcher(self) -> EmbeddingQueue:
        """Its admission queue."""
        ...

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """The token ids of each text, untruncated. Blocking."""
        ...

    async def embed(self, token_ids: list[list[int]], *, background: bool = False) -> FloatArray:
        """One unit vector per input (long inputs pooled over windows), in order; `background` work runs only
        while no live request waits."""
        ...


class ModelPools(Protocol):
    """The bounded thread pools that model work runs on, one per kind, apart from the loop's I/O pool."""

    async def run(self, kind: Kind, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on `kind`'s pool (context variables travel along); its result, or its
        exception raised here."""
        ...

    def shutdown(self) -> None:
        """Stops every pool without waiting for the work in it; a later `run` makes the pool again."""
        ...


class Trainer(Protocol):
    def train(self, run: TrainingRun, hooks: TrainingHooks, resume: Resume | None) -> tuple[bytes, int]:
        """Blocking (run it on the training pool): loads `run.base` (with `run.parent` applied), trains it,
        continuing from `resume` when given, and calls `hooks` each step and epoch. Returns the final adapter or
        weights (safetensors bytes) and the trained tokens of every epoch; raises Stopped when the hooks say
        stop, and whatever loading or training raises. It reads no storage: every byte comes in `run`."""
        ...
