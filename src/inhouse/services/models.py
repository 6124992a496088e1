"""Models: configured local models (with their OpenAI aliases) and models created here (fine-tunes)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from inhouse.config import ModelEntry
from inhouse.engines.locate import locate_model
from inhouse.errors import NotFound, PermissionDenied
from inhouse.ids import now
from inhouse.storage.base import ModelStore

SYSTEM_OWNER = "system"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    created: int
    owned_by: str


def model_not_found(model: str, param: str | None = None) -> NotFound:
    return NotFound(
        f"The model `{model}` does not exist or you do not have access to it.", param=param, code="model_not_found"
    )


class ModelsService:
    def __init__(self, store: ModelStore, entries: list[ModelEntry], clock: Callable[[], int] = now) -> None:
        self.store = store
        self.entries = entries
        self.clock = clock
        self._started = clock()
        self._created_at: dict[str, int] = {}
        self._names: dict[str, tuple[ModelEntry, str]] | None = None

    def _created(self, entry: ModelEntry) -> int:
        """When the weights were installed (their directory's mtime); found once per process."""
        if entry.id not in self._created_at:
            path = locate_model(entry.path)
            try:
                self._created_at[entry.id] = int(os.stat(path).st_mtime) if path else self._started
            except OSError:
                self._created_at[entry.id] = self._started
        return self._created_at[entry.id]

    def configured(self) -> dict[str, tuple[ModelEntry, str]]:
        """Every name a configured model answers to → (entry, name); built once, looked up per request."""
        if self._names is None:
            names: dict[str, tuple[ModelEntry, str]] = {}
            for entry in self.entries:
                for name in (entry.id, *entry.aliases):
                    names.setdefault(name, (entry, name))
            self._names = names
        return self._names

    def resolve_configured(self, name: str, kind: str) -> ModelEntry | None:
        hit = self.configured().get(name)
        if hit is None or hit[0].kind != kind:
            return None
        return hit[0]

    async def list(self, project_id: str) -> list[ModelInfo]:
        out = [ModelInfo(name, self._created(entry), SYSTEM_OWNER) for name, (entry, _) in self.configured().items()]
        out += [ModelInfo(m.id, m.created, m.owned_by) for m in await self.store.list_models(project_id)]
        return out

    async def retrieve(self, project_id: str, model: str) -> ModelInfo:
        hit = self.configured().get(model)
        if hit is not None:
            return ModelInfo(model, self._created(hit[0]), SYSTEM_OWNER)
        rec = await self.store.get_model(project_id, model)
        if rec is None:
            raise model_not_found(model, param="model")
        return ModelInfo(rec.id, rec.created, rec.owned_by)

    async def delete(self, project_id: str, model: str) -> str:
        if model in self.configured():
            raise PermissionDenied(
                f"The model `{model}` is a configured base model and cannot be deleted; only fine-tuned "
                "models can.",
                param="model",
                code="model_not_deletable",
            )
        if not await self.store.delete_model(project_id, model):
            raise model_not_found(model, param="model")
        return model
