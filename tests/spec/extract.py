"""Regenerate openai_schemas.json: the spec components our tests validate against, with their closure.

Run: python tests/spec/extract.py ../shared/openai-openapi.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOTS = [
    "OpenAIFile", "ListFilesResponse", "DeleteFileResponse", "Upload", "UploadPart", "Model",
    "ListModelsResponse", "DeleteModelResponse", "ErrorResponse", "CreateEmbeddingResponse",
    "FineTuningJob", "ListPaginatedFineTuningJobsResponse", "ListFineTuningJobEventsResponse",
    "ListFineTuningJobCheckpointsResponse", "CreateChatCompletionResponse", "CreateCompletionResponse",
    "ImagesResponse", "UsageResponse", "ProjectListResponse", "Project", "ProjectApiKey",
    "ProjectApiKeyListResponse", "ProjectApiKeyDeleteResponse", "Batch", "ListBatchesResponse",
]


def refs(node: object, out: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/components/schemas/"):
                out.add(v.rsplit("/", 1)[1])
            else:
                refs(v, out)
    elif isinstance(node, list):
        for v in node:
            refs(v, out)


def modernize(node: object) -> None:
    """The spec mixes in OpenAPI 3.0 booleans for exclusiveMinimum/Maximum; JSON Schema 2020-12 wants numbers."""
    if isinstance(node, dict):
        for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if node.get(key) is True and bound in node:
                node[key] = node.pop(bound)
            elif node.get(key) is False:
                del node[key]
        for v in node.values():
            modernize(v)
    elif isinstance(node, list):
        for v in node:
            modernize(v)


def main(spec_path: str) -> None:
    spec = yaml.load(Path(spec_path).read_text(), Loader=yaml.CSafeLoader)
    schemas = spec["components"]["schemas"]
    todo, done = list(ROOTS), {}
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done[name] = schemas[name]
        found: set[str] = set()
        refs(schemas[name], found)
        todo.extend(found - done.keys())
    # Deviation, deliberate: an empty list has no first or last id, so we send null there, as the live
    # API does; the spec types them as plain strings.
    for key in ("first_id", "last_id"):
        done["ListFilesResponse"]["properties"][key] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    # With encoding_format=base64 (the SDK's default) the API answers a base64 string, which the spec's
    # Embedding type (a float array only) does not describe.
    array = done["Embedding"]["properties"]["embedding"]
    done["Embedding"]["properties"]["embedding"] = {"anyOf": [array, {"type": "string", "contentEncoding": "base64"}]}
    # The pause endpoint answers status "paused" (the spec's own example) though the status enum lacks it.
    done["FineTuningJob"]["properties"]["status"]["enum"].append("paused")
    modernize(done)
    out = {"source": f"openai-openapi.yaml {spec['info']['version']}", "schemas": dict(sorted(done.items()))}
    (Path(__file__).parent / "openai_schemas.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
