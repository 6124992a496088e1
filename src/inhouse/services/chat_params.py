"""Every request field of chat completions and legacy completions beyond the core sampling ones, honoured or
refused: nothing the spec defines is accepted and ignored.

Honoured (besides model, messages/prompt, max_tokens, max_completion_tokens, temperature, top_p, n, stop,
seed, stream, stream_options.include_usage and echo, see completions.py):
  frequency_penalty, presence_penalty, logit_bias   in the sampler (engines/causal/sampling.py)
  response_format text | json_object | json_schema  constrained decoding (engines/causal/json_grammar.py)
  tools, tool_choice, parallel_tool_calls           tools rendered through the chat template; calls parsed
                                                    from `<tool_call>` blocks; "none" forbids the block;
                                                    "required" and a named function force one call (grammar);
                                                    streamed, content flows live until a call block may begin
                                                    and the calls go out as tool_calls deltas at the end
  functions, function_call (deprecated)             as tools and tool_choice, answered with function_call
Accepted because they change nothing a client can observe here:
  user, safety_identifier, prompt_cache_key, prompt_cache_retention, prompt_cache_options (no prompt cache
  to steer, no abuse detection to feed), metadata (only kept with store, which is refused),
  store false, service_tier "auto"/"default", modalities ["text"], verbosity "medium" (the default),
  stream_options.include_obfuscation (no obfuscation padding is sent either way), best_of 1,
  parallel_tool_calls without tools.
Refused with a 400 naming them when set to anything else (code unsupported_parameter or invalid_value):
  logprobs true / top_logprobs / completions' logprobs, audio, modalities with "audio", reasoning_effort
  (no reasoning model), web_search_options, prediction, moderation, store true, other service tiers,
  other verbosity, completions' suffix and best_of > 1, custom (non-function) tools, allowed_tools choices,
  strict function tools unless tool_choice forces the call (only then is the call constrained), and
  response_format json_* together with callable tools."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from inhouse.engines.causal.data import CALL_CLOSE, CALL_OPEN
from inhouse.engines.causal.json_grammar import Grammar
from inhouse.engines.causal.json_schema import (
    FREE_OBJECT,
    EncodedNode,
    LiteralNode,
    Node,
    ObjectNode,
    SchemaError,
    UnionNode,
    compile_schema,
    literal,
)
from inhouse.engines.causal.sampling import Constraint
from inhouse.errors import InvalidRequest
from inhouse.schemas.chat import CreateChatCompletionRequest, CreateCompletionRequest

MAX_LOGIT_BIAS = 300  # entries of logit_bias
MAX_TOOLS = 128
NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _unsupported(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{why}: leave `{param}` out.", param=param, code="unsupported_parameter")


def _invalid(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


# -- refusals ---------------------------------------------------------------------------------------------------
def refuse_unsupported_chat(body: CreateChatCompletionRequest) -> None:
    if body.logprobs:
        raise InvalidRequest("logprobs are not supported by this server.", param="logprobs",
                             code="unsupported_parameter")
    if body.top_logprobs is not None:
        raise _unsupported("top_logprobs", "This server returns no log probabilities")
    if body.audio is not None:
        raise _unsupported("audio", "This server's chat models answer in text only")
    if body.modalities is not None and any(m != "text" for m in body.modalities):
        raise _unsupported("modalities", "This server's chat models answer in text only")
    if body.reasoning_effort is not None:
        raise _unsupported("reasoning_effort", "This server's chat models are not reasoning models")
    if body.verbosity not in (None, "medium"):
        raise _unsupported("verbosity", "This server's chat models have no verbosity setting")
    if body.web_search_options is not None:
        raise _unsupported("web_search_options", "This server does not search the web")
    if body.prediction is not None:
        raise _unsupported("prediction", "This server does not take predicted outputs")
    if body.moderation is not None:
        raise _unsupported("moderation", "This server runs no content moderation")
    if body.store:
        raise _unsupported("store", "This server does not store chat completions")
    if body.service_tier not in (None, "auto", "default"):
        raise _unsupported("service_tier", "This server has one service tier")


def refuse_unsupported_completion(body: CreateCompletionRequest) -> None:
    if body.suffix is not None:
        raise InvalidRequest("suffix is not supported by this server.", param="suffix",
                             code="unsupported_parameter")
    if body.logprobs is not None:
        raise InvalidRequest("logprobs are not supported by this server.", param="logprobs",
                             code="unsupported_parameter")
    if body.best_of is not None and body.best_of > 1:
        raise _unsupported("best_of", "This server does not rank candidates by log probability")


# -- penalties and logit_bias ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Penalties:
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()


def penalties(body: CreateChatCompletionRequest | CreateCompletionRequest) -> Penalties:
    """The penalties and logit_bias, checked (token ids against the model's vocabulary later: ChatService)."""
    values = {}
    for name in ("frequency_penalty", "presence_penalty"):
        value = getattr(body, name)
        if value is not None and not (math.isfinite(value) and -2 <= value <= 2):
            raise _invalid(name, f"{name} must be between -2 and 2.")
        values[name] = float(value or 0.0)
    bias: list[tuple[int, float]] = []
    if body.logit_bias:
        if len(body.logit_bias) > MAX_LOGIT_BIAS:
            raise _invalid("logit_bias", f"logit_bias holds {len(body.logit_bias)} entries; at most "
                           f"{MAX_LOGIT_BIAS} are allowed.")
        for key, value in body.logit_bias.items():
            if not key.isascii() or not key.isdigit() or len(key) > 18:
                raise _invalid("logit_bias", f"Invalid key in 'logit_bias': {key[:40]!r}. Keys are token ids "
                               "(non-negative integers).")
            if not (math.isfinite(value) and -100 <= value <= 100):
                raise _invalid("logit_bias", f"Invalid value for 'logit_bias' key {key}: {value}. Values go "
                               "from -100 to 100.")
            if value:
                bias.append((int(key), float(value)))
    return Penalties(values["frequency_penalty"], values["presence_penalty"], tuple(sorted(bias)))


# -- tools ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tools:
    """The tools a chat request declares, and how they may be called."""

    specs: list[dict[str, Any]]  # OpenAI tool objects, as the chat template renders them
    names: frozenset[str]
    choice: str  # "none", "auto", "required" or "function" (the named one: `forced`)
    forced: str | None
    parallel: bool
    legacy: bool  # declared as `functions`: the answer carries `function_call`

    @property
    def parse(self) -> bool:
        """Whether calls in the output are answered as calls (with "none" the model may not call)."""
        return self.choice != "none"


def _function(spec: Any, param: str) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise _invalid(param, f"Invalid value for '{param}': expected an object.")
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise _invalid(f"{param}.name", f"Invalid '{param}.name': {str(name)[:80]!r}. Function names are 1 to 64 "
                       "letters, digits, underscores and dashes.")
    if not isinstance(spec.get("description", ""), str):
        raise _invalid(f"{param}.description", f"Invalid '{param}.description': expected a string.")
    params = spec.get("parameters")
    if params is not None and (not isinstance(params, dict) or params.get("type", "object") != "object"):
        raise _invalid(f"{param}.parameters", f"Invalid '{param}.parameters': expected a JSON schema of an object.")
    if not isinstance(spec.get("strict", False), bool | None):
        raise _invalid(f"{param}.strict", f"Invalid '{param}.strict': expected a boolean.")
    return spec


def chat_tools(body: CreateChatCompletionRequest) -> Tools | None:
    legacy = body.functions is not None
    if legacy and body.tools is not None:
        raise _invalid("functions", "Send either `tools` or the deprecated `functions`, not both.")
    choice: Any = body.function_call if legacy else body.tool_choice
    choice_param = "function_call" if legacy else "tool_choice"
    if not legacy and body.function_call is not None:
        raise _invalid("function_call", "function_call is only allowed when functions are specified.")
    raw = body.functions if legacy else body.tools
    if not raw:
        if raw is not None:
            raise _invalid("functions" if legacy else "tools", "Expected a non-empty array of tools.")
        if choice is not None:
            raise _invalid(choice_param, f"Invalid value for '{choice_param}': '{choice_param}' is only allowed "
                           "when 'tools' are specified.")
        return None
    if len(raw) > MAX_TOOLS:
        raise _invalid("tools", f"tools holds {len(raw)} tools; at most {MAX_TOOLS} are allowed.")
    specs: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        if legacy:
            specs.append({"type": "function", "function": _function(tool, f"functions[{i}]")})
            continue
        if not isinstance(tool, dict):
            raise _invalid(f"tools[{i}]", f"Invalid value for 'tools[{i}]': expected an object.")
        if tool.get("type") != "function":
            if tool.get("type") == "custom":
                raise _unsupported(f"tools[{i}].type", "Custom (free-form) tools are not supported; use "
                                   "function tools")
            raise _invalid(f"tools[{i}].type", f"Invalid value for 'tools[{i}].type': {str(tool.get('type'))[:40]!r}."
                           " Supported values are: 'function'.")
        specs.append({**tool, "function": _function(tool.get("function"), f"tools[{i}].function")})
    names = [s["function"]["name"] for s in specs]
    if len(set(names)) < len(names):
        raise _invalid("tools", "Tool names must be unique.")
    forced = None
    if choice is None:
        mode = "auto"
    elif isinstance(choice, str):
        if choice not in ("none", "auto", "required") or (legacy and choice == "required"):
            raise _invalid(choice_param, f"Invalid value for '{choice_param}': {choice[:40]!r}.")
        mode = choice
    else:
        fn = choice if legacy else (choice.get("function") if choice.get("type") == "function" else None)
        if not legacy and choice.get("type") != "function":
            raise _unsupported(choice_param, "Only 'none', 'auto', 'required' or a named function are supported")
        name = fn.get("name") if isinstance(fn, dict) else None
        if name not in names:
            raise _invalid(choice_param, f"Invalid value for '{choice_param}': no function named "
                           f"{str(name)[:64]!r} in the tools.")
        mode, forced = "function", name
    for i, spec in enumerate(specs):
        if spec["function"].get("strict") and mode not in ("required", "function"):
            raise _unsupported(f"tools[{i}].function.strict", "Strict function calling is only supported when "
                               "tool_choice forces the call ('required' or a named function)")
    parallel = True if body.parallel_tool_calls is None else body.parallel_tool_calls
    return Tools(specs, frozenset(names), mode, forced, parallel and not legacy, legacy)


def _call_node(spec: dict[str, Any], param: str) -> Node:
    """One call as calls_as_text renders it: {"name": "<name>", "arguments": "<the arguments as JSON text>"}."""
    fn = spec["function"]
    schema = fn.get("parameters")
    args: Node = FREE_OBJECT
    if schema is not None:
        try:
            args = compile_schema(schema)
        except SchemaError as exc:
            if fn.get("strict"):
                raise _invalid(f"{param}.parameters", f"Invalid schema for function '{fn['name']}': {exc}.") from exc
            # Not strict: OpenAI does not promise arguments that match; they are still a JSON object here.
    return ObjectNode({b"name": LiteralNode((literal(fn["name"]),)), b"arguments": EncodedNode(args)},
                      frozenset({b"name", b"arguments"}))


def tool_constraint(tools: Tools) -> Constraint | None:
    """"none": the call block may not be written; "required" or a named function: exactly one call, whose
    arguments match the function's parameters; "auto": the model decides, unconstrained."""
    if tools.choice == "none":
        return Constraint(forbid=(CALL_OPEN.encode(),))
    if tools.choice == "auto":
        return None
    chosen = [(i, s) for i, s in enumerate(tools.specs) if tools.forced in (None, s["function"]["name"])]
    nodes = [_call_node(s, f"tools[{i}].function") for i, s in chosen]
    root = nodes[0] if len(nodes) == 1 else UnionNode(tuple(nodes))
    # Calls are written as calls_as_text renders them (json.dumps: ", " and ": "): one blank at most.
    return Constraint(Grammar(root, CALL_OPEN.encode(), CALL_CLOSE.encode(), max_ws=1))


# -- response_format ------------------------------------------------------------------------------------------
def _mentions_json(messages: list[dict[str, Any]]) -> bool:
    for m in messages:
        content = m.get("content")
        texts = [content] if isinstance(content, str) else [
            p.get("text") for p in content if isinstance(p, dict)] if isinstance(content, list) else []
        if any(isinstance(t, str) and "json" in t.lower() for t in texts):
            return True
    return False


def response_constraint(body: CreateChatCompletionRequest, tools: Tools | None) -> Constraint | None:
    fmt = body.response_format
    if fmt is None or fmt.get("type") == "text":
        return None
    kind = fmt.get("type")
    if kind not in ("json_object", "json_schema"):
        raise _invalid("response_format.type", f"Invalid value for 'response_format.type': {str(kind)[:40]!r}. "
                       "Supported values are: 'text', 'json_object' and 'json_schema'.")
    if tools is not None and tools.choice != "none":
        raise _unsupported("response_format", "A JSON response_format together with tools the model may call is "
                           "not supported (send tool_choice 'none', or no tools)")
    if kind == "json_object":
        if not _mentions_json(body.messages):
            raise InvalidRequest("'messages' must contain the word 'json' in some form, to use 'response_format' "
                                 "of type 'json_object'.", param="messages")
        return Constraint(Grammar(FREE_OBJECT))
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise InvalidRequest("Missing required parameter: 'response_format.json_schema'.",
                             param="response_format.json_schema")
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise _invalid("response_format.json_schema.name", "Invalid 'response_format.json_schema.name': names are "
                       "1 to 64 letters, digits, underscores and dashes.")
    schema = spec.get("schema")
    if schema is None:
        return Constraint(Grammar(FREE_OBJECT))
    try:
        root = compile_schema(schema)
    except SchemaError as exc:
        raise InvalidRequest(f"Invalid schema for response_format '{name}': {exc}.", param="response_format",
                             code="invalid_value") from exc
    return Constraint(Grammar(root))
