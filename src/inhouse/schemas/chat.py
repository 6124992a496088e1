"""Chat and legacy completions request models (the answers are built as plain dicts, streamed or not).

Every field of the spec's CreateChatCompletionRequest and CreateCompletionRequest is declared here, so that
none is dropped as an unknown key; services/completions.py honours each or answers 400 naming it (its module
docstring lists which). Keys the spec does not define are still ignored: real clients send extras."""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

from inhouse.schemas.common import Request


class StreamOptions(Request):
    include_usage: StrictBool | None = None
    include_obfuscation: StrictBool | None = None


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
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, StrictInt | StrictFloat] | None = None


class CreateChatCompletionRequest(_Sampling):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    functions: list[Any] | None = None  # deprecated for tools
    function_call: StrictStr | dict[str, Any] | None = None  # deprecated for tool_choice
    store: StrictBool | None = None
    metadata: dict[str, StrictStr] | None = None
    service_tier: StrictStr | None = None
    modalities: list[StrictStr] | None = None
    audio: dict[str, Any] | None = None
    verbosity: StrictStr | None = None
    reasoning_effort: StrictStr | None = None
    web_search_options: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    moderation: dict[str, Any] | None = None
    safety_identifier: StrictStr | None = Field(default=None, max_length=64)
    prompt_cache_key: StrictStr | None = None
    prompt_cache_retention: StrictStr | None = None
    prompt_cache_options: dict[str, Any] | None = None


class CreateCompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictStr]
    echo: StrictBool | None = None
    suffix: StrictStr | None = None
    logprobs: StrictInt | None = None
    best_of: StrictInt | None = None
