"""Chat and legacy completions: no request field accepted and ignored. Through the SDK on the tiny chat model:
each refused field's 400 names it (in batch lines too); harmless ones change nothing; penalties and logit_bias
move the output the documented way; JSON mode and json_schema answers parse (and match); tools render through
the chat template and calls come back as tool_calls. services/chat_params.py lists what is honoured."""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import openai
import pytest

from inhouse.config import ModelEntry, Settings
from inhouse.engines.causal.data import chat_text
from inhouse.engines.causal.generation import Generated, SamplingParams
from inhouse.engines.causal.json_grammar import Grammar
from inhouse.engines.causal.json_schema import compile_schema
from inhouse.services.chat_params import Tools, tool_constraint
from inhouse.services.completions import ChoiceStream, CompletionPlan, answer_of
from tests.api.test_fuzz import value
from tests.conftest import make_client, storage_overrides
from tests.engines.tiny_llm import CHATML
from tests.harness import ServerHandle, check_response, start_server
from tests.llm import llm_entry, tokenizer

MESSAGES = [{"role": "user", "content": "hello world"}]
JSON_ASK = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "hello world"}]
WEATHER: dict[str, Any] = {"type": "function", "function": {  # small: the tiny model's context is 512 tokens
    "name": "weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Oslo", "Rome"]}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "time_in", "parameters": {"type": "object", "properties": {}}}}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"},
                                           "n": {"type": ["integer", "null"]}},
          "required": ["name", "ok", "n"], "additionalProperties": False}
TOOLS_TEMPLATE = "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}" + CHATML


