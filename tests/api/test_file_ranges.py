"""Ranged downloads of a file's content (RFC 9110): 206 with Content-Range for one range, the whole content for
what a server may ignore, 416 in the OpenAI envelope for a range past the end; If-Range by the file's ETag."""

from __future__ import annotations

import hashlib
import os

import openai
import pytest

DATA = os.urandom(3 * 1024 * 1024 + 17)  # larger than a blob read's chunk, and not a multiple of it


@pytest.fixture
def file_id(client: openai.OpenAI) -> str:
    return client.files.create(file=("data.bin", DATA), purpose="user_data").id


def ranged(client: openai.OpenAI, file_id: str, header: str, **more: str) -> openai.APIResponse[object]:
    raw = client.files.with_raw_response.content(file_id, extra_headers={"Range": header, **more})
    return raw  # type: ignore[return-value]


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-9", 0, 10),
    ("bytes=1048570-1048600", 1048570, 1048601),  # across a chunk's edge
    ("bytes=3145000-", 3145000, len(DATA)),
    ("bytes=-100", len(DATA) - 100, len(DATA)),
    ("bytes=-999999999", 0, len(DATA)),  # a suffix longer than the content: all of it
    ("bytes=10-999999999999", 10, len(DATA)),  # an end past the content's: cut at it
    ("BYTES = 5 - 5", 5, 6),
])
def test_one_range_is_206_with_its_bytes(client: openai.OpenAI, file_id: str, header: str, start: int,
                                         end: int) -> None:
    raw = ranged(client, file_id, header)
    assert raw.status_code == 206
    assert raw.headers["content-range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
    assert int(raw.headers["content-length"]) == end - start
    assert raw.http_response.read() == DATA[start:end]


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "bytes=9-0", "items=0-9", "bytes=a-b", "bytes=-", "0-9",
                                    "bytes=" + "9" * 30 + "-"])
def test_what_a_server_may_ignore_gets_the_whole_content(client: openai.OpenAI, file_id: str, header: str) -> None:
    raw = ranged(client, file_id, header)
    assert raw.status_code == 200
    assert "content-range" not in raw.headers
    assert raw.headers["accept-ranges"] == "bytes"
    assert raw.http_response.read() == DATA


@pytest.mark.parametrize("header", [f"bytes={len(DATA)}-", f"bytes={len(DATA) + 5}-{len(DATA) + 9}", "bytes=-0"])
def test_a_range_past_the_end_is_416_in_the_envelope(client: openai.OpenAI, file_id: str, header: str) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.content(file_id, extra_headers={"Range": header})
    err = caught.value
    assert err.status_code == 416
    assert err.response.headers["content-range"] == f"bytes */{len(DATA)}"
    body = err.response.json()["error"]
    assert (body["type"], body["param"], body["code"]) == ("invalid_request_error", "range", "range_not_satisfiable")


def test_if_range_applies_only_to_the_same_content(client: openai.OpenAI, file_id: str) -> None:
    whole = client.files.with_raw_response.content(file_id)
    etag = whole.headers["etag"]
    assert etag == f'"{hashlib.sha256(DATA).hexdigest()}"'
    same = ranged(client, file_id, "bytes=100-199", **{"If-Range": etag})
    assert (same.status_code, same.http_response.read()) == (206, DATA[100:200])
    for other in ('"0000"', "Wed, 21 Oct 2015 07:28:00 GMT"):
        changed = ranged(client, file_id, "bytes=100-199", **{"If-Range": other})
        assert (changed.status_code, changed.http_response.read()) == (200, DATA)


def test_an_empty_file_has_no_range(client: openai.OpenAI) -> None:
    empty = client.files.create(file=("empty.bin", b""), purpose="user_data").id
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.content(empty, extra_headers={"Range": "bytes=0-"})
    assert caught.value.status_code == 416
    assert client.files.content(empty).read() == b""


def test_a_range_of_a_missing_file_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-nope", extra_headers={"Range": "bytes=0-9"})
