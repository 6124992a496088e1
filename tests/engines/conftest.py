"""The chat engine the engine tests share: the tiny chat model with scrambled weights (tests.llm.scrambled), one
per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inhouse.engines.causal.generation import CausalEngine
from tests.llm import scrambled


@pytest.fixture(scope="module")
def engine(tiny_llm: Path) -> Iterator[CausalEngine]:
    e = CausalEngine(tiny_llm, 1)
    scrambled(e.model)
    yield e
    e.close()
