"""The training loop: LoRA on a causal LM, supervised (assistant-token loss) or DPO, seeded, with a
checkpoint per epoch and a stop check every step so cancel and pause take effect within a step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from inhouse.engines.causal.adapters import attach_adapter, dump_adapter, dump_full, load_full, lora_config
from inhouse.engines.causal.data import IGNORE, PreferenceExample, SftExample, token_count
from inhouse.engines.training import (
    Resume,
    Stopped,
    TrainingHooks,
    epoch_batches,
    optimizer_step,
    steps_per_epoch,
)

__all__ = ["ADAPTER", "Resume", "Stopped", "TrainSpec", "steps_per_epoch", "train"]

ADAPTER = "default"


@dataclass(frozen=True)
class TrainSpec:
    method: Literal["supervised", "dpo"]
    n_epochs: int
    batch_size: int
    learning_rate: float
    beta: float
    seed: int
    lora_rank: int
    full: bool = False  # every weight trained, instead of a LoRA adapter


def _pad(rows: list[list[int]], value: int) -> Any:
    import torch

    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _sft_batch(model: Any, batch: list[SftExample], pad_id: int) -> tuple[Any, float, int]:
    import torch

    ids = _pad([e.input_ids for e in batch], pad_id)
    labels = _pad([e.labels for e in batch], IGNORE)
    mask = _pad([[1] * len(e.input_ids) for e in batch], 0)
    logits = model(input_ids=ids, attention_mask=mask).logits
    # Shift the labels, not the logits: slicing [batch, seq, vocab] logits would copy all of them.
    target = torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), target.reshape(-1),
                                             ignore_index=IGNORE)
    valid = target != IGNORE
    with torch.no_grad():
        correct = int(((logits.argmax(-1) == target) & valid).sum())
    return loss, correct / max(1, int(valid.sum())), int(valid.sum())


def _completion_logps(model: Any, prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> Any:
    import torch

    rows = [p + c for p, c in zip(prompts, completions, strict=True)]
    ids = _pad(rows, pad_id)
    mask = _pad([[1] * len(r) for r in rows], 0)
    labels = _pad([[IGNORE] * len(p) + c for p, c in zip(prompts, completions, strict=True)], IGNORE)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1, :]
    target = labels[:, 1:]
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (target != IGNORE)).sum(-1)


def _dpo_batch(model: Any, batch: list[PreferenceExample], pad_id: int, beta: float,
               reference: Any = None) -> tuple[Any, float, int]:
    """DPO loss. The reference is the base model: the adapter switched off, or a frozen copy when every
    weight is trained."""
    import contextlib

    import torch

    prompts = [e.prompt_ids for e in batch]
    chosen = _completion_logps(model, prompts, [e.chosen_ids for e in batch], pad_id)
    rejected = _completion_logps(model, prompts, [e.rejected_ids for e in batch], pad_id)
    ref = reference if reference is not None else model
    off = contextlib.nullcontext() if reference is not None else model.disable_adapter()
    with torch.no_grad(), off:
        ref_chosen = _completion_logps(ref, prompts, [e.chosen_ids for e in batch], pad_id)
        ref_rejected = _completion_logps(ref, prompts, [e.rejected_ids for e in batch], pad_id)
    margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    loss = -torch.nn.functional.logsigmoid(margin).mean()
    accuracy = float((margin > 0).float().mean())
    return loss, accuracy, sum(len(e.chosen_ids) + len(e.rejected_ids) for e in batch)


def _evaluate(model: Any, examples: list[Any], spec: TrainSpec, pad_id: int,
              reference: Any = None) -> tuple[float, float]:
    import torch

    losses, accs, weights = [], [], []
    with torch.no_grad():
        for i in range(0, len(examples), spec.batch_size):
            batch = examples[i : i + spec.batch_size]
            if spec.method == "dpo":
                loss, acc, n = _dpo_batch(model, batch, pad_id, spec.beta, reference)
            else:
                loss, acc, n = _sft_batch(model, batch, pad_id)
            losses.append(loss.item())
            accs.append(acc)
            weights.append(max(1, n))
    total = sum(weights)
    return (sum(x * w for x, w in zip(losses, weights, strict=True)) / total,
            sum(a * w for a, w in zip(accs, weights, strict=True)) / total)


def train(model: Any, pad_id: int, train_set: list[Any], valid_set: list[Any], spec: TrainSpec,
          hooks: TrainingHooks, resume: Resume | None = None) -> tuple[bytes, int]:
    """Train a LoRA adapter (or, with spec.full, every weight) of `model`, modified in place. Returns the final
    adapter (or weights) as safetensors bytes, and the trained tokens."""
    import copy

    import torch
    from peft import get_peft_model

    torch.manual_seed(spec.seed)
    reference = None
    if spec.full:
        if spec.method == "dpo":
            reference = copy.deepcopy(model).eval().requires_grad_(False)
        if resume is not None:
            load_full(model, resume.adapter)
    elif resume is not None:
        model = attach_adapter(model, ADAPTER, resume.adapter)
    else:
        model = get_peft_model(model, lora_config(spec.lora_rank), adapter_name=ADAPTER)

    def snapshot() -> bytes:
        return dump_full(model) if spec.full else dump_adapter(model, ADAPTER, spec.lora_rank)

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.0)
    per_epoch = steps_per_epoch(len(train_set), spec.batch_size)
    total_steps = per_epoch * spec.n_epochs
    step = resume.step if resume else 0
    start_epoch = resume.epoch if resume else 0
    for epoch in range(start_epoch, spec.n_epochs):
        for b, indices in enumerate(epoch_batches(len(train_set), spec.batch_size, spec.seed, epoch)):
            if hooks.should_stop():
                raise Stopped()
            batch = [train_set[i] for i in indices]
            if spec.method == "dpo":
                loss, accuracy, _ = _dpo_batch(model, batch, pad_id, spec.beta, reference)
            else:
                loss, accuracy, _ = _sft_batch(model, batch, pad_id)
            optimizer_step(loss, params, optimizer)
            step += 1
            metrics: dict[str, Any] = {"step": step, "total_steps": total_steps, "train_loss": loss.item(),
                                       "train_mean_token_accuracy": accuracy}
            if b == per_epoch - 1 and valid_set:
                model.eval()
                valid_loss, valid_acc = _evaluate(model, valid_set, spec, pad_id, reference)
                model.train()
                metrics.update(valid_loss=valid_loss, valid_mean_token_accuracy=valid_acc,
                               full_valid_loss=valid_loss, full_valid_mean_token_accuracy=valid_acc)
            hooks.on_step(metrics)
        if hooks.should_stop():
            raise Stopped()
        hooks.on_epoch(epoch + 1, step, snapshot(), metrics)
    model.eval()
    trained = sum(token_count(e) for e in train_set) * spec.n_epochs
    return snapshot(), trained
