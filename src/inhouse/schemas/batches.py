"""Batch wire shape. The spec types the optional fields (timestamps, file ids, model, errors) as plain strings
and integers, not nullable: one not set yet is left out (the SDK reads it as None), never sent as null."""

from __future__ import annotations

from typing import Any

from inhouse.records import BatchRecord


def batch_object(b: BatchRecord) -> dict[str, Any]:
    body = {
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint,
        "model": b.model,
        "errors": {"object": "list", "data": b.errors} if b.errors else None,
        "input_file_id": b.input_file_id,
        "completion_window": b.completion_window,
        "status": b.status,
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": b.created_at,
        "in_progress_at": b.in_progress_at,
        "expires_at": b.expires_at,
        "finalizing_at": b.finalizing_at,
        "completed_at": b.completed_at,
        "failed_at": b.failed_at,
        "expired_at": b.expired_at,
        "cancelling_at": b.cancelling_at,
        "cancelled_at": b.cancelled_at,
        "request_counts": {"total": b.request_total, "completed": b.request_completed, "failed": b.request_failed},
        "usage": {"input_tokens": b.input_tokens, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": b.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": b.input_tokens + b.output_tokens},
        "metadata": b.metadata,
    }
    return {k: v for k, v in body.items() if v is not None}
