"""Continuous batching with many adapters on the tiny chat model: rows of the base model and of several LoRA
adapters (of different ranks) decode in one batch and each answers what peft answers for its adapter alone;
rows join a running batch, the n choices of a request share one prefill, and a cancelled row leaves at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from inhouse.engines.causal.generation import CausalEngine, Generated
from tests.engines.conftest import Watch
from tests.engines.test_batched_generation import WORDS, greedy, prompt, sampled
from tests.llm import scrambled


def make_adapter(tiny_llm: Path, rank: int, seed: int) -> bytes:
    """A LoRA adapter as fine-tuning writes it, with weights that change the answers."""
    import torch
    from peft import get_peft_model

    from inhouse.engines.causal.adapters import dump_adapter, lora_config
    from inhouse.engines.causal.loading import load_model

    lora = get_peft_model(load_model(tiny_llm, 1), lora_config(rank), adapter_name="a")
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:  # lora_B is zero at creation: an adapter that changes nothing
                p.normal_(0, 0.3)
    return dump_adapter(lora, "a", rank)


def peft_answer(tiny_llm: Path, weights: bytes | None, ids: list[int], tokens: int) -> list[int]:
    """The reference: the scrambled base with the adapter attached by peft, through Hugging Face generate."""
    import torch

    from inhouse.engines.causal.adapters import attach_adapter
    from inhouse.engines.causal.loading import load_model

    model = scrambled(load_model(tiny_llm, 1))
    if weights is not None:
        model = attach_adapter(model, "a", weights)
    t = torch.tensor([ids])
    with torch.inference_mode():
        seq = model.generate(input_ids=t, attention_mask=torch.ones_like(t), do_sample=False, max_new_tokens=tokens,
                             pad_token_id=0)
    out: list[int] = seq[0, len(ids):].tolist()
    return out


@pytest.fixture(scope="module")
def adapters(tiny_llm: Path) -> dict[str, bytes]:
    return {"ft:a": make_adapter(tiny_llm, 4, 1), "ft:b": make_adapter(tiny_llm, 8, 2)}


class Collect:
    """Sinks that keep each row's deltas and result."""

    def __init__(self) -> None:
        self.deltas: dict[int, list[str]] = {}
        self.results: dict[int, Generated] = {}
        self.done = threading.Semaphore(0)

    def sink(self, i: int) -> Any:
        self.deltas[i] = []

        def put(text: str, result: Generated | None, error: BaseException | None) -> None:
            assert error is None, error
            if text:
                self.deltas[i].append(text)
            if result is not None:
                self.results[i] = result
                self.done.release()
        return put


def test_rows_of_different_adapters_share_a_batch_and_each_answers_as_peft_does(
        tiny_llm: Path, engine: CausalEngine, adapters: dict[str, bytes]) -> None:
    lora = {name: engine.add_adapter(name, data) for name, data in adapters.items()}
    plan = [(WORDS[0], None), (WORDS[1], "ft:a"), (WORDS[2], "ft:b"), (WORDS[3], "ft:a"), (WORDS[0], "ft:b"),
            (WORDS[5], None)]
    widths: list[int] = []
    hook = Watch(engine, lambda ids: widths.append(ids.shape[0]))
    got = Collect()
    try:
        engine.submit([engine.row(prompt(engine, w), greedy(10), None if a is None else lora[a], got.sink(i),
                                  stream=True) for i, (w, a) in enumerate(plan)])
        for _ in plan:
            assert got.done.acquire(timeout=60)
    finally:
        hook.remove()
    assert max(widths) == len(plan)  # all six rows in one decode step
    for i, (w, a) in enumerate(plan):
        expected = peft_answer(tiny_llm, None if a is None else adapters[a], prompt(engine, w), 10)
        assert got.results[i].text == engine.text(expected), (i, a)
        assert "".join(got.deltas[i]) == got.results[i].text  # the stream adds up to the answer
    texts = {got.results[i].text for i in range(len(plan))}
    assert len(texts) == len(plan)  # each adapter really changed its rows' answers


def test_an_adapter_file_that_does_not_fit_the_model_is_refused(engine: CausalEngine) -> None:
    import torch
    from safetensors.torch import save

    from inhouse.engines.causal import multi_lora

    bad = bytes(save({"base_model.model.model.nowhere.lora_A.weight": torch.zeros(4, 8),
                      "base_model.model.model.nowhere.lora_B.weight": torch.zeros(8, 4)},
                     metadata={"format": "inhouse-lora", "rank": "4"}))
    assert multi_lora.parse(bad, torch.float32).rank == 4  # a well-formed file, for another model
    with pytest.raises(ValueError, match="nowhere"):
        engine.generate(prompt(engine, "x"), greedy(2), 1, ("bad", lambda: bad))
    assert engine.generate(prompt(engine, "x"), greedy(2), 1, None)[0].tokens == 2  # the engine still serves


