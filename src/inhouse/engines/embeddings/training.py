"""Fine-tuning an embedding model: every weight trained with a contrastive loss (in-batch negatives plus the
given hard negatives), on the sentence-transformers stack, seeded, a checkpoint per epoch, retrieval metrics
on the validation set at each epoch's end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inhouse.engines.training import Resume, Stopped, TrainingHooks, epoch_batches, optimizer_step, steps_per_epoch

__all__ = ["EncoderTrainSpec", "PairExample", "Stopped", "load_trainable", "retrieval_metrics", "train_encoder"]

SCALE = 20.0  # cosine similarities x 20 as logits: sentence-transformers' MultipleNegativesRankingLoss default
WEIGHT_DECAY = 0.01  # and its optimizer's


@dataclass(frozen=True)
class PairExample:
    query: str
    positive: str
    negative: str | None = None


@dataclass(frozen=True)
class EncoderTrainSpec:
    n_epochs: int
    batch_size: int
    learning_rate: float
    seed: int


def load_trainable(path: Path, threads: int, weights: bytes | None = None) -> Any:
    """A SentenceTransformer from a model directory (safetensors only: pickled weights are never loaded),
    optionally with the full weights of a fine-tune put in place of the directory's."""
    import torch
    from sentence_transformers import SentenceTransformer

    if threads:
        torch.set_num_threads(threads)
    model = SentenceTransformer(str(path), device="cpu", local_files_only=True,
                                model_kwargs={"use_safetensors": True})
    if weights is not None:
        load_weights(model, weights)
    return model


def _backbone(model: Any) -> Any:
    return model[0].auto_model


def dump_weights(model: Any) -> bytes:
    """The transformer's weights as safetensors bytes, keyed as its Hugging Face class saves them."""
    from safetensors.torch import save

    # Cloned: safetensors refuses tensors that share storage, and a snapshot must not move with training.
    return save({k: v.detach().clone().contiguous() for k, v in _backbone(model).state_dict().items()})


def load_weights(model: Any, weights: bytes) -> None:
    from safetensors.torch import load

    _backbone(model).load_state_dict(load(weights), strict=True)


def _embed(model: Any, texts: list[str]) -> tuple[Any, int]:
    """Unnormalised sentence vectors with grad (in train mode), and the tokens they read."""
    # sentence-transformers 6 renamed tokenize to preprocess (the old name warns).
    features = (model.preprocess if hasattr(model, "preprocess") else model.tokenize)(texts)
    tokens = int(features["attention_mask"].sum())
    return model(features)["sentence_embedding"], tokens


def contrastive_batch(model: Any, batch: list[PairExample]) -> tuple[Any, float, int]:
    """MultipleNegativesRankingLoss: each query must pick its positive among every positive and negative of the
    batch. A document whose text equals the query's own positive (a duplicate elsewhere in the batch) is
    masked out, never scored as a negative. Returns (loss, in-batch top-1 accuracy, tokens read)."""
    import torch
    from sentence_transformers.util import cos_sim

    docs = [e.positive for e in batch] + [e.negative for e in batch if e.negative is not None]
    q, q_tokens = _embed(model, [e.query for e in batch])
    d, d_tokens = _embed(model, docs)
    scores = cos_sim(q, d) * SCALE
    labels = torch.arange(len(batch))
    same = torch.tensor([[docs[j] == e.positive and j != i for j in range(len(docs))] for i, e in enumerate(batch)])
    scores = scores.masked_fill(same, float("-inf"))
    loss = torch.nn.functional.cross_entropy(scores, labels)
    with torch.no_grad():
        accuracy = float((scores.argmax(dim=1) == labels).float().mean())
    return loss, accuracy, q_tokens + d_tokens


def _encode(model: Any, texts: list[str], batch_size: int) -> Any:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            vectors, _ = _embed(model, texts[i : i + batch_size])
            out.append(torch.nn.functional.normalize(vectors, dim=-1))
    return torch.cat(out)


