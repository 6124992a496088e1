"""Chat and legacy completions as requests: the checks a route makes before generating, and the body it
answers. Shared by the routes and by batches, so a batch line is checked and answered exactly as the route.
Which request fields are honoured, accepted or refused: chat_params.py."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from inhouse.engines.causal.data import CALL_OPEN, calls_from_text

# SamplingParams is re-exported: the routes hold a plan's params without importing the engine layer.
from inhouse.engines.causal.generation import Generated
from inhouse.engines.causal.generation import SamplingParams as SamplingParams
from inhouse.errors import InvalidRequest
from inhouse.ids import new_id
from inhouse.schemas.chat import CreateChatCompletionRequest, CreateCompletionRequest
from inhouse.services.chat import ChatService, Prompt, Target
from inhouse.services.chat_params import (
    Tools,
    chat_tools,
    penalties,
    refuse_unsupported_chat,
    refuse_unsupported_completion,
    response_constraint,
    tool_constraint,
)

FINGERPRINT = "fp_inhouse"
# Per prompt: its choices and its prompt token count.
Results = list[tuple[list[Generated], int]]


@dataclass(frozen=True)
class CompletionPlan:
    kind: Literal["chat", "text"]
    model: str  # as the caller named it, echoed in the answer
    target: Target
    prompts: list[Prompt]
    texts: list[str]  # the prompts as given (legacy completions echo them)
    params: SamplingParams
    n: int
    asked: int | None  # max_tokens as asked (None: the default, cut to the room the prompt leaves)
    echo: bool = False
    tools: Tools | None = None  # chat only: the tools the model may call


def usage_of(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def token_totals(results: Results) -> tuple[int, int]:
    """(prompt tokens, completion tokens) of a whole answer."""
    return sum(p for _, p in results), sum(o.tokens for outs, _ in results for o in outs)


def _with_penalties(params: SamplingParams, body: CreateChatCompletionRequest | CreateCompletionRequest
                    ) -> SamplingParams:
    p = penalties(body)
    return replace(params, frequency_penalty=p.frequency_penalty, presence_penalty=p.presence_penalty,
                   logit_bias=p.logit_bias)


async def plan_chat(chat: ChatService, project_id: str, body: CreateChatCompletionRequest) -> CompletionPlan:
    refuse_unsupported_chat(body)
    tools = chat_tools(body)
    constraint = response_constraint(body, tools) or (tool_constraint(tools) if tools else None)
    target = await chat.resolve(project_id, body.model)
    prompt = chat.chat_prompt(body.messages, tools.specs if tools else None)
    asked = body.max_completion_tokens or body.max_tokens
    params, n = chat.params(max_tokens=asked, default_max=256, temperature=body.temperature, top_p=body.top_p,
                            n=body.n, stop=body.stop, seed=body.seed)
    params = replace(_with_penalties(params, body), constraint=constraint)
    return CompletionPlan("chat", body.model, target, [prompt], [], params, n, asked, tools=tools)


async def plan_completion(chat: ChatService, project_id: str, body: CreateCompletionRequest) -> CompletionPlan:
    refuse_unsupported_completion(body)
    texts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not texts:
        raise InvalidRequest("prompt must not be empty.", param="prompt")
    prompts = chat.text_prompts(texts)
    target = await chat.resolve(project_id, body.model)
    params, n = chat.params(max_tokens=body.max_tokens, default_max=16, temperature=body.temperature,
                            top_p=body.top_p, n=body.n, stop=body.stop, seed=body.seed)
    return CompletionPlan("text", body.model, target, prompts, texts, _with_penalties(params, body), n,
                          body.max_tokens, bool(body.echo))


@dataclass(frozen=True)
class Answer:
    """One chat choice as the client sees it: its text (None when it only calls), calls, finish_reason."""

    content: str | None
    calls: list[dict[str, Any]]  # OpenAI tool calls: id, type "function", function {name, arguments}
    finish_reason: str


def answer_of(plan: CompletionPlan, out: Generated) -> Answer:
    tools = plan.tools
    if tools is None or not tools.parse:
        return Answer(out.text, [], out.finish_reason)
    rest, found = calls_from_text(out.text, set(tools.names))
    if not found:
        return Answer(out.text, [], out.finish_reason)
    if not tools.parallel:
        found = found[:1]  # parallel_tool_calls false (and functions): one call at most
    calls = [{"id": new_id("call"), "type": "function", "function": {"name": name, "arguments": args}}
             for name, args in found]
    reason = out.finish_reason
    if reason == "stop":
        reason = "function_call" if tools.legacy else "tool_calls"
    return Answer(rest if rest.strip() else None, calls, reason)


def chat_message(plan: CompletionPlan, answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None, "annotations": []}
    if answer.calls and plan.tools is not None and plan.tools.legacy:
        message["function_call"] = answer.calls[0]["function"]
    elif answer.calls:
        message["tool_calls"] = answer.calls
    return message


def completion_body(plan: CompletionPlan, results: Results, cid: str, created: int) -> dict[str, Any]:
    """The whole (non-streamed) answer: chat.completion or text_completion."""
    prompt_tokens, completion_tokens = token_totals(results)
    head = {"id": cid, "object": "chat.completion" if plan.kind == "chat" else "text_completion",
            "created": created, "model": plan.model, "system_fingerprint": FINGERPRINT}
    choices: list[dict[str, Any]]
    if plan.kind == "chat":
        [(outs, _)] = results
        answers = [answer_of(plan, o) for o in outs]
        choices = [{"index": i, "message": chat_message(plan, a), "logprobs": None, "finish_reason": a.finish_reason}
                   for i, a in enumerate(answers)]
    else:
        choices = [{"text": (text if plan.echo else "") + o.text, "index": p_index * plan.n + j, "logprobs": None,
                    "finish_reason": o.finish_reason}
                   for p_index, (text, (outs, _)) in enumerate(zip(plan.texts, results, strict=True))
                   for j, o in enumerate(outs)]
    return {**head, "choices": choices, "usage": usage_of(prompt_tokens, completion_tokens)}


class ChoiceStream:
    """One streamed chat choice's deltas. Without callable tools, text deltas pass as content. With them, text
    streams as content until a call block may begin (held back: a possible "<tool_call>" and the whitespace
    before it), and the rest is decided at the end, as the whole answer would be (answer_of): calls go out as
    tool_calls (or function_call) deltas, any other text as content."""

    def __init__(self, plan: CompletionPlan) -> None:
        self.plan = plan
        self.parse = plan.tools is not None and plan.tools.parse
        self.text, self.sent = "", 0

    def delta(self, piece: str) -> list[dict[str, Any]]:
        if not self.parse:
            return [{"content": piece}] if piece else []
        self.text += piece
        safe = self.text.find(CALL_OPEN)
        if safe < 0:
            safe = len(self.text)
            for k in range(min(len(CALL_OPEN) - 1, len(self.text)), 0, -1):  # a block may be starting
                if CALL_OPEN.startswith(self.text[-k:]):
                    safe -= k
                    break
        while safe > self.sent and self.text[safe - 1].isspace():
            safe -= 1
        if safe <= self.sent:
            return []
        out, self.sent = self.text[self.sent : safe], safe
        return [{"content": out}]

    def finish(self, final: Generated) -> tuple[list[dict[str, Any]], str]:
        """The deltas still due, and the choice's finish_reason."""
        if not self.parse:
            return [], final.finish_reason
        answer = answer_of(self.plan, final)
        out: list[dict[str, Any]] = []
        rest = (answer.content or "")[self.sent :] if answer.calls else final.text[self.sent :]
        if rest:
            out.append({"content": rest})
        if answer.calls and self.plan.tools is not None and self.plan.tools.legacy:
            out.append({"function_call": answer.calls[0]["function"]})
        elif answer.calls:
            out.append({"tool_calls": [{"index": k, **call} for k, call in enumerate(answer.calls)]})
        return out, answer.finish_reason
