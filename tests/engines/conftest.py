"""The chat engine the engine tests share: the tiny chat model with scrambled weights (tests.llm.scrambled), one
per test module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inhouse.engines.causal.generation import CausalEngine
from tests.llm import scrambled


@pytest.fixture(scope="module")
def engine(tiny_llm: Path) -> Iterator[CausalEngine]:
    e = CausalEngine(tiny_llm, 1)
    scrambled(e.model)
    yield e
    e.close()


class Watch:
    """Calls `seen(input_ids)` before every forward pass the engine's scheduler runs (prefill chunks and decode
    steps, whichever path computes them) until removed."""

    def __init__(self, engine: CausalEngine, seen: Callable[[Any], object]) -> None:
        self.engine = engine
        original = engine.forward

        def watched(input_ids: Any, *args: Any) -> Any:
            seen(input_ids)
            return original(input_ids, *args)

        engine.forward = watched  # type: ignore[method-assign]  # the scheduler calls engine.forward

    def remove(self) -> None:
        del self.engine.forward
