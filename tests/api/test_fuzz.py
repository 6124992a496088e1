"""Reliability 7 (bounded): random JSON and multipart bodies on every POST route never cause a 5xx, and
every error keeps the OpenAI envelope."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx2

from tests.harness import ServerHandle, check_response

JSON_ROUTES = ["/v1/uploads", "/v1/uploads/upload_x/complete", "/v1/embeddings", "/v1/fine_tuning/jobs",
               "/v1/chat/completions", "/v1/completions", "/v1/images/generations"]
MULTIPART_ROUTES = ["/v1/files", "/v1/uploads/upload_x/parts", "/v1/images/edits", "/v1/images/variations"]
KEYS = ["model", "input", "prompt", "messages", "training_file", "method", "hyperparameters", "n", "size", "bytes",
        "part_ids", "purpose", "filename", "mime_type", "stop", "seed", "metadata", "suffix", "encoding_format",
        "dimensions", "max_tokens", "temperature", "stream", "response_format", "quality", "style", "inhouse"]


def value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, 10**30, 3])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e308, 2.5])
    if kind == 4:
        return rng.choice(["", "x", "gpt-4o-mini", "text-embedding-3-small", "dall-e-3", "file-x", "\u0000",
                           "ü" * 50, "supervised", "dpo", "auto", "1024x1024"])
    if kind == 5:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(1, 30)))
    if kind == 6:
        return [value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    keys = [*KEYS, "type", "role", "content"]
    return {rng.choice(keys): value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


def test_random_json_never_5xx(llm_server: ServerHandle) -> None:
    rng = random.Random(1234)
    with httpx2.Client(timeout=60) as http:
        for i in range(300):
            route = JSON_ROUTES[i % len(JSON_ROUTES)]
            body = {k: value(rng) for k in rng.sample(KEYS, rng.randrange(0, 6))}
            if rng.random() < 0.1:
                body = value(rng)
            r = http.post(llm_server.origin + route, content=json.dumps(body, allow_nan=True),
                          headers={"content-type": "application/json"})
            check_response(r)  # the envelope on every error, the spec's shape on every success
            assert r.status_code < 500, (route, body, r.text)


def test_random_multipart_never_5xx(llm_server: ServerHandle) -> None:
    rng = random.Random(99)
    with httpx2.Client(timeout=60) as http:
        for i in range(120):
            route = MULTIPART_ROUTES[i % len(MULTIPART_ROUTES)]
            data = {k: str(value(rng)) for k in rng.sample(KEYS, rng.randrange(0, 5))}
            files = {rng.choice(["file", "image", "image[]", "mask", "data", "other"]):
                     ("f.bin", rng.randbytes(rng.randrange(0, 3000)))}
            r = http.post(llm_server.origin + route, data=data, files=files)
            check_response(r)
            assert r.status_code < 500, (route, data, r.text)
