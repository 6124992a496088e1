"""Docs that must not drift: the settings reference, and a description on every setting."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from inhouse.config import Settings
from inhouse.config_doc import render

ROOT = Path(__file__).parents[1]


def test_configuration_doc_is_current() -> None:
    current = (ROOT / "docs" / "configuration.md").read_text()
    assert current == render(), "run: inhouse config docs > docs/configuration.md"


def test_every_setting_is_described() -> None:
    def walk(model: type[BaseModel], prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                missing += walk(ann, f"{prefix}{name}.")
            elif not field.description:
                missing.append(prefix + name)
        return missing

    assert walk(Settings, "") == []
