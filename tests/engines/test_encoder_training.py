"""The embedding trainer's pieces on a tiny encoder: its loss is sentence-transformers' own
MultipleNegativesRankingLoss, duplicates are never negatives, runs are seeded, and a fine-tune's directory
holds the base's files with only the weights replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inhouse.engines.embeddings.fine_tuned import WEIGHTS, write_model_dir
from inhouse.engines.embeddings.training import (
    EncoderTrainSpec,
    PairExample,
    contrastive_batch,
    dump_weights,
    load_trainable,
    train_encoder,
)
from tests.engines.tiny import build_tiny_encoder

BATCH = [PairExample("alpha beta", "red circle"), PairExample("gamma delta", "blue square", "green star"),
         PairExample("zeta eta", "green circle on the star")]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("enc") / "tiny")


class Hooks:
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.epochs: list[int] = []

    def on_step(self, metrics: dict[str, Any]) -> None:
        self.losses.append(metrics["train_loss"])

    def on_epoch(self, epoch: int, step: int, adapter: bytes, metrics: dict[str, Any]) -> None:
        self.epochs.append(step)

    def should_stop(self) -> bool:
        return False


def test_loss_is_sentence_transformers_mnrl(encoder: Path) -> None:
    import torch
    try:  # sentence-transformers 6 moved the losses
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    model = load_trainable(encoder, 1).eval()
    with torch.no_grad():
        ours, accuracy, tokens = contrastive_batch(model, BATCH)
        # MNRL takes whole columns: give every example a negative (ours allows them per example).
        full = [PairExample(e.query, e.positive, e.negative or "omega") for e in BATCH]
        ours_full, _, _ = contrastive_batch(model, full)
        columns = [[e.query for e in full], [e.positive for e in full], [e.negative or "" for e in full]]
        features = [model.preprocess(c) for c in columns]
        theirs = MultipleNegativesRankingLoss(model)(features, None)
    assert float(ours_full) == pytest.approx(float(theirs), rel=1e-5)
    assert float(ours) != pytest.approx(float(ours_full))  # the negatives count
    assert 0.0 <= accuracy <= 1.0 and tokens > 0


def test_a_duplicate_positive_is_not_a_negative(encoder: Path) -> None:
    import torch

    model = load_trainable(encoder, 1).eval()
    twice = [PairExample("alpha beta", "red circle"), PairExample("beta alpha", "red circle")]
    with torch.no_grad():
        loss, accuracy, _ = contrastive_batch(model, twice)
    # Each query's only other document is its own positive again: masked, so nothing is left to confuse.
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and accuracy == 1.0


def test_training_is_seeded_and_changes_the_weights(encoder: Path) -> None:
    data = [PairExample(f"alpha {w}", f"red {w} circle") for w in ("beta", "gamma", "delta", "zeta", "eta", "mu")]
    spec = EncoderTrainSpec(n_epochs=2, batch_size=3, learning_rate=1e-3, seed=4)
    runs = []
    for _ in range(2):
        hooks = Hooks()
        model = load_trainable(encoder, 1)
        before = dump_weights(model)
        weights, tokens = train_encoder(model, data, [], spec, hooks)
        runs.append((hooks.losses, weights))
        assert hooks.epochs == [2, 4] and len(hooks.losses) == 4 and tokens > 0
        assert weights != before
    assert runs[0] == runs[1]
    other = Hooks()
    train_encoder(load_trainable(encoder, 1), data, [], EncoderTrainSpec(2, 3, 1e-3, seed=5), other)
    assert other.losses != runs[0][0]


def test_fine_tuned_directory(encoder: Path, tmp_path: Path) -> None:
    (encoder / "onnx").mkdir(exist_ok=True)
    (encoder / "onnx" / "model.onnx").write_bytes(b"not ours")
    weights = dump_weights(load_trainable(encoder, 1))
    target = write_model_dir(encoder, weights, tmp_path / "ft")
    names = sorted(p.name for p in target.rglob("*"))
    assert "onnx" not in names and (target / WEIGHTS).read_bytes() == weights
    assert (target / "modules.json").is_file() and (target / "1_Pooling" / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["ft"]  # no temp left behind
    # A second writer finds it whole and keeps it.
    assert write_model_dir(encoder, b"other", tmp_path / "ft") == target
    assert (target / WEIGHTS).read_bytes() == weights