def test_a_short_request_joins_a_running_one_and_ends_first(engine: CausalEngine) -> None:
    expected = engine.generate_exact(prompt(engine, WORDS[0]), greedy(3))
    long_row = Collect()
    engine.submit([engine.row(prompt(engine, WORDS[3]), greedy(400), None, long_row.sink(0), stream=True)])
    deadline = time.monotonic() + 30
    while not long_row.deltas[0]:  # the long row is decoding
        assert time.monotonic() < deadline
        time.sleep(0.005)
    short = engine.generate(prompt(engine, WORDS[0]), greedy(3), 1, None)[0]
    assert 0 not in long_row.results  # the short one did not wait for the long one
    assert short == expected
    assert long_row.done.acquire(timeout=60)
    assert long_row.results[0] == engine.generate_exact(prompt(engine, WORDS[3]), greedy(400))


def test_n_choices_share_one_prefill_and_seeds_reproduce(engine: CausalEngine) -> None:
    ids = prompt(engine, WORDS[4])
    widths: list[int] = []
    hook = Watch(engine, lambda ids: widths.append(ids.shape))
    try:
        first = engine.generate(ids, sampled(12, 7), 4, None)
    finally:
        hook.remove()
    assert widths[0][0] == 1 and widths[1][0] == 4  # one prefill of the prompt, then four rows decode
    assert sum(1 for w in widths if w[1] > 1) == 1  # and no other prefill
    assert engine.generate(ids, sampled(12, 7), 4, None) == first  # the same seed, the same choices
    assert len({g.text for g in first}) > 1  # each choice draws its own
    assert first[0] == engine.generate_exact(ids, sampled(12, 7))  # the first draws what generate draws


def test_a_cancelled_row_leaves_the_batch_at_once(engine: CausalEngine) -> None:
    forwards = 0

    def count(*_: Any) -> None:
        nonlocal forwards
        forwards += 1

    got = Collect()
    rows = [engine.row(prompt(engine, WORDS[i]), greedy(400), None, got.sink(i), stream=True) for i in (1, 2)]
    hook = Watch(engine, count)
    try:
        engine.submit(rows)
        deadline = time.monotonic() + 30
        while not got.deltas[1]:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        rows[0].cancel()
        rows[1].cancel()
        deadline = time.monotonic() + 5
        while engine.scheduler.load:  # both rows left, without running to their 400 tokens
            assert time.monotonic() < deadline, "cancelled rows still in the batch"
            time.sleep(0.005)
        at_exit = forwards
        time.sleep(0.2)
    finally:
        hook.remove()
    assert forwards == at_exit < 400  # no step ran after they left
    assert not got.results  # a cancelled row's sink hears nothing more


def test_a_long_prompt_is_prefilled_a_chunk_per_step_beside_running_rows(engine: CausalEngine,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    long_ids = prompt(engine, " ".join(WORDS))  # ~50 tokens: several chunks
    short_ids = prompt(engine, WORDS[0])
    expected = [engine.generate_exact(long_ids, greedy(5)), engine.generate_exact(short_ids, greedy(30))]
    size = next(c for c in range(8, 20) if len(long_ids) % c > 1)  # no chunk of one token: each one is seen
    monkeypatch.setattr(engine.scheduler, "prefill_chunk", size)
    shapes: list[tuple[int, int]] = []
    hook = Watch(engine, lambda ids: shapes.append(tuple(ids.shape)))
    got = Collect()
    try:
        running = engine.row(short_ids, greedy(30), None, got.sink(1))
        engine.submit([running])
        while not running.out:
            time.sleep(0.001)
        engine.submit([engine.row(long_ids, greedy(5), None, got.sink(0))])
        for _ in range(2):
            assert got.done.acquire(timeout=60)
    finally:
        hook.remove()
    chunks = [i for i, s in enumerate(shapes) if s[1] > 1 and i > 0]
    assert len(chunks) == -(-len(long_ids) // size) > 2  # the long prompt ran in chunks...
    assert all(shapes[i + 1] == (1, 1) for i in chunks[:-1])  # ...each followed by a step of the running row
    assert [got.results[0], got.results[1]] == expected
