"""Routes of /v1/chat/completions and /v1/completions, with SSE streaming that ends in `data: [DONE]`."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from inhouse.api.deps import ProjectDep, ServicesDep
from inhouse.api.disconnect import unless_gone
from inhouse.api.metering import MeterDep
from inhouse.errors import InhouseError
from inhouse.ids import new_id, now
from inhouse.schemas.chat import CreateChatCompletionRequest, CreateCompletionRequest
from inhouse.services.admission import Slot
from inhouse.services.chat import ChatService, Encoded, Prompt, Target
from inhouse.services.completions import (
    FINGERPRINT,
    ChoiceStream,
    SamplingParams,
    completion_body,
    plan_chat,
    plan_completion,
    token_totals,
    usage_of,
)

router = APIRouter(tags=["chat"])
log = logging.getLogger(__name__)
DONE = b"data: [DONE]\n\n"


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


def _estimate(prompts: list[Prompt], params: SamplingParams, n: int) -> int:
    """Tokens taken from a token limit before generating (OpenAI's way): a quarter of the prompt's characters
    plus the most it may generate."""
    return sum(-(-p.chars // 4) for p in prompts) + params.max_new_tokens * n * len(prompts)


class _HeldStream(StreamingResponse):
    """An SSE answer that holds its generation slot until its generation is over, or the client is gone: the
    slot is taken before the 200, so a full house is a 429, never an error frame.

    When the client leaves while a frame is being sent (a reader that stopped reading, then left), Starlette
    cancels the send and leaves the frames' generator suspended at its yield: it is closed here, so the rows
    behind it leave the batch now rather than whenever the garbage collector finds the generator."""

    def __init__(self, frames: AsyncGenerator[bytes, None], slot: Slot) -> None:
        self._frames = self._until_done(frames)
        super().__init__(self._frames, media_type="text/event-stream", headers={"cache-control": "no-cache"})
        self._slot = slot

    async def _until_done(self, frames: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        async with contextlib.aclosing(frames):
            async for frame in frames:
                if frame == DONE:
                    self._slot.release()  # free before the client sees [DONE], so its next request is admitted
                yield frame

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()
            await self._frames.aclose()  # a no-op once the frames ran out


def _error_frame(exc: BaseException) -> bytes:
    if isinstance(exc, InhouseError):
        return _sse({"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}})
    log.exception("stream failed", exc_info=exc)
    return _sse({"error": {"message": "The server had an error while generating.", "type": "server_error",
                           "param": None, "code": None}})


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(body: CreateChatCompletionRequest, project: ProjectDep, services: ServicesDep,
                                 meter: MeterDep, request: Request) -> JSONResponse | StreamingResponse:
    chat = services.chat
    plan = await plan_chat(chat, project.id, body)
    target, [prompt], params, n, asked = plan.target, plan.prompts, plan.params, plan.n, plan.asked
    meter.admit(lambda: _estimate([prompt], params, n))
    cid, created = new_id("chatcmpl"), now()
    if not body.stream:
        results = await unless_gone(request, chat.generate(target, [prompt], params, n, asked))
        prompt_tokens, completion_tokens = token_totals(results)
        await meter.done(body.model, input_tokens=prompt_tokens, output_tokens=completion_tokens)
        return JSONResponse(completion_body(plan, results, cid, created))
    slot, [encoded] = await _admit_stream(chat, target, [prompt], params, asked)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": body.model,
            "system_fingerprint": FINGERPRINT}

    async def frames() -> AsyncGenerator[bytes, None]:
        completion = 0
        prompt_tokens = 0
        try:
            chunks, prompt_tokens = await chat.stream(target, encoded, n)
            choices = [ChoiceStream(plan) for _ in range(n)]  # content deltas, and tool calls once whole
            for index in range(n):
                yield _sse({**base, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                                 "logprobs": None, "finish_reason": None}]})
            async with contextlib.aclosing(chunks):  # closing the frames cancels the rows at once
                async for index, delta, final in chunks:
                    choice = choices[index]
                    due, reason = choice.finish(final) if final is not None else (choice.delta(delta), None)
                    for d in due:
                        yield _sse({**base, "choices": [{"index": index, "delta": d, "logprobs": None,
                                                         "finish_reason": None}]})
                    if final is not None:
                        completion += final.tokens
                        yield _sse({**base, "choices": [{"index": index, "delta": {}, "logprobs": None,
                                                         "finish_reason": reason}]})
            if include_usage:
                yield _sse({**base, "choices": [], "usage": usage_of(prompt_tokens, completion)})
        except Exception as exc:
            yield _error_frame(exc)
        finally:  # also when the client goes away: what was generated counts
            if prompt_tokens:
                meter.done_nowait(body.model, input_tokens=prompt_tokens, output_tokens=completion)
        yield DONE

    return _HeldStream(frames(), slot)


async def _admit_stream(chat: ChatService, target: Target, prompts: list[Prompt],
                        params: SamplingParams, asked: int | None) -> tuple[Slot, list[Encoded]]:
    """A stream's slot, then its prompts checked and tokenized: both before the 200, so a full house is a 429
    and a prompt over the context a 400, never an error frame."""
    slot = chat.admit.acquire()
    try:
        return slot, await chat.encode(target, prompts, params, asked)
    except BaseException:
        slot.release()
        raise


@router.post("/completions", response_model=None)
async def create_completion(body: CreateCompletionRequest, project: ProjectDep, services: ServicesDep,
                            meter: MeterDep, request: Request) -> JSONResponse | StreamingResponse:
    chat = services.chat
    plan = await plan_completion(chat, project.id, body)
    target, texts, prompts, params, n = plan.target, plan.prompts, plan.texts, plan.params, plan.n
    meter.admit(lambda: _estimate(texts, params, n))
    cid, created = new_id("cmpl"), now()
    echo = plan.echo
    if not body.stream:
        results = await unless_gone(request, chat.generate(target, texts, params, n, body.max_tokens))
        prompt_tokens, completion_tokens = token_totals(results)
        await meter.done(body.model, input_tokens=prompt_tokens, output_tokens=completion_tokens)
        return JSONResponse(completion_body(plan, results, cid, created))
    slot, encoded = await _admit_stream(chat, target, texts, params, body.max_tokens)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    base = {"id": cid, "object": "text_completion", "created": created, "model": body.model,
            "system_fingerprint": FINGERPRINT}

    async def frames() -> AsyncGenerator[bytes, None]:
        prompt_total, completion = 0, 0
        try:
            for p_index, (text, enc) in enumerate(zip(prompts, encoded, strict=True)):
                chunks, prompt_tokens = await chat.stream(target, enc, n)
                prompt_total += prompt_tokens  # once per prompt, as the plain answer counts it
                if echo:
                    for j in range(n):
                        yield _sse({**base, "choices": [{"text": text, "index": p_index * n + j, "logprobs": None,
                                                         "finish_reason": None}]})
                async with contextlib.aclosing(chunks):  # closing the frames cancels the rows at once
                    async for j, delta, final in chunks:
                        index = p_index * n + j
                        if final is not None:
                            completion += final.tokens
                            yield _sse({**base, "choices": [{"text": "", "index": index, "logprobs": None,
                                                             "finish_reason": final.finish_reason}]})
                        elif delta:
                            yield _sse({**base, "choices": [{"text": delta, "index": index, "logprobs": None,
                                                             "finish_reason": None}]})
            if include_usage:
                yield _sse({**base, "choices": [], "usage": usage_of(prompt_total, completion)})
        except Exception as exc:
            yield _error_frame(exc)
        finally:  # also when the client goes away: what was generated counts
            if prompt_total:
                meter.done_nowait(body.model, input_tokens=prompt_total, output_tokens=completion)
        yield DONE

    return _HeldStream(frames(), slot)
