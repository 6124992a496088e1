"""The fast decoder against Hugging Face's forward: the same logits and cache for decode steps of one row and of
padded rows at their own positions, and for prompts prefilled whole or in chunks, with and without LoRA adapters;
models it does not cover keep the model's own forward."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from inhouse.engines.causal import fast_decode
from inhouse.engines.causal.generation import CausalEngine
from inhouse.engines.causal.scheduler import _pad_left
from tests.engines.test_batched_generation import WORDS, greedy, one_by_one, prompt
from tests.engines.test_multi_lora import make_adapter
from tests.llm import scrambled


def batch(engine: CausalEngine, prompts: list[list[int]], adapters: list[Any]) -> tuple[Any, Any, Any, Any]:
    """The prompts prefilled by the model (each with its adapter), left-padded into one cache as the scheduler
    joins rows: the cache, its mask, each row's next position and next token."""
    import torch

    width = max(len(p) for p in prompts)
    caches, nexts = [], []
    for p, adapter in zip(prompts, adapters, strict=True):
        engine._use([adapter])
        out = engine.model(input_ids=torch.tensor([p]), use_cache=True)
        _pad_left(out.cache, width - len(p))
        caches.append(out.cache)
        nexts.append(int(out.logits[0, -1].argmax()))
    cache = caches[0]
    for other in caches[1:]:
        for mine, theirs in zip(cache.layers, other.layers, strict=True):
            mine.keys = torch.cat([mine.keys, theirs.keys])
            mine.values = torch.cat([mine.values, theirs.values])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return cache, mask, torch.tensor([len(p) for p in prompts]), torch.tensor(nexts)


def hf_steps(engine: CausalEngine, cache: Any, mask: Any, pos: Any, nxt: Any, steps: int) -> list[Any]:
    import torch

    out = []
    for _ in range(steps):
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        logits = engine.model(input_ids=nxt[:, None], attention_mask=None if bool(mask.all()) else mask,
                              position_ids=pos[:, None], cache=cache, use_cache=True).logits[:, -1]
        out.append(logits.clone())
        pos, nxt = pos + 1, logits.argmax(-1)
    return out


def fast_steps(engine: CausalEngine, adapters: list[Any], cache: Any, mask: Any, pos: Any, nxt: Any,
               steps: int) -> list[Any]:
    import torch

    out = []
    for _ in range(steps):
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        logits, cache = engine.forward(nxt[:, None], None if bool(mask.all()) else mask, pos[:, None], cache, adapters)
        out.append(logits)
        pos, nxt = pos + 1, logits.argmax(-1)
    return out


@pytest.mark.parametrize("words", [[WORDS[0]], [WORDS[1], WORDS[4], WORDS[2]]], ids=["one row", "padded rows"])
@pytest.mark.parametrize("with_adapters", [False, True], ids=["base", "adapters"])
def test_decode_steps_match_the_models_forward(tiny_llm: Path, words: list[str], with_adapters: bool) -> None:
    import torch

    engine = CausalEngine(tiny_llm, 1)
    scrambled(engine.model)
    assert fast_decode.supports(engine.model)
    try:
        prompts = [prompt(engine, w) for w in words]
        adapters: list[Any] = [None] * len(prompts)
        if with_adapters:
            a = engine.add_adapter("a", make_adapter(tiny_llm, 4, 1))
            b = engine.add_adapter("b", make_adapter(tiny_llm, 8, 2))
            adapters = [a, b, None][:len(prompts)]
        with torch.inference_mode():
            state = batch(engine, prompts, adapters)
            engine._use(adapters)  # the model's own forward runs the rows' adapters too
            expected = hf_steps(engine, copy.deepcopy(state[0]), *state[1:], steps=6)
            got = fast_steps(engine, adapters, *state, steps=6)
        assert engine._fast is not None  # the steps ran through the fast decoder
        for want, have in zip(expected, got, strict=True):
            torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4)
    finally:
        engine.close()


@pytest.mark.parametrize("chunks", [1, 3], ids=["whole prompt", "in chunks"])
@pytest.mark.parametrize("with_adapter", [False, True], ids=["base", "adapter"])
def test_prefill_matches_the_models_forward(tiny_llm: Path, chunks: int, with_adapter: bool) -> None:
    import torch

    engine = CausalEngine(tiny_llm, 1)
    scrambled(engine.model)
    try:
        ids = prompt(engine, " ".join(WORDS))
        adapter = engine.add_adapter("a", make_adapter(tiny_llm, 4, 1)) if with_adapter else None
        with torch.inference_mode():
            engine._use([adapter])
            want = engine.model(input_ids=torch.tensor([ids]), use_cache=True)
            cache, size = None, -(-len(ids) // chunks)
            for start in range(0, len(ids), size):  # as the scheduler feeds a long prompt
                logits, cache = engine.forward(torch.tensor([ids[start:start + size]]), None, None, cache, [adapter])
            assert engine._fast is not None and cache is not None  # the prompt ran through the fast decoder
            torch.testing.assert_close(logits, want.logits[:, -1], rtol=1e-4, atol=1e-4)
            for mine, theirs in zip(cache.layers, want.cache.layers, strict=True):
                torch.testing.assert_close(mine.keys, theirs.keys, rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(mine.values, theirs.values, rtol=1e-4, atol=1e-4)
            # Decode steps go on from the fast prefill's cache as from the model's.
            nxt, pos, mask = logits.argmax(-1), torch.tensor([len(ids)]), torch.ones((1, len(ids)), dtype=torch.long)
            expected = hf_steps(engine, want.cache, mask, pos, nxt, steps=4)
            got = fast_steps(engine, [adapter], cache, mask, pos, nxt, steps=4)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    finally:
        engine.close()


def test_a_model_the_fast_decoder_does_not_cover_keeps_its_own_forward(tiny_llm: Path, tmp_path: Path) -> None:
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    path = tmp_path / "biased"
    shutil.copytree(tiny_llm, path)
    config = AutoConfig.from_pretrained(path)
    config.attention_bias = True  # q/k/v/o biases: not a model the decoder computes
    AutoModelForCausalLM.from_config(config).save_pretrained(path, safe_serialization=True)
    engine = CausalEngine(path, 1)
    scrambled(engine.model)
    try:
        assert not fast_decode.supports(engine.model)
        rows = [(prompt(engine, w), greedy(6)) for w in WORDS[:3]]
        assert engine.generate_batch(rows, None, background=False) == one_by_one(engine, rows)
        assert engine._fast is None
    finally:
        engine.close()
