"""Fine-tuning an embedding model through the SDK on a tiny encoder built in the test: a retrieval task the
base model cannot do (queries that name catalogue items by their codes), the lifecycle, serving the result
from /v1/embeddings (ONNX-exported on first use) exactly as the trained checkpoint computes it, checkpoints,
pause/resume, continuing a fine-tune, and the requests that are refused."""

from __future__ import annotations

import csv
import io
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from inhouse.config import ModelEntry
from inhouse.services.blob_keys import checkpoint_key
from inhouse.storage.base import read_all
from tests.api.test_embeddings import tiny_encoder  # noqa: F401 - the session's tiny encoder fixture
from tests.conftest import make_client
from tests.harness import ServerHandle, start_server
from tests.llm import all_events, supervised, wait_for

GREEK = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
         "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega")
COLOURS, SHAPES = ("red", "green", "blue"), ("circle", "square", "star")
TRAIN_TEMPLATES = ("{c}", "the {c}", "{c} of the", "a {c} in", "to {c}", "{c} and the")
HELD_OUT_TEMPLATES = ("{c} is on", "with the {c}", "in a {c}")


def catalogue(n: int = 16, seed: int = 3) -> list[tuple[str, str]]:
    """(code, description) per item: codes are pairs of Greek letters, descriptions scenes of shapes: no word
    in common, so only a model that has learnt the catalogue can match them."""
    rng = random.Random(seed)
    codes: list[str] = []
    while len(codes) < n:
        code = " ".join(rng.sample(GREEK, 2))
        if code not in codes:
            codes.append(code)
    scenes: list[str] = []
    while len(scenes) < n:
        scene = f"{rng.choice(COLOURS)} {rng.choice(SHAPES)} on the {rng.choice(COLOURS)} {rng.choice(SHAPES)}"
        if scene not in scenes:
            scenes.append(scene)
    return list(zip(codes, scenes, strict=True))


def pairs(items: list[tuple[str, str]], templates: tuple[str, ...], negatives: bool = False) -> list[dict[str, str]]:
    out = []
    for i, (code, scene) in enumerate(items):
        for t in templates:
            row = {"query": t.format(c=code), "positive": scene}
            if negatives:
                row["negative"] = items[(i + 1) % len(items)][1]
            out.append(row)
    return out


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


def upload(client: openai.OpenAI, rows: list[dict[str, Any]], name: str = "pairs.jsonl") -> str:
    return client.files.create(file=(name, jsonl(rows)), purpose="fine-tune").id


def accuracy_at_1(client: openai.OpenAI, model: str, items: list[tuple[str, str]],
                  templates: tuple[str, ...]) -> float:
    """Held-out queries against every description, through /v1/embeddings."""
    docs = [scene for _, scene in items]
    d = vectors(client, model, docs)
    hits = total = 0
    for gold, (code, _) in enumerate(items):
        q = vectors(client, model, [t.format(c=code) for t in templates])
        hits += int(((q @ d.T).argmax(axis=1) == gold).sum())
        total += len(templates)
    return hits / total


def vectors(client: openai.OpenAI, model: str, texts: list[str]) -> np.ndarray:
    r = client.embeddings.create(model=model, input=texts, encoding_format="float")
    return np.asarray([e.embedding for e in r.data], dtype=np.float32)


@pytest.fixture
def enc_server(settings_factory: Any, tiny_encoder: Path) -> Iterator[ServerHandle]:  # noqa: F811
    settings = settings_factory(models=[ModelEntry(id="tiny-encoder", kind="embedding", path=str(tiny_encoder),
                                                   aliases=["text-embedding-3-small"])])
    settings.embeddings.backend = "onnx"  # a fine-tune is exported on first use like any model
    ft = settings.fine_tuning
    ft.heartbeat_seconds, ft.poll_seconds, ft.lease_seconds = 0.2, 0.1, 5
    with start_server(settings) as server:
        yield server


@pytest.fixture
def enc(enc_server: ServerHandle) -> openai.OpenAI:
    # Lenient: the SDK's strict types have no `paused` status; every answer is still checked against the spec.
    return make_client(enc_server.base_url, strict=False)


# 3e-3 (the base rate 2.5e-5 x 120): the tiny model starts from random weights. 96 pairs / 8 = 12 steps an epoch.
HP = {"n_epochs": 12, "batch_size": 8, "learning_rate_multiplier": 120}
PER_EPOCH = 12
STEPS = PER_EPOCH * 12