def retrieval_metrics(model: Any, examples: list[PairExample], batch_size: int) -> tuple[float, float]:
    """(accuracy@1, MRR@10) of each query against every distinct positive and negative of the set."""
    import torch

    docs = list(dict.fromkeys([e.positive for e in examples] + [e.negative for e in examples if e.negative]))
    index = {text: i for i, text in enumerate(docs)}
    q = _encode(model, [e.query for e in examples], batch_size)
    d = _encode(model, docs, batch_size)
    scores = q @ d.T
    gold = torch.tensor([index[e.positive] for e in examples])
    gold_scores = scores[torch.arange(len(examples)), gold]
    rank = (scores > gold_scores[:, None]).sum(dim=1)  # documents strictly better than the right one
    top1 = float((rank == 0).float().mean())
    mrr = float(torch.where(rank < 10, 1.0 / (rank + 1).float(), torch.zeros_like(rank, dtype=torch.float)).mean())
    return top1, mrr


def _validate(model: Any, valid_set: list[PairExample], batch_size: int) -> dict[str, float]:
    import torch

    model.eval()
    losses, weights = [], []
    with torch.no_grad():
        for i in range(0, len(valid_set), batch_size):
            batch = valid_set[i : i + batch_size]
            loss, _, _ = contrastive_batch(model, batch)
            losses.append(loss.item())
            weights.append(len(batch))
    top1, mrr = retrieval_metrics(model, valid_set, batch_size)
    model.train()
    valid_loss = sum(x * w for x, w in zip(losses, weights, strict=True)) / sum(weights)
    return {"valid_loss": valid_loss, "valid_accuracy_at_1": top1, "valid_mrr_at_10": mrr}


def token_total(model: Any, examples: list[PairExample]) -> int:
    """Tokens one epoch reads (special tokens included, each text cut at the model's max_seq_length)."""
    texts = [t for e in examples for t in (e.query, e.positive, e.negative) if t is not None]
    ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    return sum(len(x) for x in ids)


def train_encoder(model: Any, train_set: list[PairExample], valid_set: list[PairExample], spec: EncoderTrainSpec,
                  hooks: TrainingHooks, resume: Resume | None = None) -> tuple[bytes, int]:
    """Train every weight of `model` (a SentenceTransformer, modified in place). AdamW with weight decay 0.01,
    the learning rate decaying linearly to 0 over the run, gradients clipped at 1.0 (sentence-transformers'
    own recipe). Returns the final weights as safetensors bytes, and the trained tokens."""
    import torch

    torch.manual_seed(spec.seed)
    if resume is not None:
        load_weights(model, resume.adapter)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=WEIGHT_DECAY)
    per_epoch = steps_per_epoch(len(train_set), spec.batch_size)
    total_steps = per_epoch * spec.n_epochs
    step = resume.step if resume else 0
    start_epoch = resume.epoch if resume else 0
    # Linear decay by the global step, so a resumed run continues the schedule where the checkpoint left it.
    start = step
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1.0 - (start + s) / total_steps))
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, spec.n_epochs):
        for b, indices in enumerate(epoch_batches(len(train_set), spec.batch_size, spec.seed, epoch)):
            if hooks.should_stop():
                raise Stopped()
            loss, accuracy, _ = contrastive_batch(model, [train_set[i] for i in indices])
            optimizer_step(loss, params, optimizer)
            schedule.step()
            step += 1
            metrics = {"step": step, "total_steps": total_steps, "train_loss": loss.item(),
                       "train_accuracy": accuracy}
            if b == per_epoch - 1 and valid_set:
                metrics.update(_validate(model, valid_set, spec.batch_size))
            hooks.on_step(metrics)
        if hooks.should_stop():
            raise Stopped()
        hooks.on_epoch(epoch + 1, step, dump_weights(model), metrics)
    model.eval()
    return dump_weights(model), token_total(model, train_set) * spec.n_epochs
