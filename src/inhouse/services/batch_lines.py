"""A batch's request lines run as their endpoint's route runs them: each body checked by the route's own model
and services, answered with the route's own body, its failure with the route's own status and error; the
lines of a chunk run together (embeddings in one length-sorted submission, chat in batched generation)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from inhouse.engines.causal.generation import Generated, SamplingParams
from inhouse.errors import InhouseError, InvalidRequest, Overloaded, http_status, validation_text
from inhouse.ids import new_id, new_ids, now
from inhouse.schemas.chat import CreateChatCompletionRequest, CreateCompletionRequest
from inhouse.schemas.embeddings import CreateEmbeddingRequest
from inhouse.schemas.images import CreateImageRequest
from inhouse.services.admission import Admission, Slot
from inhouse.services.chat import ChatService, Prompt
from inhouse.services.completions import CompletionPlan, completion_body, plan_chat, plan_completion, token_totals
from inhouse.services.embeddings import EmbeddingAsk, EmbeddingsService, embedding_body
from inhouse.services.images import ImagesService, generation_options

log = logging.getLogger(__name__)
_SCHEMAS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": CreateChatCompletionRequest,
    "/v1/completions": CreateCompletionRequest,
    "/v1/embeddings": CreateEmbeddingRequest,
    "/v1/images/generations": CreateImageRequest,
}


@dataclass(frozen=True)
class LineOutcome:
    """What the route would have answered: its status and body (JSON text, or a dict to print)."""

    status_code: int
    body: dict[str, Any] | str
    input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0

    @property
    def ok(self) -> bool:
        return self.status_code == 200


def failure(exc: InhouseError) -> LineOutcome:
    return LineOutcome(http_status(exc), {"error": {"message": exc.message, "type": exc.type, "param": exc.param,
                                                    "code": exc.code}})


def _internal(exc: BaseException) -> LineOutcome:
    log.error("batch line failed", exc_info=exc)
    return LineOutcome(500, {"error": {"message": "The server had an error while processing this request.",
                                       "type": "server_error", "param": None, "code": None}})


def parse_body(endpoint: str, body: Any) -> BaseModel:
    """The route's request model of `body`; InvalidRequest with the route's own message when it fails."""
    try:
        return _SCHEMAS[endpoint].model_validate(body)
    except ValidationError as exc:
        message, param = validation_text(exc.errors())
        raise InvalidRequest(message, param=param) from None


async def admitted(admission: Admission) -> Slot:
    """A slot of a live route's admission, waiting for it: a batch yields to live requests, never gets a 429."""
    while True:
        try:
            return admission.acquire()
        except Overloaded as full:
            await asyncio.sleep(min(full.retry_after_s, 0.25))


