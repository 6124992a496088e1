"""Batched generation on the tiny chat model: each row of the engine's decode batch answers what Hugging Face
generate answers alone (greedy text, stop strings, max tokens), finished rows leave the batch, seeded rows
reproduce, and ChatService.generate_many gives n choices per item and an error per bad item without failing the
others."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inhouse import observability
from inhouse.config import FineTuning, ModelEntry
from inhouse.engines.causal.generation import CausalEngine, Generated, SamplingParams
from inhouse.engines.executors import ModelExecutors
from inhouse.engines.registry import ModelRegistry
from inhouse.errors import InhouseError, InvalidRequest
from inhouse.services.chat import ChatService, Target
from inhouse.services.models import ModelsService
from tests.engines.conftest import Watch
from tests.llm import scrambled

WORDS = ["hello", "ping pong hello world red blue", "cat", "the moon and the sun over the river stone tree a dog",
         "a", "alpha beta gamma", "yes no maybe so", "dog and cat and the tree of the sun"]


def greedy(tokens: int, stop: tuple[str, ...] = ()) -> SamplingParams:
    return SamplingParams(tokens, 0.0, 1.0, stop, None)


def sampled(tokens: int, seed: int | None) -> SamplingParams:
    return SamplingParams(tokens, 1.5, 0.95, (), seed)


def prompt(engine: CausalEngine, words: str) -> list[int]:
    return engine.chat_prompt([{"role": "user", "content": words}])


def one_by_one(engine: CausalEngine, rows: list[tuple[list[int], SamplingParams]]) -> list[Generated]:
    """The reference: each row alone through Hugging Face generate."""
    return [engine.generate_exact(ids, params) for ids, params in rows]


def test_greedy_rows_of_different_lengths_answer_what_generate_answers(engine: CausalEngine) -> None:
    rows = [(prompt(engine, w), greedy(8 + 3 * i)) for i, w in enumerate(WORDS)]
    assert len({len(ids) for ids, _ in rows}) >= 5  # left padding is really exercised
    batch = engine.generate_batch(rows, None)
    assert batch == one_by_one(engine, rows)
    assert [g.tokens for g in batch] == [8 + 3 * i for i in range(len(WORDS))]
    assert all(g.finish_reason == "length" for g in batch)
    assert len({g.text for g in batch}) == len(WORDS)  # a real continuation per prompt, not one shared answer


def test_larger_requests_wait_within_the_batch_bounds(engine: CausalEngine, monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    rows = [(prompt(engine, w), greedy(6)) for w in WORDS]
    expected = engine.generate_batch(rows, None)
    assert expected == one_by_one(engine, rows)
    widths: list[int] = []
    hook = Watch(engine, lambda ids: widths.append(ids.shape[0]))
    try:
        monkeypatch.setattr(engine.scheduler, "max_rows", 3)
        assert engine.generate_batch(rows, None, background=False) == expected
        assert max(widths) == 3  # never more than 3 rows in a step; rows joined as others left
        widths.clear()
        assert engine.generate_batch(rows, None) == expected
        assert max(widths) == 1  # batch work fills at most half of the rows (at least one)
        widths.clear()
        monkeypatch.setattr(engine.scheduler, "max_rows", 16)
        limit = 2 * (max(len(ids) for ids, _ in rows) + 6)  # the two longest rows fit, a third does not
        monkeypatch.setattr(engine.scheduler, "max_tokens", limit)
        assert engine.generate_batch(rows, None) == expected
        assert 2 <= max(widths) < len(rows)
    finally:
        hook.remove()


def test_finished_rows_leave_the_batch(engine: CausalEngine) -> None:
    ids = prompt(engine, WORDS[1])
    rows = [(ids, greedy(2)), (prompt(engine, WORDS[3]), greedy(10)), (ids, greedy(2))]
    widths: list[int] = []
    hook = Watch(engine, lambda ids: widths.append(ids.shape[0]))
    try:
        batch = engine.generate_batch(rows, None)
    finally:
        hook.remove()
    # One prefill for the two rows of one prompt, one for the other; the second token with all three rows; the
    # 8 tokens left of the long row alone.
    assert widths == [1, 1, 3] + [1] * 8
    assert [g.tokens for g in batch] == [2, 10, 2]
    assert batch == one_by_one(engine, rows)


def test_a_row_counts_as_load_while_its_prompt_runs(engine: CausalEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """`load` (what idleness reads, without the lock) finds a row from its submission to its end: also while it
    is taken from the waiting rows and its prompt runs, before it joins the batch."""
    import threading
    import time

    entered, release, done = threading.Event(), threading.Event(), threading.Event()
    real = engine.forward

    def held(input_ids: Any, *rest: Any) -> Any:
        if input_ids.shape[1] > 1:  # the prefill
            entered.set()
            release.wait(10)
        return real(input_ids, *rest)

    monkeypatch.setattr(engine, "forward", held)
    row = engine.row(prompt(engine, WORDS[1]), greedy(3), None,
                     lambda text, result, error: done.set() if result or error else None)
    engine.submit([row])
    assert entered.wait(10)
    assert engine.scheduler.load == 1
    release.set()
    assert done.wait(30)
    deadline = time.monotonic() + 10
    while engine.scheduler.load:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_stop_strings_cut_a_row_as_generate_does(engine: CausalEngine) -> None:
    ids = prompt(engine, WORDS[0])
    full = engine.generate(ids, greedy(24), 1, None)[0].text
    # A stop string from the middle of the text (its first occurrence, not at the start).
    stop = next(full[i : i + 3] for i in range(3, len(full) - 3)
                if full[i : i + 3].strip() and full.find(full[i : i + 3]) >= 1)
    rows = [(ids, greedy(24, (stop, "never-said"))), (prompt(engine, WORDS[5]), greedy(24)), (ids, greedy(24))]
    batch = engine.generate_batch(rows, None)
    assert batch == one_by_one(engine, rows)
    assert batch[0].text == full[: full.find(stop)] and batch[0].finish_reason == "stop"
    assert batch[0].tokens < 24
    assert batch[2].text == full and batch[2].finish_reason == "length"  # its neighbour's stop is not its own


def test_eos_ends_a_row_with_finish_reason_stop(engine: CausalEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = prompt(engine, WORDS[2])
    free = _new_ids(engine, ids, 12)
    # The row's 4th token made the model's eos, where generate reads it (generation_config).
    monkeypatch.setattr(engine.model.generation_config, "eos_token_id", free[3])
    rows = [(ids, greedy(12)), (prompt(engine, WORDS[6]), greedy(12))]
    batch = engine.generate_batch(rows, None)
    assert batch[0].tokens == free.index(free[3]) + 1 <= 4 and batch[0].finish_reason == "stop"
    assert batch[1].tokens == 12 or batch[1].finish_reason == "stop"
    assert batch == one_by_one(engine, rows)


def _new_ids(engine: CausalEngine, ids: list[int], tokens: int) -> list[int]:
    import torch

    t = torch.tensor([ids])
    with torch.inference_mode():
        seq = engine.model.generate(input_ids=t, attention_mask=torch.ones_like(t), do_sample=False,
                                    max_new_tokens=tokens, pad_token_id=engine.tok.pad_token_id)
    out: list[int] = seq[0, len(ids):].tolist()
    return out


def test_seeded_rows_reproduce_and_do_not_depend_on_their_neighbours(engine: CausalEngine) -> None:
    ids = [prompt(engine, w) for w in WORDS]
    rows = [(ids[i], sampled(16, 10 + i)) for i in range(4)] + [(ids[4], greedy(16)), (ids[5], sampled(16, None))]
    first = engine.generate_batch(rows, None)
    again = engine.generate_batch(rows, None)
    assert first[:5] == again[:5]
    # Same prompt, different seeds: different draws (the temperature makes ties of the argmax unlikely).
    same_prompt = engine.generate_batch([(ids[0], sampled(16, s)) for s in range(4)], None)
    assert len({g.text for g in same_prompt}) > 1
    # A seeded row draws from its own generator: other neighbours, or none, leave its text as it was; and the
    # draws are those generate makes after torch.manual_seed(seed) (equal logits here, as rounding allows).
    alone = engine.generate_batch([rows[1]], None)[0]
    mixed = engine.generate_batch([(ids[7], sampled(16, None)), rows[1], (ids[6], greedy(3))], None)[1]
    assert alone == first[1] == mixed
    assert engine.generate(*rows[1], 1, None)[0] == first[1]


def test_model_generation_settings_the_loop_lacks_fall_back_to_generate(engine: CausalEngine,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.model.generation_config, "repetition_penalty", 1.5)
    rows = [(prompt(engine, w), greedy(10)) for w in WORDS[:3]]
    penalised = engine.generate_batch(rows, None)
    assert penalised == one_by_one(engine, rows)
    monkeypatch.undo()
    assert penalised != engine.generate_batch(rows, None)  # the penalty changed the answers


def test_rows_run_through_the_requested_lora_adapter(tiny_llm: Path) -> None:
    import torch
    from peft import get_peft_model

    from inhouse.engines.causal.adapters import dump_adapter, lora_config
    from inhouse.engines.causal.loading import load_model

    lora = get_peft_model(load_model(tiny_llm, 1), lora_config(4), adapter_name="a")
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:  # zero at creation: an adapter that changes nothing
                p.normal_(0, 0.3)
    weights = dump_adapter(lora, "a", 4)
    engine = CausalEngine(tiny_llm, 1)  # its own: attaching an adapter wraps the model
    scrambled(engine.model)
    adapter = ("ft:tiny:a", lambda: weights)
    rows = [(prompt(engine, w), greedy(10)) for w in WORDS[:4]]
    plain = engine.generate_batch(rows, None)
    tuned = engine.generate_batch(rows, adapter)
    assert tuned == [engine.generate(ids, params, 1, adapter)[0] for ids, params in rows]
    assert tuned != plain and engine.generate_batch(rows, None) == plain  # None: the adapter is off again
    engine.close()


# -- ChatService.generate_many ----------------------------------------------------------------------------------
@pytest.fixture
def chat(engine: CausalEngine, tiny_llm: Path) -> Iterator[tuple[ChatService, Target]]:
    entry = ModelEntry(id="tiny-llm", kind="chat", path=str(tiny_llm))
    executors = ModelExecutors()
    engines: ModelRegistry[CausalEngine] = ModelRegistry("chat", lambda _e, _p: engine, 900.0,
                                                         lambda: executors.pool("chat"))
    # Storage is not reached: the target is a configured model, resolved here rather than by name.
    service = ChatService(ModelsService(None, [entry]), None, None, engines, engines,  # type: ignore[arg-type]
                          FineTuning(), executors)
    yield service, Target(entry.id, entry, None)
    executors.shutdown()


def generated_tokens(label: str) -> float:
    return observability.PROCESS.get_sample_value("inhouse_generation_tokens_total", {"model": label}) or 0.0


def test_generate_many_gives_n_choices_per_item_and_errors_per_item(chat: tuple[ChatService, Target],
                                                                   engine: CausalEngine) -> None:
    service, target = chat
    too_long = " ".join(["tree"] * 600)  # past the tiny model's 512-token context
    items: list[tuple[Any, SamplingParams, int, int | None]] = [
        (service.chat_prompt([{"role": "user", "content": WORDS[0]}]), greedy(7), 2, 7),
        (service.chat_prompt([{"role": "user", "content": too_long}]), greedy(7), 1, None),
        (service.chat_prompt([{"role": "user", "content": WORDS[3]}]), sampled(9, 5), 3, None),
        (service.chat_prompt([{"role": "user", "content": WORDS[1]}]), greedy(500), 1, 500),  # does not fit
        (service.chat_prompt([{"role": "user", "content": WORDS[2]}]), greedy(600), 1, None),  # cut to the room
    ]
    before = generated_tokens(target.metrics_label)
    results = asyncio.run(service.generate_many(target, items))
    assert len(results) == 5
    for i in (1, 3):
        error = results[i]
        assert isinstance(error, InvalidRequest) and error.code == "context_length_exceeded"
    ok = [r for r in results if not isinstance(r, InhouseError)]
    assert [len(choices) for choices, _ in ok] == [2, 3, 1]

    greedy_choices, prompt_tokens = ok[0]
    ids = prompt(engine, WORDS[0])
    assert prompt_tokens == len(ids)
    assert greedy_choices == engine.generate(ids, greedy(7), 2, None)

    seeded, _ = ok[1]
    assert seeded[0] == engine.generate(prompt(engine, WORDS[3]), sampled(9, 5), 1, None)[0]
    assert len({g.text for g in seeded}) > 1  # each copy has its own derived seed

    cut, cut_prompt = ok[2]
    assert cut_prompt + cut[0].tokens == engine.context  # the default max_tokens shrinks to the room left
    assert generated_tokens(target.metrics_label) - before == sum(g.tokens for c, _ in ok for g in c)
    assert asyncio.run(service.generate_many(target, items[2:3])) == [ok[1]]  # seeded copies reproduce


def test_a_live_request_goes_between_two_steps_of_a_batch(engine: CausalEngine) -> None:
    """A live generate that arrives while a long batch decodes joins it at the next step and ends long before
    the batch; the batch's answers are the same as when it runs alone."""
    import threading
    import time

    rows = [(prompt(engine, w), greedy(300)) for w in WORDS[:4]]
    alone = engine.generate_batch(rows, None)
    steps = 0
    done: dict[str, float] = {}

    def counted(*_: Any) -> None:
        nonlocal steps
        steps += 1

    hook = Watch(engine, counted)
    try:
        result: list[Generated] = []
        batch = threading.Thread(target=lambda: (result.extend(engine.generate_batch(rows, None)),
                                                 done.setdefault("batch", time.monotonic())))
        batch.start()
        while steps < 5:  # the batch is decoding
            time.sleep(0.001)
        live_prompt = prompt(engine, "live")
        before = steps
        live = engine.generate(live_prompt, greedy(3), 1, None)
        done["live"] = time.monotonic()
        at_live = steps
        batch.join(120)
    finally:
        hook.remove()
    assert live[0].tokens == 3
    assert done["live"] < done["batch"], (at_live, steps)  # not queued behind the batch
    assert at_live - before < 20, (before, at_live)  # within a few of the batch's 300 steps
    assert result == alone
