"""Files API through the official SDK, strict, every answer checked against the spec."""

from __future__ import annotations

import hashlib
import io
import re
import time
from pathlib import Path
from urllib.parse import unquote

import httpx2
import openai
import pytest
from PIL import Image

from inhouse.services.blob_keys import BATCHES, CHECKPOINTS, FILES, IMAGES, PARTS, file_blob_key
from inhouse.storage.local_blobs import LocalBlobStore
from inhouse.storage.s3_blobs import PART_SIZE as S3_PART_SIZE
from tests.conftest import make_client
from tests.harness import ServerHandle, start_server

JSONL = b'{"messages": [{"role": "user", "content": "hi"}]}\n{"prompt": "a", "completion": "b"}\n'


def png_bytes(size: tuple[int, int] = (8, 8), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, "red").save(buf, format="PNG")
    return buf.getvalue()


def test_create_retrieve_content_delete(client: openai.OpenAI) -> None:
    f = client.files.create(file=("train.jsonl", JSONL), purpose="fine-tune")
    assert f.id.startswith("file-")
    assert (f.object, f.bytes, f.filename, f.purpose, f.status) == ("file", len(JSONL), "train.jsonl", "fine-tune",
                                                                      "processed")
    assert abs(f.created_at - time.time()) < 5
    assert f.expires_at is None
    got = client.files.retrieve(f.id)
    assert got == f
    assert client.files.content(f.id).read() == JSONL
    assert client.files.wait_for_processing(f.id).status == "processed"
    deleted = client.files.delete(f.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (f.id, True, "file")
    with pytest.raises(openai.NotFoundError) as exc:
        client.files.retrieve(f.id)
    assert exc.value.param == "id" and f.id in exc.value.message
    with pytest.raises(openai.NotFoundError):
        client.files.content(f.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(f.id)


@pytest.mark.parametrize("purpose", ["assistants", "batch", "fine-tune", "user_data", "evals"])
def test_every_text_purpose(client: openai.OpenAI, purpose: str) -> None:
    f = client.files.create(file=("x.jsonl", JSONL), purpose=purpose)  # type: ignore[arg-type]
    # OpenAIFile.purpose has no `evals` in the spec: such files read back as user_data.
    assert f.purpose == ("user_data" if purpose == "evals" else purpose)
    assert [x.id for x in client.files.list(purpose=purpose)] == [f.id]
    if purpose == "batch":  # batch files expire after 30 days unless told otherwise
        assert f.expires_at == f.created_at + 30 * 24 * 3600
    else:
        assert f.expires_at is None


def test_unknown_purpose_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("x.txt", b"x"), purpose="answers")  # type: ignore[arg-type]
    assert exc.value.param == "purpose"
    assert "'answers' is not one of" in exc.value.message


def test_missing_file_or_purpose(server: ServerHandle) -> None:
    r = httpx2.post(f"{server.base_url}/files", data={"purpose": "assistants"}, files={"other": ("a", b"a")})
    assert r.status_code == 400
    r = httpx2.post(f"{server.base_url}/files", files={"file": ("a.txt", b"abc")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = httpx2.post(f"{server.base_url}/files", json={"purpose": "assistants"})
    assert r.status_code == 400


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b'{"a": 1}\nnot json\n', 2),
        (b'{"a": 1}\n{"b": 2}\n[1, 2]\n', 3),
        (b'{"a": 1}\n\xff\xfe{"x": 1}\n', 2),
        (b'"just a string"', 1),
    ],
)
def test_bad_jsonl_names_the_line(client: openai.OpenAI, content: bytes, line: int) -> None:
    for purpose in ("fine-tune", "batch"):
        with pytest.raises(openai.BadRequestError) as exc:
            client.files.create(file=("bad.jsonl", content), purpose=purpose)  # type: ignore[arg-type]
        assert f"Line {line}:" in exc.value.message
        assert exc.value.param == "file"
    assert client.files.list().data == []


def test_jsonl_with_bom_crlf_and_blank_lines_is_fine(client: openai.OpenAI) -> None:
    content = b'\xef\xbb\xbf{"a": 1}\r\n\r\n{"b": 2}\r\n'
    assert client.files.create(file=("ok.jsonl", content), purpose="fine-tune").bytes == len(content)
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("empty.jsonl", b"\n\n"), purpose="fine-tune")


def test_vision_files_must_be_images(client: openai.OpenAI) -> None:
    f = client.files.create(file=("a.png", png_bytes()), purpose="vision")
    assert f.purpose == "vision"
    for bad in (b"not an image", png_bytes()[:40], b"GIF89a" + b"\x00" * 10):
        with pytest.raises(openai.BadRequestError) as exc:
            client.files.create(file=("a.png", bad), purpose="vision")
        assert exc.value.param == "file"


def test_expires_after(server: ServerHandle, client: openai.OpenAI) -> None:
    f = client.files.create(file=("a.txt", b"abc"), purpose="assistants",
                            expires_after={"anchor": "created_at", "seconds": 3600})
    assert f.expires_at == f.created_at + 3600
    keep = client.files.create(file=("b.txt", b"abc"), purpose="assistants")
    for seconds in (10, 2_592_001):
        with pytest.raises(openai.BadRequestError) as exc:
            client.files.create(file=("a.txt", b"abc"), purpose="assistants",
                                expires_after={"anchor": "created_at", "seconds": seconds})
        assert exc.value.param == "expires_after[seconds]"

    # Two hours later the file has left the list and the API, and the sweeper removes its bytes.
    later = lambda: int(time.time()) + 7200  # noqa: E731
    services = server.services
    services.files.clock = later
    services.maintenance.clock = later
    assert [x.id for x in client.files.list()] == [keep.id]
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)
    blob_size = lambda: server.call(services.blobs.size(file_blob_key(f.id)))  # noqa: E731
    assert blob_size() == 3  # the blob store still holds its bytes (a local directory, or S3)
    report = server.call(services.maintenance.sweep())
    assert report.expired_files == 1
    assert blob_size() is None
    assert server.call(services.blobs.list_keys(FILES)) == [file_blob_key(keep.id)]


