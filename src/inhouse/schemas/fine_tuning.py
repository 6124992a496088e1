"""Fine-tuning wire shapes: FineTuningJob, FineTuningJobEvent, FineTuningJobCheckpoint (built as dicts so
that every required key is always present, null rather than absent)."""

from __future__ import annotations

from typing import Any

from inhouse.records import FineTuningCheckpointRecord, FineTuningEventRecord, FineTuningJobRecord

_BASE_HP = ("batch_size", "learning_rate_multiplier", "n_epochs")


def job_object(job: FineTuningJobRecord) -> dict[str, Any]:
    method_type = job.method["type"]
    method_hp = {k: v for k, v in job.hyperparameters.items() if k in (*_BASE_HP, "beta")}
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": job.created_at,
        "error": job.error,
        "fine_tuned_model": job.fine_tuned_model,
        "finished_at": job.finished_at,
        "hyperparameters": {k: job.hyperparameters.get(k, "auto") for k in _BASE_HP},
        "model": job.model,
        "organization_id": job.project_id,
        "result_files": job.result_files,
        "status": job.status,
        "trained_tokens": job.trained_tokens,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "integrations": job.integrations,
        "seed": job.seed,
        "estimated_finish": job.estimated_finish,
        "method": {"type": method_type, method_type: {"hyperparameters": method_hp}},
        "metadata": job.metadata,
    }


def event_object(e: FineTuningEventRecord) -> dict[str, Any]:
    return {"object": "fine_tuning.job.event", "id": e.id, "created_at": e.created_at, "level": e.level,
            "message": e.message, "type": e.type, "data": e.data or {}}


def checkpoint_object(c: FineTuningCheckpointRecord) -> dict[str, Any]:
    return {"object": "fine_tuning.job.checkpoint", "id": c.id, "created_at": c.created_at,
            "fine_tuned_model_checkpoint": c.fine_tuned_model_checkpoint, "step_number": c.step_number,
            "metrics": c.metrics, "fine_tuning_job_id": c.job_id}