def test_fine_tune_beats_base_on_held_out_queries(enc_server: ServerHandle, enc: openai.OpenAI,
                                                  tiny_encoder: Path) -> None:  # noqa: F811
    items = catalogue()
    training = upload(enc, pairs(items, TRAIN_TEMPLATES))
    validation = upload(enc, pairs(items, HELD_OUT_TEMPLATES), "held-out.jsonl")
    base = accuracy_at_1(enc, "text-embedding-3-small", items, HELD_OUT_TEMPLATES)

    job = enc.fine_tuning.jobs.create(model="text-embedding-3-small", training_file=training,
                                      validation_file=validation, suffix="codes", seed=3, method=supervised(**HP))
    assert job.status == "validating_files"
    done = wait_for(enc, job.id)
    assert done.status == "succeeded", done.error
    name = done.fine_tuned_model
    assert name == f"ft:text-embedding-3-small:default:codes:{job.id[-8:]}"
    assert done.method.supervised.hyperparameters.batch_size == 8

    tuned = accuracy_at_1(enc, name, items, HELD_OUT_TEMPLATES)
    assert base <= 0.2, base  # the base model cannot match codes it has never seen (chance is 1/16)
    assert tuned >= base + 0.30, (base, tuned)

    # Events: one metrics event per step, the validation's retrieval metrics at each epoch's end.
    events = all_events(enc, job.id)
    metrics = [e.data for e in events if e.type == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    ends = [m for m in metrics if "valid_accuracy_at_1" in m]
    assert [m["step"] for m in ends] == list(range(PER_EPOCH, STEPS + 1, PER_EPOCH))
    assert ends[-1]["valid_accuracy_at_1"] == pytest.approx(tuned, abs=1e-6)  # the same task, same model
    assert ends[-1]["valid_mrr_at_10"] >= ends[-1]["valid_accuracy_at_1"]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    messages = [e.message for e in events]
    assert any("accuracy@1=" in m and "MRR@10=" in m for m in messages)
    assert messages[-2:] == [f"New fine-tuned model created: {name}", "The job has successfully completed"]

    # trained_tokens: every text of every pair, as the model's tokenizer reads it, once per epoch.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    texts = [t for row in pairs(items, TRAIN_TEMPLATES) for t in (row["query"], row["positive"])]
    assert done.trained_tokens == 12 * sum(len(x) for x in tok(texts)["input_ids"])

    result = list(csv.reader(io.StringIO(enc.files.content(done.result_files[0]).read().decode())))
    assert result[0] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy_at_1",
                         "valid_mrr_at_10"]
    assert len(result) == STEPS + 1 and result[PER_EPOCH][4] != "" and result[1][4] == ""

    # /v1/models lists it; checkpoints serve; the vectors are the checkpoint's own (sentence-transformers).
    assert name in [m.id for m in enc.models.list()]
    ckpts = list(enc.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in ckpts] == [STEPS, STEPS - PER_EPOCH, STEPS - 2 * PER_EPOCH]
    assert ckpts[0].fine_tuned_model_checkpoint == name
    assert ckpts[0].metrics.valid_loss is not None
    from inhouse.engines.embeddings.training import load_trainable

    # The checkpoint's weights as the blob store holds them (a local directory, or S3).
    weights = enc_server.call(read_all(enc_server.services.blobs, checkpoint_key(ckpts[0].id)))
    model = load_trainable(tiny_encoder, 1, weights)
    texts = ["zeta omicron", "red circle on the blue star", "alpha beta gamma delta"]
    own = model.encode(texts, normalize_embeddings=True)
    served = vectors(enc, name, texts)
    assert (served * own).sum(axis=1).min() >= 0.9999
    # backend "onnx" has no fallback: the fine-tune was exported on first use, beside the base model's export.
    assert len(list((enc_server.settings.data_dir / "cache" / "onnx").iterdir())) == 2
    older = ckpts[1].fine_tuned_model_checkpoint
    assert older.endswith(f":ckpt-step-{STEPS - PER_EPOCH}")
    older_vectors = vectors(enc, older, texts)
    assert not np.allclose(older_vectors, served)

    # Everything the base model's route does: dimensions (renormalised), base64, token ids.
    short = enc.embeddings.create(model=name, input=texts[:1], dimensions=8, encoding_format="float").data[0]
    assert len(short.embedding) == 8 and np.linalg.norm(short.embedding) == pytest.approx(1.0, abs=1e-5)
    b64 = make_client(enc_server.base_url, strict=False).embeddings.create(model=name, input=texts[:1])
    assert np.allclose(np.asarray(b64.data[0].embedding), served[0], atol=1e-6)
    by_ids = enc.embeddings.create(model=name, input=[[15339, 1917]], encoding_format="float")
    assert len(by_ids.data[0].embedding) == 32

    # Deleting it ends its serving (an earlier checkpoint stays servable, as a chat fine-tune's does).
    assert enc.models.delete(name).deleted
    with pytest.raises(openai.NotFoundError):
        enc.embeddings.create(model=name, input="zeta", encoding_format="float")
    assert vectors(enc, older, texts[:1]).shape == (1, 32)
    with pytest.raises(openai.NotFoundError):
        enc.chat.completions.create(model=older, messages=[{"role": "user", "content": "hi"}])


