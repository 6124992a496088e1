"""Parameters this server cannot honour are refused with a 400 naming them, never stored or accepted and
ignored: fine-tuning `integrations` (no Weights & Biases, no integration runs) and images `moderation` (no
moderation model runs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from inhouse.config import ModelEntry
from tests.conftest import make_client
from tests.engines.tiny_sd import build_tiny_sd
from tests.harness import start_server
from tests.llm import pong_file

WANDB = {"type": "wandb", "wandb": {"project": "my-project", "tags": ["a"]}}


def bad_request(call: Any, **kwargs: Any) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as exc:
        call(**kwargs)
    return exc.value


# -- fine-tuning integrations ---------------------------------------------------------------------------------
@pytest.fixture
def no_worker(settings_factory: Any) -> Iterator[openai.OpenAI]:
    # No worker: a job that is wrongly accepted stays queued instead of training the default chat model.
    with start_server(settings_factory(run_worker=False)) as server:
        client = make_client(server.base_url, strict=False)
        yield client
        client.close()


@pytest.mark.parametrize("integrations", [
    [WANDB],
    [WANDB] * 5,
    [{"type": "wandb", "wandb": {"project": "p" * 10_000}}],  # oversized: refused, and not echoed
    [{"type": "slack"}],
])
def test_fine_tuning_refuses_integrations(no_worker: openai.OpenAI, integrations: list[Any]) -> None:
    training = pong_file(no_worker)
    err = bad_request(no_worker.fine_tuning.jobs.create, model="gpt-4o-mini", training_file=training,
                      integrations=integrations)
    assert err.param == "integrations" and err.code == "unsupported_parameter"
    assert "does not run integrations" in err.message and "`integrations`" in err.message
    assert len(err.message) < 200
    assert no_worker.fine_tuning.jobs.list().data == []  # nothing stored


def test_fine_tuning_integrations_must_be_a_list(no_worker: openai.OpenAI) -> None:
    err = bad_request(no_worker.fine_tuning.jobs.create, model="gpt-4o-mini", training_file=pong_file(no_worker),
                      integrations="wandb")
    assert err.param == "integrations"


@pytest.mark.parametrize("integrations", [None, []])
def test_fine_tuning_accepts_no_integrations(no_worker: openai.OpenAI, integrations: Any) -> None:
    extra = {} if integrations is None else {"integrations": integrations}
    job = no_worker.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(no_worker), **extra)
    assert not job.integrations  # null or [], never an integration that does not run
    assert not no_worker.fine_tuning.jobs.retrieve(job.id).integrations


# -- images moderation ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture
def img(settings_factory: Any, tiny_sd: Path) -> Iterator[openai.OpenAI]:
    settings = settings_factory(models=[ModelEntry(id="tiny-sd", kind="image", path=str(tiny_sd),
                                                   aliases=["dall-e-2", "dall-e-3", "gpt-image-1"])])
    s = settings.images
    s.steps_low, s.steps_standard, s.steps_hd, s.max_generate_side = 1, 1, 1, 64
    with start_server(settings) as server:
        client = make_client(server.base_url)
        yield client
        client.close()


@pytest.mark.parametrize(("model", "moderation"), [
    ("gpt-image-1", "auto"),  # the spec's default, sent explicitly
    ("gpt-image-1", "low"),
    ("dall-e-2", "auto"),
    ("dall-e-3", "low"),
])
def test_images_refuse_moderation(img: openai.OpenAI, model: str, moderation: Any) -> None:
    err = bad_request(img.images.generate, model=model, prompt="a red circle", size="1024x1024",
                      moderation=moderation)
    assert err.param == "moderation" and err.code == "unsupported_parameter"
    assert "`moderation`" in err.message and "no content moderation" in err.message


def test_images_without_moderation_still_generate(img: openai.OpenAI) -> None:
    out = img.images.generate(model="gpt-image-1", prompt="a red circle", size="1024x1024", quality="low")
    assert out.data and out.data[0].b64_json
    out = img.images.generate(model="dall-e-2", prompt="a red circle", size="256x256", response_format="b64_json",
                              extra_body={"moderation": None})  # null is the same as absent
    assert out.data and out.data[0].b64_json
