"""What every training loop shares with the job runner: the run, the stop signal, the resume point and the
hooks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from inhouse.config import ModelEntry


class Stopped(Exception):
    """The job was cancelled, paused or lost its lease: stop now, write nothing more."""


@dataclass(frozen=True)
class Resume:
    adapter: bytes  # the newest checkpoint's artifact: a LoRA adapter or full weights (safetensors)
    epoch: int  # epochs already done
    step: int  # steps already done


@dataclass(frozen=True)
class TrainingRun:
    """One attempt of a fine-tuning job as a trainer gets it: plain data, every byte already read."""

    kind: str  # what is trained: "chat" (a causal LM) or "embedding"
    method: str  # "supervised" or "dpo" (chat)
    base: ModelEntry  # the configured model it starts from
    examples: list[dict[str, Any]]  # the training file's examples, as fine_tuning_data parsed them
    validation: list[dict[str, Any]]  # the validation file's (empty without one)
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    beta: float  # DPO's
    seed: int
    full: bool  # every weight trained, instead of a LoRA adapter (chat)
    parent: bytes | None = None  # the weights of the fine-tune it continues (an adapter or full weights)


class TrainingHooks(Protocol):
    """Called from the training thread. on_step gets each step's metrics (and may raise Stopped when the
    job's lease is gone); on_epoch gets each epoch's snapshot; should_stop is checked before every step."""

    def on_step(self, metrics: dict[str, Any]) -> None: ...
    def on_epoch(self, epoch: int, step: int, adapter: bytes, metrics: dict[str, Any]) -> None: ...
    def should_stop(self) -> bool: ...


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    return max(1, math.ceil(n_examples / batch_size))


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """The examples' order in one epoch. It depends only on (seed, epoch), so a resumed run sees the batches
    a straight run would."""
    import random

    order = list(range(n_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def epoch_batches(n_examples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The example indices of each batch of one epoch, in order (the last batch may be short)."""
    order = epoch_order(n_examples, seed, epoch)
    return [order[b * batch_size : (b + 1) * batch_size] for b in range(steps_per_epoch(n_examples, batch_size))]


def optimizer_step(loss: Any, params: list[Any], optimizer: Any, max_norm: float = 1.0) -> None:
    """Backpropagate `loss` and take one step, gradients clipped to `max_norm` first."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