def test_hard_negatives_and_continuing_a_fine_tune(enc: openai.OpenAI) -> None:
    items = catalogue()
    training = upload(enc, pairs(items, TRAIN_TEMPLATES, negatives=True))
    first = wait_for(enc, enc.fine_tuning.jobs.create(
        model="text-embedding-3-small", training_file=training, seed=1,
        method=supervised(n_epochs=2, batch_size=8, learning_rate_multiplier=120)).id)
    assert first.status == "succeeded", first.error
    assert first.trained_tokens is not None and first.trained_tokens > 0
    second = wait_for(enc, enc.fine_tuning.jobs.create(
        model=first.fine_tuned_model, training_file=training, seed=1, suffix="more",
        method=supervised(n_epochs=8, batch_size=8, learning_rate_multiplier=120)).id)
    assert second.status == "succeeded", second.error
    assert second.fine_tuned_model.startswith("ft:text-embedding-3-small:default:more:")
    # It continued from the first fine-tune: its first loss is the first job's last level, not the base's.
    loss = [[e.data["train_loss"] for e in all_events(enc, j.id) if e.type == "metrics"] for j in (first, second)]
    assert loss[1][0] < loss[0][0]
    assert accuracy_at_1(enc, second.fine_tuned_model, items, HELD_OUT_TEMPLATES) >= 0.4


def test_pause_resume_logs_every_step_once(enc: openai.OpenAI) -> None:
    items = catalogue()
    job = enc.fine_tuning.jobs.create(model="text-embedding-3-small", seed=2,
                                      training_file=upload(enc, pairs(items, TRAIN_TEMPLATES) * 4),
                                      method=supervised(n_epochs=6, batch_size=8, learning_rate_multiplier=100))
    deadline = time.monotonic() + 60
    while not list(enc.fine_tuning.jobs.checkpoints.list(job.id)):
        assert time.monotonic() < deadline, "no checkpoint came"
        time.sleep(0.05)
    assert enc.fine_tuning.jobs.pause(job.id).status == "paused"
    assert enc.fine_tuning.jobs.resume(job.id).status == "queued"
    done = wait_for(enc, job.id)
    assert done.status == "succeeded", done.error
    events = all_events(enc, job.id)
    assert [e.data["step"] for e in events if e.type == "metrics"] == list(range(1, 48 * 6 + 1))
    assert any(e.message.startswith("Fine-tuning job resumed from the checkpoint") for e in events)


def test_wrong_files_and_requests(enc_server: ServerHandle, enc: openai.OpenAI) -> None:
    items = catalogue()
    good = upload(enc, pairs(items, TRAIN_TEMPLATES))
    chat = upload(enc, [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}] * 10)
    failed = wait_for(enc, enc.fine_tuning.jobs.create(model="text-embedding-3-small", training_file=chat).id)
    assert failed.status == "failed" and failed.error.code == "invalid_training_file"
    assert "pairs" in failed.error.message
    few = upload(enc, pairs(items[:3], TRAIN_TEMPLATES[:3]))
    failed = wait_for(enc, enc.fine_tuning.jobs.create(model="text-embedding-3-small", training_file=few).id)
    assert failed.error.code == "invalid_n_examples"
    bad = upload(enc, [*pairs(items, TRAIN_TEMPLATES[:1]), {"query": "x"}])
    failed = wait_for(enc, enc.fine_tuning.jobs.create(model="text-embedding-3-small", training_file=bad).id)
    assert failed.error.code == "invalid_training_file" and "Example 17" in failed.error.message
    assert "'positive'" in failed.error.message

    with pytest.raises(openai.BadRequestError) as dpo:
        enc.fine_tuning.jobs.create(model="text-embedding-3-small", training_file=good,
                                    method={"type": "dpo", "dpo": {"hyperparameters": {}}})
    assert dpo.value.code == "unsupported_method"
    with pytest.raises(openai.BadRequestError) as one:
        enc.fine_tuning.jobs.create(model="text-embedding-3-small", training_file=good,
                                    method=supervised(batch_size=1))
    assert "batch_size" in str(one.value.param)
    with pytest.raises(openai.BadRequestError):
        enc.fine_tuning.jobs.create(model="text-embedding-3-small", training_file=good,
                                    extra_body={"inhouse": {"full_fine_tuning": False}})
    with pytest.raises(openai.NotFoundError):
        enc.embeddings.create(model="ft:text-embedding-3-small:default::nothere0", input="x")
