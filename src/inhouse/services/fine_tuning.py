"""Fine-tuning jobs as the API sees them: create (request-level checks are synchronous 400s), list,
retrieve, cancel, pause, resume, events and checkpoints. The worker side lives in fine_tuning_runner."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

from inhouse.errors import InvalidRequest, NotFound
from inhouse.ids import new_id, now, random_token
from inhouse.records import (
    FineTuningCheckpointRecord,
    FineTuningEventRecord,
    FineTuningJobRecord,
    Page,
    Project,
)
from inhouse.services.models import ModelsService
from inhouse.storage.base import MetadataStore
from inhouse.storage.tables import JOB_ACTIVE, JOB_CANCELLED, JOB_PAUSED, JOB_QUEUED, JOB_VALIDATING_FILES

MAX_SEED = 2_147_483_647
AUTO = "auto"


def event(job_id: str, message: str, *, level: str = "info", type: str = "message",
          data: dict[str, Any] | None = None) -> FineTuningEventRecord:
    return FineTuningEventRecord(new_id("ftevent"), job_id, now(), level, message, type, data)


def auto_epochs(n_examples: int) -> int:
    """OpenAI's documented heuristic: aim at ~100 example passes, within 1..25 epochs."""
    if n_examples * 3 < 100:
        return min(25, 100 // max(1, n_examples))
    if n_examples * 3 > 25_000:
        return max(1, 25_000 // n_examples)
    return 3


def auto_batch_size(n_examples: int, kind: str = "chat") -> int:
    if kind == "embedding":
        # In-batch negatives: every other pair of a batch is a negative, so an embedding model learns more per
        # step from a bigger batch; 32 is sentence-transformers' usual choice for this loss.
        return max(2, min(32, n_examples))
    return max(1, min(256, round(0.002 * n_examples)))


AUTO_LR_MULTIPLIER = 2.0
AUTO_BETA = 0.1


def resolve(hp: dict[str, Any], n_examples: int, method: str, kind: str = "chat") -> dict[str, Any]:
    """The hyperparameters a job trains with: each "auto" replaced by its value for this dataset."""
    out = {
        "n_epochs": auto_epochs(n_examples) if hp.get("n_epochs", AUTO) == AUTO else int(hp["n_epochs"]),
        "batch_size": auto_batch_size(n_examples, kind) if hp.get("batch_size", AUTO) == AUTO
        else int(hp["batch_size"]),
        "learning_rate_multiplier": AUTO_LR_MULTIPLIER if hp.get("learning_rate_multiplier", AUTO) == AUTO
        else float(hp["learning_rate_multiplier"]),
    }
    if method == "dpo":
        out["beta"] = AUTO_BETA if hp.get("beta", AUTO) == AUTO else float(hp["beta"])
    return out


def _check_hp(hp: Any, method: str, param: str) -> dict[str, Any]:
    if hp is None:
        return {}
    if not isinstance(hp, dict):
        raise InvalidRequest("hyperparameters must be an object.", param=param)

    def number(name: str, lo: float, hi: float, integer: bool, lo_open: bool = False) -> None:
        v = hp.get(name, AUTO)
        if v == AUTO:
            return
        ok = isinstance(v, int | float) and not isinstance(v, bool) and (not integer or isinstance(v, int))
        if ok:
            ok = (v > lo if lo_open else v >= lo) and v <= hi
        if not ok:
            kind = "an integer" if integer else "a number"
            raise InvalidRequest(f"{name} must be 'auto' or {kind} in {'(' if lo_open else '['}{lo}, {hi}].",
                                 param=f"{param}.{name}")

    number("batch_size", 1, 256, True)
    number("n_epochs", 1, 50, True)
    number("learning_rate_multiplier", 0, 1e6, False, lo_open=True)
    if method == "dpo":
        number("beta", 0, 2, False, lo_open=True)
    return {k: hp[k] for k in ("batch_size", "n_epochs", "learning_rate_multiplier", "beta") if k in hp}


# Caps on what a job stores and echoes back: OpenAI's for metadata.
MAX_METADATA_KEYS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS = 16, 64, 512


def check_metadata(value: Any, param: str = "metadata") -> dict[str, str] | None:
    """OpenAI's Metadata: at most 16 string keys of up to 64 characters, string values of up to 512."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{param} must be an object of string keys and values.", param=param)
    if len(value) > MAX_METADATA_KEYS:
        raise InvalidRequest(f"{param} has {len(value)} keys; at most {MAX_METADATA_KEYS} are allowed.", param=param)
    for k, v in value.items():
        if len(k) > MAX_METADATA_KEY_CHARS:
            raise InvalidRequest(f"{param} keys must be at most {MAX_METADATA_KEY_CHARS} characters.", param=param)
        if not isinstance(v, str):
            raise InvalidRequest(f"{param} values must be strings.", param=param)
        if len(v) > MAX_METADATA_VALUE_CHARS:
            raise InvalidRequest(f"{param} values must be at most {MAX_METADATA_VALUE_CHARS} characters.",
                                 param=param)
    return dict(value)


def check_integrations(value: Any) -> list[Any] | None:
    """None or an empty list. This server runs no integrations (Weights & Biases is not installed, and nothing
    would report to it), so asking for one is refused rather than stored and echoed as if it were running."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidRequest("integrations must be a list.", param="integrations")
    if value:
        raise InvalidRequest("This server does not run integrations (Weights & Biases or any other): send "
                             "`integrations` empty or leave it out.", param="integrations",
                             code="unsupported_parameter")
    return []


def _check_embedding_job(method_type: str, hp: dict[str, Any], full: bool) -> None:
    """What an embedding model's fine-tune can honour: supervised pairs, every weight trained, and batches of
    at least two (the other pairs of a batch are each query's negatives)."""
    if method_type != "supervised":
        raise InvalidRequest(f"An embedding model is fine-tuned with method 'supervised' (pairs), not "
                             f"{method_type!r}.", param="method.type", code="unsupported_method")
    if not full:
        raise InvalidRequest("An embedding model is always fine-tuned in full (every weight); "
                             "inhouse.full_fine_tuning cannot be false for it.", param="inhouse.full_fine_tuning")
    if hp.get("batch_size", AUTO) == 1:
        raise InvalidRequest("batch_size must be at least 2 for an embedding model: the other pairs of a batch "
                             "are each query's negatives.", param="method.supervised.hyperparameters.batch_size")


def model_kind(job: FineTuningJobRecord) -> str:
    """"chat" or "embedding": what the job trains (jobs from before embedding fine-tunes are chat)."""
    return str(job.method.get("model_kind", "chat"))


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", value)


class FineTuningService:
    def __init__(self, meta: MetadataStore, models: ModelsService, clock: Callable[[], int] = now) -> None:
        self.meta = meta
        self.models = models
        self.clock = clock

    async def _base_of(self, project: Project, model: str) -> tuple[str, str | None, str, str]:
        """(local base model id, parent fine-tune or None, the base name used in the new model's name, and
        the kind: "chat" or "embedding")."""
        for kind in ("chat", "embedding"):
            entry = self.models.resolve_configured(model, kind)
            if entry is not None:
                return entry.id, None, model, kind
        parent = await self.meta.models.get_model(project.id, model)
        if parent is not None and parent.kind in ("chat", "embedding"):
            base_name = model.split(":")[1] if model.startswith("ft:") else parent.base_model
            return parent.base_model, parent.id, base_name, parent.kind
        # A request-level problem, so a synchronous 400 (as OpenAI answers for models it cannot tune).
        raise InvalidRequest(f"Model {model} is not available for fine-tuning or does not exist.", param="model",
                             code="model_not_available")

    async def _check_file(self, project: Project, file_id: Any, param: str) -> str:
        if not isinstance(file_id, str) or not file_id:
            raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
        f = await self.meta.files.get_file(project.id, file_id, self.clock())
        if f is None:
            raise InvalidRequest(f"invalid {param}: {file_id}", param=param, code="invalid_file")
        if f.purpose != "fine-tune":
            raise InvalidRequest(f"File {file_id} has purpose {f.purpose!r}; fine-tuning needs 'fine-tune'.",
                                 param=param, code="invalid_file_purpose")
        return file_id

    async def create(self, project: Project, body: dict[str, Any], api_key_id: str | None = None
                     ) -> FineTuningJobRecord:
        """A new job; `api_key_id` (None in open mode) is the key its training counts against in usage."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("Missing required parameter: 'model'.", param="model")
        base, parent, base_name, kind = await self._base_of(project, model)
        training = await self._check_file(project, body.get("training_file"), "training_file")
        validation = None
        if body.get("validation_file") is not None:
            validation = await self._check_file(project, body["validation_file"], "validation_file")
            if validation == training:
                raise InvalidRequest("The validation file must differ from the training file.",
                                     param="validation_file")
        suffix = body.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or not 1 <= len(suffix) <= 64):
            raise InvalidRequest("suffix must be a string of 1 to 64 characters.", param="suffix")
        seed = body.get("seed")
        if seed is None:
            seed = secrets.randbelow(MAX_SEED + 1)
        elif not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
            raise InvalidRequest(f"seed must be an integer in [0, {MAX_SEED}].", param="seed")
        method_body = body.get("method")
        if method_body is not None:
            if not isinstance(method_body, dict) or method_body.get("type") not in ("supervised", "dpo",
                                                                                     "reinforcement"):
                raise InvalidRequest("method.type must be 'supervised' or 'dpo'.", param="method.type")
            method_type = method_body["type"]
            if method_type == "reinforcement":
                raise InvalidRequest("Reinforcement fine-tuning is not supported by this server.",
                                     param="method.type", code="unsupported_method")
            section = method_body.get(method_type) or {}
            hp = _check_hp(section.get("hyperparameters") if isinstance(section, dict) else None, method_type,
                           f"method.{method_type}.hyperparameters")
        else:
            method_type = "supervised"
            hp = _check_hp(body.get("hyperparameters"), "supervised", "hyperparameters")  # deprecated form
        integrations = check_integrations(body.get("integrations"))
        metadata = check_metadata(body.get("metadata"))
        # Extension (not in OpenAI's API): {"inhouse": {"full_fine_tuning": true}} trains every weight
        # instead of a LoRA adapter; send it with the SDK's extra_body.
        ext = body.get("inhouse") or {}
        full = ext.get("full_fine_tuning", kind == "embedding") if isinstance(ext, dict) else None
        if not isinstance(full, bool):
            raise InvalidRequest("inhouse.full_fine_tuning must be a boolean.", param="inhouse.full_fine_tuning")
        if kind == "embedding":
            _check_embedding_job(method_type, hp, full)
        job_id = new_id("ftjob")
        hyper = {k: hp.get(k, AUTO) for k in ("batch_size", "learning_rate_multiplier", "n_epochs")}
        if method_type == "dpo":
            hyper["beta"] = hp.get("beta", AUTO)
        job = FineTuningJobRecord(
            id=job_id, project_id=project.id, created_at=self.clock(), model=model, base_model=base,
            parent_model=parent, training_file=training, validation_file=validation, suffix=suffix, seed=seed,
            method={"type": method_type, "base_name": base_name, "org": _slug(project.name), "full": full,
                    "model_kind": kind},
            hyperparameters=hyper, status=JOB_VALIDATING_FILES, error=None, fine_tuned_model=None, finished_at=None,
            trained_tokens=None, integrations=integrations, metadata=metadata, result_files=[],
            estimated_finish=None, attempts=0, lease_owner=None, lease_expires_at=None,
        )
        files = f"{training} and validation file: {validation}" if validation else training
        await self.meta.jobs.insert_job(job, [
            event(job_id, f"Created fine-tuning job: {job_id}"),
            event(job_id, f"Validating training file: {files}"),
        ])
        if api_key_id is not None:
            await self.meta.jobs.set_job_api_key(job_id, api_key_id)
        return job

    async def retrieve(self, project: Project, job_id: str) -> FineTuningJobRecord:
        job = await self.meta.jobs.get_job(project.id, job_id)
        if job is None:
            raise NotFound(f"Could not find fine tune job: {job_id}", param="fine_tuning_job_id")
        return job

    async def list(self, project: Project, *, after: str | None, limit: int,
                   metadata: dict[str, str] | None, no_metadata: bool) -> Page[FineTuningJobRecord]:
        if not 1 <= limit <= 100:
            raise InvalidRequest("limit must be between 1 and 100.", param="limit")
        if metadata is not None and len(metadata) > MAX_METADATA_KEYS:  # no job holds more keys
            raise InvalidRequest(f"At most {MAX_METADATA_KEYS} metadata filters may be given.", param="metadata")
        return await self.meta.jobs.list_jobs(project.id, after=after, limit=limit, metadata=metadata,
                                              no_metadata=no_metadata)

    async def _move(self, project: Project, job_id: str, allowed: tuple[str, ...], fields: dict[str, Any],
                    message: str, verb: str) -> FineTuningJobRecord:
        job, changed = await self.meta.jobs.transition_job(project.id, job_id, allowed=allowed, fields=fields,
                                                           event=event(job_id, message))
        if job is None:
            raise NotFound(f"Could not find fine tune job: {job_id}", param="fine_tuning_job_id")
        if not changed:
            raise InvalidRequest(f"Cannot {verb} a job with status {job.status!r}.", param="fine_tuning_job_id",
                                 code="invalid_state")
        return job

    async def cancel(self, project: Project, job_id: str) -> FineTuningJobRecord:
        # Clearing the lease makes every later write of the worker fail: nothing lands after this event.
        return await self._move(project, job_id, (*JOB_ACTIVE, JOB_PAUSED),
                                {"status": JOB_CANCELLED, "finished_at": self.clock(), "estimated_finish": None,
                                 "lease_owner": None, "lease_expires_at": None},
                                "Fine-tuning job cancelled", "cancel")

    async def pause(self, project: Project, job_id: str) -> FineTuningJobRecord:
        return await self._move(project, job_id, JOB_ACTIVE,
                                {"status": JOB_PAUSED, "estimated_finish": None, "lease_owner": None,
                                 "lease_expires_at": None},
                                "Fine-tuning job paused", "pause")

    async def resume(self, project: Project, job_id: str) -> FineTuningJobRecord:
        # attempts bounds claims lost to crashes in a row; the claims a pause ended were not crashes, so a
        # resumed job starts its count again (else a few pause/resume cycles would fail it).
        return await self._move(project, job_id, (JOB_PAUSED,), {"status": JOB_QUEUED, "attempts": 0},
                                "Fine-tuning job resumed", "resume")

    async def events(self, project: Project, job_id: str, *, after: str | None,
                     limit: int) -> Page[FineTuningEventRecord]:
        await self.retrieve(project, job_id)
        if not 1 <= limit <= 100:
            raise InvalidRequest("limit must be between 1 and 100.", param="limit")
        return await self.meta.jobs.list_events(job_id, after=after, limit=limit)

    async def checkpoints(self, project: Project, job_id: str, *, after: str | None,
                          limit: int) -> Page[FineTuningCheckpointRecord]:
        await self.retrieve(project, job_id)
        if not 1 <= limit <= 100:
            raise InvalidRequest("limit must be between 1 and 100.", param="limit")
        return await self.meta.jobs.list_checkpoints(job_id, after=after, limit=limit)


def model_name(job: FineTuningJobRecord, tag: str | None = None) -> str:
    """ft:{base}:{org}:{suffix}:{id} — the final model; a checkpoint adds its own id and :ckpt-step-N."""
    short = job.id[-8:]
    name = f"ft:{job.method['base_name']}:{job.method['org']}:{job.suffix or ''}:{short}"
    if tag is not None:
        name = f"ft:{job.method['base_name']}:{job.method['org']}:{job.suffix or ''}:{random_token(8)}:{tag}"
    return name