class BatchLines:
    def __init__(self, chat: ChatService, embeddings: EmbeddingsService, images: ImagesService,
                 base_url: Callable[[], str]) -> None:
        self.chat = chat
        self.embeddings = embeddings
        self.images = images
        self.base_url = base_url  # where the clients reach us: image URLs in an output file point there

    async def run(self, project_id: str, endpoint: str, bodies: list[Any]) -> list[LineOutcome]:
        """One outcome per body, in order. Never raises for a line's own problem."""
        runners: dict[str, Callable[[str, list[Any]], Awaitable[list[LineOutcome]]]] = {
            "/v1/embeddings": self._embeddings,
            "/v1/chat/completions": self._completions,
            "/v1/completions": self._completions,
            "/v1/images/generations": self._images,
        }
        return await runners[endpoint](project_id, [(endpoint, b) for b in bodies])

    # -- embeddings ---------------------------------------------------------------------------------------
    async def _embeddings(self, project_id: str, lines: list[Any]) -> list[LineOutcome]:
        out: list[LineOutcome | None] = [None] * len(lines)
        asks: list[EmbeddingAsk] = []
        where: list[int] = []
        for i, (endpoint, body) in enumerate(lines):
            try:
                req = parse_body(endpoint, body)
                assert isinstance(req, CreateEmbeddingRequest)
            except InhouseError as exc:
                out[i] = failure(exc)
                continue
            asks.append(EmbeddingAsk(req.model, req.input, req.encoding_format, req.dimensions))
            where.append(i)
        try:
            results: list[Any] = await self.embeddings.create_many(project_id, asks)
        except Exception as exc:  # the engine failed: every line of the chunk answers 500, as the route would
            results = [exc] * len(asks)

        def render() -> list[LineOutcome]:
            done = []
            for ask, result in zip(asks, results, strict=True):
                if isinstance(result, InhouseError):
                    done.append(failure(result))
                elif isinstance(result, BaseException):
                    done.append(_internal(result))
                else:
                    done.append(LineOutcome(200, embedding_body(result, ask.encoding_format),
                                            input_tokens=result.prompt_tokens))
            return done

        for i, outcome in zip(where, await asyncio.to_thread(render), strict=True):  # floats print slowly
            out[i] = outcome
        return [o for o in out if o is not None]

    # -- chat and legacy completions ----------------------------------------------------------------------
    async def _plan(self, project_id: str, endpoint: str, body: Any) -> CompletionPlan:
        req = parse_body(endpoint, body)
        if getattr(req, "stream", None):
            raise InvalidRequest("Streaming is not available in a batch; leave 'stream' unset.", param="stream")
        if isinstance(req, CreateChatCompletionRequest):
            return await plan_chat(self.chat, project_id, req)
        assert isinstance(req, CreateCompletionRequest)
        return await plan_completion(self.chat, project_id, req)

    async def _completions(self, project_id: str, lines: list[Any]) -> list[LineOutcome]:
        out: list[LineOutcome | None] = [None] * len(lines)
        plans: dict[int, CompletionPlan] = {}
        for i, (endpoint, body) in enumerate(lines):
            try:
                plans[i] = await self._plan(project_id, endpoint, body)
            except InhouseError as exc:
                out[i] = failure(exc)
        # Lines for one model (and adapter) generate together; each prompt of a line is one item.
        groups: dict[tuple[str, str | None], list[int]] = {}
        for i, plan in plans.items():
            groups.setdefault((plan.target.entry.id, plan.target.adapter_key), []).append(i)
        for members in groups.values():
            target = plans[members[0]].target
            items: list[tuple[Prompt, SamplingParams, int, int | None]] = []
            owner: list[int] = []
            for i in members:
                p = plans[i]
                items += [(prompt, p.params, p.n, p.asked) for prompt in p.prompts]
                owner += [i] * len(p.prompts)
            slot = await admitted(self.chat.admit)
            try:
                results = await self.chat.generate_many(target, items)
            except Exception as exc:  # the engine failed: each of these lines answers 500, as the route would
                for i in members:
                    out[i] = _internal(exc)
                continue
            finally:
                slot.release()
            per_line: dict[int, list[tuple[list[Generated], int] | InhouseError]] = {}
            for i, result in zip(owner, results, strict=True):
                per_line.setdefault(i, []).append(result)
            for i, got in per_line.items():
                error = next((r for r in got if isinstance(r, InhouseError)), None)
                if error is not None:
                    out[i] = failure(error)
                    continue
                ok = [r for r in got if not isinstance(r, InhouseError)]
                prefix = "chatcmpl" if plans[i].kind == "chat" else "cmpl"
                prompt_tokens, completion_tokens = token_totals(ok)
                out[i] = LineOutcome(200, completion_body(plans[i], ok, new_id(prefix), now()),
                                     prompt_tokens, completion_tokens)
        return [o for o in out if o is not None]

    # -- images -------------------------------------------------------------------------------------------
    async def _images(self, project_id: str, lines: list[Any]) -> list[LineOutcome]:
        out = []
        for endpoint, body in lines:
            try:
                req = parse_body(endpoint, body)
                assert isinstance(req, CreateImageRequest)
                options = generation_options(req)
                slot = await admitted(self.images.admit)
                try:
                    plan, images = await self.images.generate(options)
                    answer = await self.images.answer(plan, images, self.base_url())
                finally:
                    slot.release()
                out.append(LineOutcome(200, answer, images=len(answer["data"])))
            except InhouseError as exc:
                out.append(failure(exc))
            except Exception as exc:
                out.append(_internal(exc))
        return out


def output_lines(custom_ids: list[str], outcomes: list[LineOutcome]) -> list[str]:
    """Lines of the output or error file, exactly OpenAI's shape (each body printed once, never re-parsed)."""
    line_ids, request_ids = new_ids("batch_req", len(outcomes)), new_ids("req", len(outcomes))
    out = []
    for line_id, request_id, custom_id, outcome in zip(line_ids, request_ids, custom_ids, outcomes, strict=True):
        body = outcome.body if isinstance(outcome.body, str) else json.dumps(outcome.body, separators=(",", ":"))
        # The ids are [A-Za-z0-9_]: no JSON escaping needed; the caller's custom_id is escaped.
        out.append(f'{{"id":"{line_id}","custom_id":{json.dumps(custom_id)},"response":{{"status_code":'
                   f'{outcome.status_code},"request_id":"{request_id}","body":{body}}},"error":null}}')
    return out


def unrun_line(custom_id: str, code: str, message: str) -> str:
    """A line that never ran (the batch was cancelled or expired first): an error and no response."""
    return json.dumps({"id": new_id("batch_req"), "custom_id": custom_id, "response": None,
                       "error": {"code": code, "message": message}}, separators=(",", ":"))