@pytest.fixture(scope="module")
def tools_llm(tiny_llm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a chat template that renders tools (the tiny model's own ignores them)."""
    target = tmp_path_factory.mktemp("tools") / "tiny-tools"
    shutil.copytree(tiny_llm, target)
    (target / "chat_template.jinja").write_text(TOOLS_TEMPLATE)
    return target


@pytest.fixture(scope="module")
def server(tiny_llm: Path, tools_llm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    tmp = tmp_path_factory.mktemp("chat-params")
    settings = Settings(data_dir=tmp / "data", sweep_interval_seconds=3600.0, **storage_overrides(tmp),
                        models=[llm_entry(tiny_llm), ModelEntry(id="tiny-tools", kind="chat", path=str(tools_llm))])
    settings.fine_tuning.poll_seconds, settings.fine_tuning.heartbeat_seconds = 0.05, 0.1
    with start_server(settings) as handle:
        yield handle


@pytest.fixture(scope="module")
def llm(server: ServerHandle) -> openai.OpenAI:
    return make_client(server.base_url)


def chat(client: openai.OpenAI, **body: Any) -> Any:
    """Fields the SDK's signature may lack go as extra_body; `stream` must be the SDK's own."""
    base = {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0, "max_tokens": 8}
    extra = {k: body.pop(k) for k in list(body) if k not in base and k != "stream"}
    return client.chat.completions.create(**{**base, **body}, extra_body=extra)


def json_prefix_or_whole(grammar: Grammar, text: str, finish_reason: str) -> None:
    """A constrained answer: whole when it stopped, else (cut by max_tokens, as OpenAI cuts) a valid prefix."""
    state = grammar.step(grammar.start, text.encode())
    assert state is not None, text
    assert grammar.complete(state) == (finish_reason == "stop"), (text, finish_reason)


def token(tiny_llm: Path, text: str) -> int:
    [t] = tokenizer(tiny_llm)(text, add_special_tokens=False)["input_ids"]
    return int(t)


# -- refused --------------------------------------------------------------------------------------------------
REFUSED_CHAT: list[tuple[dict[str, Any], str]] = [
    ({"logprobs": True}, "logprobs"), ({"top_logprobs": 2}, "top_logprobs"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"), ({"modalities": ["text", "audio"]}, "modalities"),
    ({"reasoning_effort": "low"}, "reasoning_effort"), ({"verbosity": "high"}, "verbosity"),
    ({"web_search_options": {}}, "web_search_options"), ({"prediction": {"type": "content", "content": "x"}},
                                                         "prediction"),
    ({"moderation": {"model": "omni-moderation-latest"}}, "moderation"), ({"store": True}, "store"),
    ({"service_tier": "flex"}, "service_tier"),
    ({"frequency_penalty": 2.5}, "frequency_penalty"), ({"presence_penalty": -3}, "presence_penalty"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"), ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"), ({"logit_bias": {"100000": 1}}, "logit_bias"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_object"}}, "messages"),  # OpenAI's rule: the word JSON in the messages
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "string", "format": "email"}}}}}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}},
     "response_format.json_schema.name"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
     "tools[0].function.parameters"),
    ({"tools": [WEATHER, WEATHER]}, "tools"), ({"tools": []}, "tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {**WEATHER["function"], "strict": True}}]},
     "tools[0].function.strict"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}, "messages": JSON_ASK}, "response_format"),
    ({"tools": [WEATHER], "functions": [WEATHER["function"]]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
]


@pytest.mark.parametrize(("override", "param"), REFUSED_CHAT, ids=[p for _, p in REFUSED_CHAT])
def test_refused_chat_fields_are_400_naming_them(llm: openai.OpenAI, override: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        chat(llm, **override)
    assert exc.value.param == param
    assert exc.value.code in (None, "unsupported_parameter", "invalid_value")


REFUSED_COMPLETION: list[tuple[dict[str, Any], str]] = [
    ({"suffix": "the end"}, "suffix"), ({"logprobs": 2}, "logprobs"), ({"best_of": 3}, "best_of"),
    ({"frequency_penalty": 5}, "frequency_penalty"), ({"logit_bias": {"x": 1}}, "logit_bias"),
    ({"logit_bias": {"999999": 5}}, "logit_bias"),
]


@pytest.mark.parametrize(("override", "param"), REFUSED_COMPLETION, ids=[p for _, p in REFUSED_COMPLETION])
def test_refused_completion_fields_are_400_naming_them(llm: openai.OpenAI, override: dict[str, Any],
                                                       param: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        llm.completions.create(model="davinci-002", prompt="hello", max_tokens=2, extra_body=override)
    assert exc.value.param == param


def test_harmless_fields_change_nothing(llm: openai.OpenAI) -> None:
    plain = chat(llm).choices[0].message.content
    harmless = {"user": "u1", "safety_identifier": "hashed-user", "prompt_cache_key": "k",
                "prompt_cache_retention": "24h", "prompt_cache_options": {"ttl": "30m"}, "metadata": {"a": "b"},
                "store": False, "service_tier": "auto", "modalities": ["text"], "verbosity": "medium",
                "parallel_tool_calls": False,
                "some_future_field": {"x": 1}}
    assert chat(llm, **harmless).choices[0].message.content == plain
    assert chat(llm, service_tier="default", best_effort=None).choices[0].message.content == plain
    streamed = chat(llm, stream=True, stream_options={"include_usage": True, "include_obfuscation": False})
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == plain
    text = llm.completions.create(model="davinci-002", prompt="hello", max_tokens=4, temperature=0).choices[0].text
    assert llm.completions.create(model="davinci-002", prompt="hello", max_tokens=4, temperature=0, best_of=1,
                                  user="u").choices[0].text == text


# -- penalties and logit_bias ---------------------------------------------------------------------------------
def test_penalties_and_logit_bias_move_the_output(llm: openai.OpenAI, tiny_llm: Path) -> None:
    newline, cat = token(tiny_llm, "\n"), token(tiny_llm, " cat")
    plain = chat(llm).choices[0].message.content
    assert plain == "\n" * 8  # the tiny model repeats one token
    for field in ("frequency_penalty", "presence_penalty"):
        penalised = chat(llm, **{field: 2.0}).choices[0].message.content
        assert penalised.count("\n") < 4, field
    assert chat(llm, logit_bias={str(cat): 100}).choices[0].message.content == " cat" * 8
    banned = chat(llm, logit_bias={str(newline): -100}).choices[0].message.content
    assert "\n" not in banned and banned
    completion = llm.completions.create(model="davinci-002", prompt="hello", max_tokens=3, temperature=0,
                                        logit_bias={str(cat): 100})
    assert completion.choices[0].text == " cat" * 3


# -- response_format ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("temperature", "seed"), [(0, None), (0.8, 1), (0.8, 2), (1.2, 3)])
def test_json_mode_answers_parse(llm: openai.OpenAI, temperature: float, seed: int | None) -> None:
    body = {"messages": JSON_ASK, "temperature": temperature, "seed": seed, "max_tokens": 200}
    r = chat(llm, response_format={"type": "json_object"}, n=3, **body)
    for choice in r.choices:
        json_prefix_or_whole(Grammar(), choice.message.content, choice.finish_reason)
    whole = [c for c in r.choices if c.finish_reason == "stop"]
    assert whole  # the random tiny model's strings may run past max_tokens; not all of its answers do
    for choice in whole:
        assert isinstance(json.loads(choice.message.content), dict)
    streamed = chat(llm, response_format={"type": "json_object"}, stream=True, **body)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == r.choices[0].message.content
    free = chat(llm, **body).choices[0]
    with pytest.raises(json.JSONDecodeError):  # the same request without the constraint: no JSON from this model
        json.loads(free.message.content)


def test_json_mode_cut_by_max_tokens_says_length(llm: openai.OpenAI) -> None:
    r = chat(llm, messages=JSON_ASK, response_format={"type": "json_object"}, max_tokens=1)
    assert r.choices[0].finish_reason == "length" and r.choices[0].message.content == "{"


def test_json_schema_answers_parse_and_match(llm: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "reply", "strict": True, "schema": SCHEMA}}
    grammar, whole = Grammar(compile_schema(SCHEMA)), 0
    for temperature, seed in ((0, None), (0.5, 1), (0.5, 2)):
        r = chat(llm, messages=JSON_ASK, response_format=fmt, temperature=temperature, seed=seed, max_tokens=400,
                 n=2)
        for choice in r.choices:
            json_prefix_or_whole(grammar, choice.message.content, choice.finish_reason)
            if choice.finish_reason == "stop":
                jsonschema.validate(json.loads(choice.message.content), SCHEMA)
                whole += 1
    assert whole >= 3


# -- tools ----------------------------------------------------------------------------------------------------
def test_tools_render_through_the_chat_template(llm: openai.OpenAI, tiny_llm: Path, tools_llm: Path) -> None:
    tools = [TIME]  # the tiny model's context is 512 tokens
    tok = tokenizer(tools_llm)
    rendered = tok.apply_chat_template(MESSAGES, tools=tools, tokenize=False, add_generation_prompt=True)
    assert "time_in" in rendered  # this template shows the tools
    r = chat(llm, model="tiny-tools", tools=tools)
    assert r.usage.prompt_tokens == len(tok(rendered, add_special_tokens=False)["input_ids"])
    # The tiny model's own template ignores tools: they go into the system turn, as fine-tuning renders them.
    own = tokenizer(tiny_llm)
    fallback = chat_text(own, MESSAGES, tools, True)
    assert "time_in" in fallback and fallback != chat_text(own, MESSAGES, None, True)
    r = chat(llm, tools=tools)
    assert r.usage.prompt_tokens == len(own(fallback, add_special_tokens=False)["input_ids"])
    assert chat(llm, tools=tools, tool_choice="none").usage.prompt_tokens == r.usage.prompt_tokens  # still shown


def check_weather_call(call: Any) -> None:
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "weather"}}])
def test_a_forced_tool_call_comes_back_as_tool_calls(llm: openai.OpenAI, choice: Any) -> None:
    r = chat(llm, model="tiny-tools", tools=[WEATHER, TIME], tool_choice=choice, max_tokens=150)
    message = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and message.content is None
    assert len(message.tool_calls) == 1
    if choice != "required":
        check_weather_call(message.tool_calls[0])
    else:
        assert message.tool_calls[0].function.name in ("weather", "time_in")
        assert isinstance(json.loads(message.tool_calls[0].function.arguments), dict)
    chunks = list(chat(llm, model="tiny-tools", tools=[WEATHER, TIME], tool_choice=choice, max_tokens=150,
                       stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    streamed = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert [(tc.index, tc.function.name, tc.function.arguments) for tc in streamed] == [
        (0, message.tool_calls[0].function.name, message.tool_calls[0].function.arguments)]
    assert not any(d.content for d in deltas)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_deprecated_functions_answer_with_function_call(llm: openai.OpenAI) -> None:
    r = chat(llm, functions=[WEATHER["function"]], function_call={"name": "weather"}, max_tokens=150)
    message = r.choices[0].message
    assert r.choices[0].finish_reason == "function_call" and message.tool_calls is None
    assert message.function_call.name == "weather"
    jsonschema.validate(json.loads(message.function_call.arguments), WEATHER["function"]["parameters"])


def plan_with(tools: Tools | None) -> CompletionPlan:
    return CompletionPlan("chat", "m", None, [], [], SamplingParams(8, 0, 1, (), None), 1, None,  # type: ignore[arg-type]
                          tools=tools)


AUTO = Tools([WEATHER, TIME], frozenset({"weather", "time_in"}), "auto", None, True, False)
SAID = ('Let me look.\n<tool_call>{"name": "weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}</tool_call>\n'
        '<tool_call>{"name": "time_in", "arguments": {}}</tool_call>\n<tool_call>{"name": "rm_rf"}</tool_call>')


def test_calls_in_the_text_are_answered_as_tool_calls() -> None:
    """tool_choice "auto": whatever the model writes as call blocks (a fine-tuned model writes them as
    calls_as_text renders its training data) comes back as calls; an undeclared function stays text."""
    answer = answer_of(plan_with(AUTO), Generated(SAID, "stop", 40))
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in answer.calls] == [
        ("weather", '{"city": "Oslo"}'), ("time_in", "{}")]
    assert answer.finish_reason == "tool_calls"
    assert answer.content == 'Let me look.\n\n\n<tool_call>{"name": "rm_rf"}</tool_call>'
    single = Tools(AUTO.specs, AUTO.names, "auto", None, False, False)  # parallel_tool_calls false
    assert len(answer_of(plan_with(single), Generated(SAID, "stop", 40)).calls) == 1
    cut = answer_of(plan_with(AUTO), Generated(SAID, "length", 40))
    assert cut.finish_reason == "length" and len(cut.calls) == 2
    only = answer_of(plan_with(AUTO), Generated('<tool_call>{"name": "time_in"}</tool_call>\n', "stop", 9))
    assert only.content is None and only.calls[0]["function"]["arguments"] == "{}"
    for no_parse in (None, Tools(AUTO.specs, AUTO.names, "none", None, True, False)):
        untouched = answer_of(plan_with(no_parse), Generated(SAID, "stop", 40))
        assert untouched.content == SAID and not untouched.calls and untouched.finish_reason == "stop"


def test_tool_choice_none_forbids_the_call_block_and_auto_leaves_the_model_free() -> None:
    none = tool_constraint(Tools(AUTO.specs, AUTO.names, "none", None, True, False))
    assert none is not None and none.grammar is None and none.forbid == (b"<tool_call>",)
    assert tool_constraint(AUTO) is None
    forced = tool_constraint(Tools(AUTO.specs, AUTO.names, "function", "weather", True, False))
    assert forced is not None and forced.grammar is not None
    call = '<tool_call>{"name": "weather", "arguments": "{\\"city\\": \\"Rome\\"}"}</tool_call>'
    assert forced.grammar.accepts(call.encode())
    assert not forced.grammar.accepts(call.replace("Rome", "Paris").encode())  # the parameters' enum holds
    assert not forced.grammar.accepts(call.replace("weather", "time_in").encode())  # the named function only


@pytest.mark.parametrize("text", [SAID, "plain text, no call", "  <tool_call>{not json}</tool_call> after",
                                  "<tool_call>{\"name\": \"weather\", \"arguments\": \"{}\"}</tool_call>", "<tool_c"])
def test_a_streamed_choice_says_what_the_whole_answer_says(text: str) -> None:
    plan = plan_with(AUTO)
    stream = ChoiceStream(plan)
    deltas = [d for ch in text for d in stream.delta(ch)]  # one character at a time: the worst case
    final = Generated(text, "stop", 10)
    tail, reason = stream.finish(final)
    deltas += tail
    whole = answer_of(plan, final)
    assert "".join(d.get("content", "") for d in deltas) == (whole.content or "")
    streamed_calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in streamed_calls] == [
        (c["function"]["name"], c["function"]["arguments"]) for c in whole.calls]
    assert reason == whole.finish_reason


