"""Chat and legacy completions request models (the answers are built as plain dicts, streamed or not)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool, StrictInt, StrictStr

from inhouse.schemas.common import Request


class StreamOptions(Request):
    include_usage: StrictBool | None = None


class _Sampling(Request):
    """What chat and legacy completions share."""

    model: StrictStr
    max_tokens: StrictInt | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None


class CreateChatCompletionRequest(_Sampling):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = None
    logprobs: StrictBool | None = None


class CreateCompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictStr]
    echo: StrictBool | None = None
    suffix: StrictStr | None = None
    logprobs: StrictInt | None = None
