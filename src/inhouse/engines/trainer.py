"""The trainer: a fine-tuning run in this process, on a causal LM (LoRA or every weight) or an embedding model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from inhouse.config import FineTuning
from inhouse.engines.causal.adapters import attach_adapter, is_full, load_full
from inhouse.engines.causal.data import encode_preference, encode_sft
from inhouse.engines.causal.loading import load_model, load_tokenizer, model_dir
from inhouse.engines.causal.training import TrainSpec, train
from inhouse.engines.embeddings.training import EncoderTrainSpec, PairExample, load_trainable, train_encoder
from inhouse.engines.imports import import_libraries
from inhouse.engines.locate import require_model
from inhouse.engines.training import Resume, TrainingHooks, TrainingRun


class LocalTrainer:
    """Loads the base model from the models directory (causal LMs) or its own path (embedding models) and trains
    it on the calling thread, with the settings' threads, lengths, ranks and base learning rates."""

    def __init__(self, settings: FineTuning, models_dir: Path) -> None:
        self.cfg = settings  # read at each run: a Ray node sets its threads after start-up
        self.models_dir = models_dir

    def train(self, run: TrainingRun, hooks: TrainingHooks, resume: Resume | None) -> tuple[bytes, int]:
        if run.kind == "embedding":
            return self._train_encoder(run, hooks, resume)
        return self._train_causal(run, hooks, resume)

    def _train_causal(self, run: TrainingRun, hooks: TrainingHooks, resume: Resume | None) -> tuple[bytes, int]:
        import_libraries("torch", "transformers", "peft")
        path = model_dir(run.base, self.models_dir)
        tok = load_tokenizer(path)
        model = load_model(path, self.cfg.threads)
        if run.parent is not None:
            # Continuing a fine-tune: start from its weights (its adapter merged into the base).
            if is_full(run.parent):
                load_full(model, run.parent)
            else:
                model = attach_adapter(model, "parent", run.parent).merge_and_unload()
        max_len = self.cfg.max_length
        train_ex: list[Any]
        valid_ex: list[Any]
        method: Literal["supervised", "dpo"] = "dpo" if run.method == "dpo" else "supervised"
        if method == "dpo":
            train_ex = [encode_preference(tok, e, max_len) for e in run.examples]
            valid_ex = [encode_preference(tok, e, max_len) for e in run.validation]
        else:
            train_ex = [encode_sft(tok, e, max_len) for e in run.examples]
            valid_ex = [encode_sft(tok, e, max_len) for e in run.validation]
        base_lr = self.cfg.full_base_learning_rate if run.full else self.cfg.base_learning_rate
        spec = TrainSpec(method=method, n_epochs=run.n_epochs, batch_size=run.batch_size,
                         learning_rate=base_lr * run.learning_rate_multiplier, beta=run.beta, seed=run.seed,
                         lora_rank=self.cfg.lora_rank, full=run.full)
        return train(model, int(tok.pad_token_id), train_ex, valid_ex, spec, hooks, resume)

    def _train_encoder(self, run: TrainingRun, hooks: TrainingHooks, resume: Resume | None) -> tuple[bytes, int]:
        import_libraries("torch", "transformers", "sentence_transformers")
        model = load_trainable(require_model(run.base), self.cfg.threads, run.parent)
        spec = EncoderTrainSpec(n_epochs=run.n_epochs, batch_size=run.batch_size, seed=run.seed,
                                learning_rate=self.cfg.embedding_base_learning_rate * run.learning_rate_multiplier)

        def pairs(examples: list[dict[str, Any]]) -> list[PairExample]:
            return [PairExample(e["query"], e["positive"], e.get("negative")) for e in examples]

        return train_encoder(model, pairs(run.examples), pairs(run.validation), spec, hooks, resume)
