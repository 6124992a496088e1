"""Chat completions and legacy completions through the SDK on the tiny chat model: plain, streamed,
n, stop, seed, usage, and the errors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.harness import ServerHandle
from tests.llm import chat_tokens, no_end, text_tokens

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]


def test_chat_completion(llm: openai.OpenAI, tiny_llm: Path) -> None:
    r = llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0, max_tokens=6)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "gpt-4o-mini"
    choice = r.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None
    assert r.usage.prompt_tokens == chat_tokens(tiny_llm, MESSAGES, generation_prompt=True)
    assert r.usage.completion_tokens == 6 if choice.finish_reason == "length" else r.usage.completion_tokens < 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    again = llm.chat.completions.create(model="tiny-llm", messages=MESSAGES, temperature=0, max_tokens=6)
    assert again.choices[0].message.content == choice.message.content  # greedy is deterministic
    # Text parts are joined as they are: the same prompt, the same answer as one string.
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]}]
    joined = llm.chat.completions.create(model="tiny-llm", messages=parts, temperature=0, max_tokens=4)
    plain = llm.chat.completions.create(model="tiny-llm", messages=[{"role": "user", "content": "hello world"}],
                                        temperature=0, max_tokens=4)
    assert joined.usage is not None and plain.usage is not None
    assert joined.usage.prompt_tokens == plain.usage.prompt_tokens
    assert joined.choices[0].message.content == plain.choices[0].message.content


def test_developer_role_is_the_system_role(llm: openai.OpenAI) -> None:
    system = llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0, max_tokens=6)
    developer = llm.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "developer", "content": "be brief"}, MESSAGES[1]], temperature=0,
        max_tokens=6)
    assert developer.usage is not None and system.usage is not None
    assert developer.usage.prompt_tokens == system.usage.prompt_tokens  # rendered as the same system turn
    assert developer.choices[0].message.content == system.choices[0].message.content


def test_max_tokens_length_and_n(llm: openai.OpenAI, tiny_llm: Path) -> None:
    r = llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_completion_tokens=3, n=3,
                                    temperature=1.0, seed=4)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.finish_reason in ("length", "stop") for c in r.choices)
    assert r.usage.prompt_tokens == chat_tokens(tiny_llm, MESSAGES, generation_prompt=True)  # counted once
    runs_out = all(c.finish_reason == "length" for c in r.choices)
    assert r.usage.completion_tokens == 9 if runs_out else r.usage.completion_tokens < 9  # 3 choices of 3 tokens
    same = llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_completion_tokens=3, n=3,
                                       temperature=1.0, seed=4)
    assert [c.message.content for c in same.choices] == [c.message.content for c in r.choices]  # seeded


def test_stop_sequences(llm: openai.OpenAI) -> None:
    free = llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0, max_tokens=12)
    text = free.choices[0].message.content or ""
    assert len(text) >= 2
    stop = text[1:3]
    cut = llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0, max_tokens=12,
                                      stop=[stop, "never-there"])
    assert cut.choices[0].message.content == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in llm.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, temperature=0, max_tokens=12, stop=stop, stream=True) if c.choices)
    assert streamed == cut.choices[0].message.content  # the stop string never leaks into the stream


def test_streaming_matches_plain(llm: openai.OpenAI) -> None:
    plain = llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0, max_tokens=8)
    stream = llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0, max_tokens=8,
                                         stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_stream_ends_with_done(llm_server: ServerHandle) -> None:
    with httpx2.stream("POST", f"{llm_server.base_url}/chat/completions", timeout=60,
                       json={"model": "tiny-llm", "messages": MESSAGES, "max_tokens": 3, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        body = r.read().decode()
    assert body.rstrip().endswith("data: [DONE]")


def test_completions(llm: openai.OpenAI, tiny_llm: Path) -> None:
    r = llm.completions.create(model="davinci-002", prompt="hello world", max_tokens=5, temperature=0)
    assert r.object == "text_completion" and r.choices[0].index == 0
    assert r.usage is not None and r.usage.prompt_tokens == text_tokens(tiny_llm, "hello world")
    echo = llm.completions.create(model="davinci-002", prompt="hello world", max_tokens=5, temperature=0, echo=True)
    assert echo.choices[0].text == "hello world" + r.choices[0].text
    many = llm.completions.create(model="davinci-002", prompt=["hello", "world"], max_tokens=2, n=2)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.usage is not None
    assert many.usage.prompt_tokens == text_tokens(tiny_llm, "hello") + text_tokens(tiny_llm, "world")
    streamed = "".join(c.choices[0].text for c in llm.completions.create(
        model="davinci-002", prompt="hello world", max_tokens=5, temperature=0, stream=True) if c.choices)
    assert streamed == r.choices[0].text


@pytest.mark.parametrize(
    ("override", "param"),
    [({"n": 0}, "n"), ({"n": 99}, "n"), ({"temperature": 3}, "temperature"), ({"top_p": 0}, "top_p"),
     ({"max_tokens": 0}, "max_tokens"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
     ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"), ({"messages": []}, "messages"),
     ({"logprobs": True}, "logprobs")],
)
def test_bad_chat_requests(llm: openai.OpenAI, override: dict[str, object], param: str) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, **override}
    with pytest.raises(openai.BadRequestError) as exc:
        llm.chat.completions.create(**body)  # type: ignore[call-overload]
    assert exc.value.param == param


@pytest.mark.parametrize(("override", "param"), [({"suffix": "the end"}, "suffix"), ({"logprobs": 2}, "logprobs"),
                                                 ({"logprobs": 0}, "logprobs")])
def test_unsupported_completion_options_are_400(llm: openai.OpenAI, override: dict[str, object], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        llm.completions.create(model="davinci-002", prompt="hello", max_tokens=2, **override)  # type: ignore[call-overload]
    assert exc.value.param == param


def test_unknown_model(llm: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        llm.chat.completions.create(model="gpt-nope", messages=MESSAGES)
    assert exc.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        llm.chat.completions.create(model="all-MiniLM-L6-v2", messages=MESSAGES)  # an embedding model


class Slowed:
    """The loaded tiny-llm engine with each forward pass 10 ms slower (400 tokens take 4 s or more: a client
    leaves long before), counting the passes."""

    def __init__(self, llm: openai.OpenAI, server: ServerHandle, monkeypatch: pytest.MonkeyPatch) -> None:
        llm.chat.completions.create(model="tiny-llm", messages=MESSAGES, max_tokens=1)  # loads the engine
        self.engine = server.services.chat_engines._engines["tiny-llm"]
        self.real = self.engine.forward
        self.passes = 0
        monkeypatch.setattr(self.engine, "forward", self.slow)

    def slow(self, *args: object) -> object:
        self.passes += 1
        time.sleep(0.01)
        return self.real(*args)

    def wait_idle(self) -> None:
        deadline = time.monotonic() + 2
        while self.engine.scheduler.load:  # the row left the batch long before its 400 tokens
            assert time.monotonic() < deadline, "the abandoned request's row is still decoding"
            time.sleep(0.01)
        assert self.passes < 200


def test_a_client_that_leaves_mid_stream_frees_its_row_at_once(llm: openai.OpenAI, llm_server: ServerHandle,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    slowed = Slowed(llm, llm_server, monkeypatch)
    banned = no_end(slowed.engine)  # it runs to its 400 tokens
    with httpx2.stream("POST", f"{llm_server.base_url}/chat/completions", timeout=60,
                       json={"model": "tiny-llm", "messages": MESSAGES, "max_tokens": 400, "stream": True,
                             "temperature": 0, "logit_bias": banned}) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")  # the role frame
        assert next(line for line in lines if line).startswith("data: ")  # generating
        assert slowed.engine.scheduler.load == 1
    slowed.wait_idle()


@pytest.mark.parametrize("route", ["chat/completions", "completions"])
def test_a_client_that_leaves_before_its_plain_answer_frees_its_row_at_once(
        llm: openai.OpenAI, llm_server: ServerHandle, monkeypatch: pytest.MonkeyPatch, route: str) -> None:
    """A non-streamed request whose client gives up (a read timeout) stops generating at once, and its
    Idempotency-Key is not spent on the 499 no one read: the retry runs and answers."""
    slowed = Slowed(llm, llm_server, monkeypatch)
    body: dict[str, Any] = {"model": "tiny-llm", "max_tokens": 400, "temperature": 0,
                            "logit_bias": no_end(slowed.engine)}
    body |= {"messages": MESSAGES} if route == "chat/completions" else {"prompt": "hello world"}
    url, headers = f"{llm_server.base_url}/{route}", {"idempotency-key": f"leaving-{route}"}
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.post(url, json=body, headers=headers, timeout=httpx2.Timeout(10, read=0.5))
    slowed.wait_idle()
    assert slowed.passes > 5  # it was decoding when its client left
    monkeypatch.setattr(slowed.engine, "forward", slowed.real)
    again = httpx2.post(url, json=body, headers=headers, timeout=60)
    assert again.status_code == 200, again.text
    assert again.json()["usage"]["completion_tokens"] == 400


def test_a_stream_whose_client_leaves_during_a_send_is_closed_at_once() -> None:
    """A client that stops reading (the server's send waits on its full window) and then leaves: Starlette
    cancels the waiting send and leaves the frames' generator suspended at its yield. The response closes it
    before it returns (in the routes, closing the frames cancels the rows behind them), and frees its slot."""
    import asyncio

    from inhouse.api.chat import _HeldStream
    from inhouse.services.admission import Admission

    closed: list[str] = []

    async def frames() -> Any:
        try:
            while True:
                yield b"data: {}\n\n"
                await asyncio.sleep(0)
        finally:
            closed.append("frames")

    async def main() -> None:
        admission = Admission(lambda: 1, "busy", 1.0)
        response = _HeldStream(frames(), admission.acquire())
        stuck = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await stuck.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                stuck.set()
                await asyncio.Event().wait()  # the client's window is full: this send never completes

        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}}
        await asyncio.wait_for(response(scope, receive, send), 10)
        assert closed == ["frames"]  # `response` still holds the generator: it was closed, not collected
        admission.acquire().release()  # the slot is free again

    asyncio.run(main())


def test_concurrent_requests_decode_together_and_the_short_one_ends_first(llm: openai.OpenAI,
                                                                          llm_server: ServerHandle) -> None:
    import threading

    alone = {n: llm.chat.completions.create(model="tiny-llm", messages=MESSAGES, temperature=0, max_tokens=n)
             for n in (3, 300)}
    ended: dict[int, float] = {}
    answers: dict[int, openai.types.chat.ChatCompletion] = {}

    def ask(n: int) -> None:
        answers[n] = llm.chat.completions.create(model="tiny-llm", messages=MESSAGES, temperature=0, max_tokens=n)
        ended[n] = time.monotonic()

    long = threading.Thread(target=ask, args=(300,))
    long.start()
    engine = llm_server.services.chat_engines._engines["tiny-llm"]
    deadline = time.monotonic() + 30
    while not engine.scheduler.load:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    ask(3)
    long.join(120)
    assert ended[3] < ended[300]  # not queued behind the long one
    for n in (3, 300):
        assert answers[n].choices[0].message.content == alone[n].choices[0].message.content
        assert answers[n].usage == alone[n].usage


def test_streamed_choices_decode_together_and_match_the_plain_answer(llm: openai.OpenAI) -> None:
    kwargs = {"model": "tiny-llm", "messages": MESSAGES, "max_tokens": 12, "n": 3, "temperature": 1.3, "seed": 9}
    plain = llm.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    texts = ["", "", ""]
    order: list[int] = []
    finish: dict[int, str] = {}
    for chunk in llm.chat.completions.create(**kwargs, stream=True):  # type: ignore[call-overload]
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.delta.content:
                order.append(c.index)
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert texts == [c.message.content for c in plain.choices]  # the same seed, the same choices
    assert finish == {c.index: c.finish_reason for c in plain.choices}
    assert len(set(texts)) > 1  # each choice draws its own
    last_of_0 = max(i for i, x in enumerate(order) if x == 0)
    assert order.index(1) < last_of_0 and order.index(2) < last_of_0, order  # together, not one after another
    completions = llm.completions.create(model="tiny-llm", prompt=["a b", "c"], max_tokens=5, n=2, temperature=1.0,
                                         seed=3)
    streamed = ["", "", "", ""]
    for chunk in llm.completions.create(model="tiny-llm", prompt=["a b", "c"], max_tokens=5, n=2, temperature=1.0,
                                        seed=3, stream=True):
        for c in chunk.choices:
            streamed[c.index] += c.text
    assert streamed == [c.text for c in completions.choices]