def test_list_pagination_order_and_filter(client: openai.OpenAI) -> None:
    made = [client.files.create(file=(f"{i}.txt", b"x" * i), purpose="assistants" if i % 2 else "user_data")
            for i in range(7)]
    ids = [f.id for f in made]
    page = client.files.list(limit=3)
    assert [f.id for f in page.data] == ids[::-1][:3]
    assert page.has_more is True
    assert page.first_id == ids[6] and page.last_id == ids[4]
    assert [f.id for f in client.files.list(limit=3)] == ids[::-1]  # the auto-paginator follows `after`
    assert [f.id for f in client.files.list(limit=2, order="asc")] == ids
    last = client.files.list(limit=3, after=ids[2])
    assert [f.id for f in last.data] == [ids[1], ids[0]] and last.has_more is False
    exact = client.files.list(limit=7)
    assert len(exact.data) == 7 and exact.has_more is False
    assert [f.id for f in client.files.list(purpose="assistants")] == [ids[5], ids[3], ids[1]]
    empty = client.files.list(purpose="batch")
    assert empty.data == [] and empty.has_more is False
    for bad in (0, 10001):
        with pytest.raises(openai.BadRequestError) as exc:
            client.files.list(limit=bad)
        assert exc.value.param == "limit"
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.list(order="sideways")  # type: ignore[arg-type]
    assert exc.value.param == "order"


def filename_of(disposition: str) -> str:
    """The name a browser takes (RFC 6266): filename*, an RFC 5987 ext-value, wins over the ASCII filename."""
    found = re.search(r";\s*filename\*=([^;]*)", disposition)
    assert found, disposition
    charset, _language, encoded = found.group(1).strip().split("'", 2)
    assert charset.upper() == "UTF-8"
    assert re.fullmatch(r"[A-Za-z0-9!#$&+.^_`|~%-]*", encoded), encoded  # attr-chars and %XX only
    return unquote(encoded, encoding="utf-8", errors="strict")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/path/x.txt", "x.txt"),
        ("C:\\\\Windows\\\\evil.txt", "evil.txt"),
        ("a%0D%0Ab.txt", "a%0D%0Ab.txt"),  # httpx escapes CR/LF; the raw case is tested below
        ("..", "upload"),
        ("naïve résumé.txt", "naïve résumé.txt"),
        ("报告 📄; x.txt", "报告 📄; x.txt"),
    ],
)
def test_filenames_never_become_paths(server: ServerHandle, client: openai.OpenAI, given: str, stored: str) -> None:
    f = client.files.create(file=(given, b"data"), purpose="assistants")
    assert f.filename == stored
    r = httpx2.get(f"{server.base_url}/files/{f.id}/content")
    assert r.content == b"data"
    disposition = r.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=\"")
    assert "\r" not in disposition and "\n" not in disposition and "/" not in disposition.split(";")[1]
    assert disposition.isascii()
    assert filename_of(disposition) == stored  # the RFC 5987 filename* gives the name back exactly
    # Every key under every prefix the server forms: the file's bytes are stored under its id, nothing else is.
    stored = [k for prefix in (FILES, PARTS, CHECKPOINTS, BATCHES, IMAGES)
              for k in server.call(server.services.blobs.list_keys(prefix))]
    assert stored == [file_blob_key(f.id)]


def test_file_over_cap_is_413_and_leaves_nothing(settings_factory) -> None:  # type: ignore[no-untyped-def]
    # A cap over one S3 part: on S3 the refused upload has begun a multipart upload that must be aborted.
    cap = S3_PART_SIZE + 100_000
    settings = settings_factory()
    settings.limits.max_file_bytes = cap
    with start_server(settings) as server:
        c = make_client(server.base_url)
        with pytest.raises(openai.APIStatusError) as exc:
            c.files.create(file=("big.bin", b"x" * (cap + 1)), purpose="assistants")
        assert exc.value.status_code == 413
        ok = c.files.create(file=("ok.bin", b"x" * cap), purpose="assistants")
        assert ok.bytes == cap
        assert len(c.files.list().data) == 1
        blobs = server.services.blobs
        assert server.call(blobs.list_keys(FILES)) == [file_blob_key(ok.id)]
        # No temporary is left for the sweeper (a local temp file, an S3 multipart upload): removing every
        # temporary, however young, finds none.
        assert server.call(blobs.remove_temporaries(0)) == 0
        if isinstance(blobs, LocalBlobStore):
            # Local only: a temp file a writer still holds (locked) is one the sweep above skips; the
            # directory itself shows there is none.
            assert list((blobs.root / "tmp").iterdir()) == []


def test_large_file_streams_with_right_hash(client: openai.OpenAI, tmp_path: Path) -> None:
    data = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32) + b"tail"
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    with path.open("rb") as fh:
        f = client.files.create(file=fh, purpose="user_data")
    assert f.filename == "big.bin" and f.bytes == len(data)
    assert hashlib.sha256(client.files.content(f.id).read()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_raw_control_characters_in_filename(server: ServerHandle) -> None:
    body = (
        b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
        b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../a\x00b\x1bc.txt\"\r\n"
        b"Content-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n"
    )
    r = httpx2.post(f"{server.base_url}/files", content=body,
                    headers={"content-type": "multipart/form-data; boundary=XyZ"})
    assert r.status_code == 200, r.text
    assert r.json()["filename"] == "abc.txt"
