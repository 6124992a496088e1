"""Chat and legacy completions as requests: the checks a route makes before generating, and the body it
answers. Shared by the routes and by batches, so a batch line is checked and answered exactly as the route."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from inhouse.engines.causal.generation import Generated, SamplingParams
from inhouse.errors import InvalidRequest
from inhouse.schemas.chat import CreateChatCompletionRequest, CreateCompletionRequest
from inhouse.services.chat import ChatService, Prompt, Target

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


def usage_of(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def token_totals(results: Results) -> tuple[int, int]:
    """(prompt tokens, completion tokens) of a whole answer."""
    return sum(p for _, p in results), sum(o.tokens for outs, _ in results for o in outs)


async def plan_chat(chat: ChatService, project_id: str, body: CreateChatCompletionRequest) -> CompletionPlan:
    if body.logprobs:
        raise InvalidRequest("logprobs are not supported by this server.", param="logprobs")
    target = await chat.resolve(project_id, body.model)
    prompt = chat.chat_prompt(body.messages)
    asked = body.max_completion_tokens or body.max_tokens
    params, n = chat.params(max_tokens=asked, default_max=256, temperature=body.temperature, top_p=body.top_p,
                            n=body.n, stop=body.stop, seed=body.seed)
    return CompletionPlan("chat", body.model, target, [prompt], [], params, n, asked)


async def plan_completion(chat: ChatService, project_id: str, body: CreateCompletionRequest) -> CompletionPlan:
    if body.suffix is not None:
        raise InvalidRequest("suffix is not supported by this server.", param="suffix")
    if body.logprobs is not None:
        raise InvalidRequest("logprobs are not supported by this server.", param="logprobs")
    texts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not texts:
        raise InvalidRequest("prompt must not be empty.", param="prompt")
    prompts = chat.text_prompts(texts)
    target = await chat.resolve(project_id, body.model)
    params, n = chat.params(max_tokens=body.max_tokens, default_max=16, temperature=body.temperature,
                            top_p=body.top_p, n=body.n, stop=body.stop, seed=body.seed)
    return CompletionPlan("text", body.model, target, prompts, texts, params, n, body.max_tokens, bool(body.echo))


def completion_body(plan: CompletionPlan, results: Results, cid: str, created: int) -> dict[str, Any]:
    """The whole (non-streamed) answer: chat.completion or text_completion."""
    prompt_tokens, completion_tokens = token_totals(results)
    head = {"id": cid, "object": "chat.completion" if plan.kind == "chat" else "text_completion",
            "created": created, "model": plan.model, "system_fingerprint": FINGERPRINT}
    choices: list[dict[str, Any]]
    if plan.kind == "chat":
        [(outs, _)] = results
        choices = [{"index": i, "message": {"role": "assistant", "content": o.text, "refusal": None,
                                            "annotations": []},
                    "logprobs": None, "finish_reason": o.finish_reason} for i, o in enumerate(outs)]
    else:
        choices = [{"text": (text if plan.echo else "") + o.text, "index": p_index * plan.n + j, "logprobs": None,
                    "finish_reason": o.finish_reason}
                   for p_index, (text, (outs, _)) in enumerate(zip(plan.texts, results, strict=True))
                   for j, o in enumerate(outs)]
    return {**head, "choices": choices, "usage": usage_of(prompt_tokens, completion_tokens)}