# -- batch lines ----------------------------------------------------------------------------------------------
def test_batch_lines_are_checked_and_constrained_as_the_route(llm: openai.OpenAI) -> None:
    base = {"model": "gpt-4o-mini", "messages": JSON_ASK, "temperature": 0, "max_tokens": 200}
    bodies = {"json": {**base, "response_format": {"type": "json_object"}},
              "bias": {**base, "logit_bias": {"100000": 3}},
              "nojson": {**base, "messages": MESSAGES, "response_format": {"type": "json_object"}},
              "tool": {**base, "tools": [{"type": "custom", "custom": {"name": "x"}}]},
              "store": {**base, "store": True},
              "call": {**base, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 150}}
    lines = [{"custom_id": k, "method": "POST", "url": "/v1/chat/completions", "body": b} for k, b in bodies.items()]
    upload = llm.files.create(file=("b.jsonl", "\n".join(map(json.dumps, lines)).encode()), purpose="batch")
    batch = llm.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 120
    while (batch := llm.batches.retrieve(batch.id)).status not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert batch.status == "completed" and batch.output_file_id and batch.error_file_id
    errors = {e["custom_id"]: e["response"] for e in map(json.loads, llm.files.content(
        batch.error_file_id).text.splitlines())}
    assert {k: (v["status_code"], v["body"]["error"]["param"]) for k, v in errors.items()} == {
        "bias": (400, "logit_bias"), "nojson": (400, "messages"), "tool": (400, "tools[0].type"),
        "store": (400, "store")}
    out = {o["custom_id"]: o["response"]["body"] for o in map(json.loads, llm.files.content(
        batch.output_file_id).text.splitlines())}
    live = chat(llm, **{k: v for k, v in bodies["json"].items()})
    assert out["json"]["choices"][0]["message"]["content"] == live.choices[0].message.content
    assert isinstance(json.loads(out["json"]["choices"][0]["message"]["content"]), dict)
    [call] = out["call"]["choices"][0]["message"]["tool_calls"]
    assert out["call"]["choices"][0]["finish_reason"] == "tool_calls" and call["function"]["name"] == "weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])


def test_random_values_of_these_fields_never_5xx(server: ServerHandle) -> None:
    rng = random.Random(7)
    fields = ["response_format", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
              "logit_bias", "frequency_penalty", "presence_penalty", "top_logprobs", "service_tier", "store",
              "modalities", "verbosity", "prediction", "metadata"]
    shapes = [{"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
        "a": {"type": "object", "properties": {}}}}}}, {"type": "json_object"}, [WEATHER], [TIME, WEATHER],
        {"type": "function", "function": {"name": "weather"}}, {"1": 5}, "required", "none"]
    with httpx2.Client(timeout=60) as http:
        for _ in range(150):
            body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": JSON_ASK, "max_tokens": 2}
            for name in rng.sample(fields, rng.randrange(1, 4)):
                body[name] = rng.choice(shapes) if rng.random() < 0.4 else value(rng)
            r = http.post(f"{server.base_url}/chat/completions", content=json.dumps(body),
                          headers={"content-type": "application/json"})
            check_response(r)
            assert r.status_code < 500, (body, r.text)
