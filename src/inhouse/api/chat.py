"""Routes of /v1/chat/completions and /v1/completions, with SSE streaming that ends in `data: [DONE]`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from inhouse.api.deps import ProjectDep, ServicesDep
from inhouse.api.metering import MeterDep
from inhouse.engines.causal.generation import SamplingParams
from inhouse.errors import InhouseError, InvalidRequest
from inhouse.ids import new_id, now
from inhouse.schemas.chat import CreateChatCompletionRequest, CreateCompletionRequest
from inhouse.services.admission import Slot
from inhouse.services.chat import ChatService, Encoded, Prompt, Target

router = APIRouter(tags=["chat"])
log = logging.getLogger(__name__)
FINGERPRINT = "fp_inhouse"
DONE = b"data: [DONE]\n\n"


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


def _estimate(prompts: list[Prompt], params: SamplingParams, n: int) -> int:
    """Tokens taken from a token limit before generating (OpenAI's way): a quarter of the prompt's characters
    plus the most it may generate."""
    return sum(-(-p.chars // 4) for p in prompts) + params.max_new_tokens * n * len(prompts)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _HeldStream(StreamingResponse):
    """An SSE answer that holds its generation slot until its generation is over, or the client is gone: the
    slot is taken before the 200, so a full house is a 429, never an error frame."""

    def __init__(self, frames: AsyncIterator[bytes], slot: Slot) -> None:
        super().__init__(self._until_done(frames), media_type="text/event-stream",
                         headers={"cache-control": "no-cache"})
        self._slot = slot

    async def _until_done(self, frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for frame in frames:
            if frame == DONE:
                self._slot.release()  # free before the client sees [DONE], so its next request is admitted
            yield frame

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()


def _error_frame(exc: BaseException) -> bytes:
    if isinstance(exc, InhouseError):
        return _sse({"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}})
    log.exception("stream failed", exc_info=exc)
    return _sse({"error": {"message": "The server had an error while generating.", "type": "server_error",
                           "param": None, "code": None}})


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(body: CreateChatCompletionRequest, project: ProjectDep, services: ServicesDep,
                                 meter: MeterDep) -> JSONResponse | StreamingResponse:
    chat = services.chat
    if body.logprobs:
        raise InvalidRequest("logprobs are not supported by this server.", param="logprobs")
    target = await chat.resolve(project.id, body.model)
    prompt = chat.chat_prompt(body.messages)
    asked = body.max_completion_tokens or body.max_tokens
    params, n = chat.params(max_tokens=asked, default_max=256,
                            temperature=body.temperature, top_p=body.top_p, n=body.n, stop=body.stop,
                            seed=body.seed)
    meter.admit(lambda: _estimate([prompt], params, n))
    cid, created = new_id("chatcmpl"), now()
    if not body.stream:
        [(outs, prompt_tokens)] = await chat.generate(target, [prompt], params, n, asked)
        await meter.done(body.model, input_tokens=prompt_tokens, output_tokens=sum(o.tokens for o in outs))
        return JSONResponse({
            "id": cid, "object": "chat.completion", "created": created, "model": body.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": i, "message": {"role": "assistant", "content": o.text, "refusal": None,
                                                 "annotations": []},
                         "logprobs": None, "finish_reason": o.finish_reason} for i, o in enumerate(outs)],
            "usage": _usage(prompt_tokens, sum(o.tokens for o in outs)),
        })
    slot, [encoded] = await _admit_stream(chat, target, [prompt], params, asked)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": body.model,
            "system_fingerprint": FINGERPRINT}

    async def frames() -> AsyncIterator[bytes]:
        completion = 0
        prompt_tokens = 0
        try:
            for index in range(n):
                chunks, prompt_tokens = await chat.stream(target, encoded)
                yield _sse({**base, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                                 "logprobs": None, "finish_reason": None}]})
                async for delta, final in chunks:
                    if final is not None:
                        completion += final.tokens
                        yield _sse({**base, "choices": [{"index": index, "delta": {}, "logprobs": None,
                                                         "finish_reason": final.finish_reason}]})
                    elif delta:
                        yield _sse({**base, "choices": [{"index": index, "delta": {"content": delta},
                                                         "logprobs": None, "finish_reason": None}]})
            if include_usage:
                yield _sse({**base, "choices": [], "usage": _usage(prompt_tokens, completion)})
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
                            meter: MeterDep) -> JSONResponse | StreamingResponse:
    chat = services.chat
    if body.suffix is not None:
        raise InvalidRequest("suffix is not supported by this server.", param="suffix")
    if body.logprobs is not None:
        raise InvalidRequest("logprobs are not supported by this server.", param="logprobs")
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts:
        raise InvalidRequest("prompt must not be empty.", param="prompt")
    texts = chat.text_prompts(prompts)
    target = await chat.resolve(project.id, body.model)
    params, n = chat.params(max_tokens=body.max_tokens, default_max=16, temperature=body.temperature,
                            top_p=body.top_p, n=body.n, stop=body.stop, seed=body.seed)
    meter.admit(lambda: _estimate(texts, params, n))
    cid, created = new_id("cmpl"), now()
    echo = bool(body.echo)
    if not body.stream:
        choices, prompt_total, completion = [], 0, 0
        results = await chat.generate(target, texts, params, n, body.max_tokens)
        for p_index, (text, (outs, prompt_tokens)) in enumerate(zip(prompts, results, strict=True)):
            prompt_total += prompt_tokens
            for j, o in enumerate(outs):
                completion += o.tokens
                choices.append({"text": (text if echo else "") + o.text, "index": p_index * n + j,
                                "logprobs": None, "finish_reason": o.finish_reason})
        await meter.done(body.model, input_tokens=prompt_total, output_tokens=completion)
        return JSONResponse({"id": cid, "object": "text_completion", "created": created, "model": body.model,
                             "system_fingerprint": FINGERPRINT, "choices": choices,
                             "usage": _usage(prompt_total, completion)})
    slot, encoded = await _admit_stream(chat, target, texts, params, body.max_tokens)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    base = {"id": cid, "object": "text_completion", "created": created, "model": body.model,
            "system_fingerprint": FINGERPRINT}

    async def frames() -> AsyncIterator[bytes]:
        prompt_total, completion = 0, 0
        try:
            for p_index, (text, enc) in enumerate(zip(prompts, encoded, strict=True)):
                for j in range(n):
                    index = p_index * n + j
                    chunks, prompt_tokens = await chat.stream(target, enc)
                    prompt_total += prompt_tokens
                    if echo:
                        yield _sse({**base, "choices": [{"text": text, "index": index, "logprobs": None,
                                                         "finish_reason": None}]})
                    async for delta, final in chunks:
                        if final is not None:
                            completion += final.tokens
                            yield _sse({**base, "choices": [{"text": "", "index": index, "logprobs": None,
                                                             "finish_reason": final.finish_reason}]})
                        elif delta:
                            yield _sse({**base, "choices": [{"text": delta, "index": index, "logprobs": None,
                                                             "finish_reason": None}]})
            if include_usage:
                yield _sse({**base, "choices": [], "usage": _usage(prompt_total, completion)})
        except Exception as exc:
            yield _error_frame(exc)
        finally:  # also when the client goes away: what was generated counts
            if prompt_total:
                meter.done_nowait(body.model, input_tokens=prompt_total, output_tokens=completion)
        yield DONE

    return _HeldStream(frames(), slot)
