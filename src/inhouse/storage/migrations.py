"""Versioned schema migrations, applied in order; each step runs once and is recorded."""

from __future__ import annotations

# Each entry is one version. Never edit a released step: append a new one.
SQLITE_MIGRATIONS: list[str] = [
    # 1: projects, keys, files, uploads, models, idempotency
    """
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(id),
        key_hash TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE files (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL REFERENCES projects(id),
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,
        status TEXT NOT NULL,
        status_details TEXT,
        sha256 TEXT NOT NULL
    );
    CREATE INDEX files_project ON files(project_id, seq);
    CREATE INDEX files_expiry ON files(expires_at) WHERE expires_at IS NOT NULL;
    CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(id),
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        mime_type TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        file_expires_after INTEGER,
        file_id TEXT
    );
    CREATE INDEX uploads_expiry ON uploads(status, expires_at);
    CREATE TABLE upload_parts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        upload_id TEXT NOT NULL REFERENCES uploads(id),
        created_at INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL
    );
    CREATE INDEX upload_parts_upload ON upload_parts(upload_id);
    CREATE TABLE models (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(id),
        created INTEGER NOT NULL,
        owned_by TEXT NOT NULL,
        kind TEXT NOT NULL,
        base_model TEXT NOT NULL,
        artifact_key TEXT NOT NULL
    );
    CREATE TABLE idempotency (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        status_code INTEGER,
        content_type TEXT,
        body BLOB,
        PRIMARY KEY (scope, key)
    );
    """,
    # 2: fine-tuning jobs, their events and checkpoints
    """
    CREATE TABLE fine_tuning_jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL REFERENCES projects(id),
        created_at INTEGER NOT NULL,
        model TEXT NOT NULL,
        base_model TEXT NOT NULL,
        parent_model TEXT,
        training_file TEXT NOT NULL,
        validation_file TEXT,
        suffix TEXT,
        seed INTEGER NOT NULL,
        method TEXT NOT NULL,
        hyperparameters TEXT NOT NULL,
        status TEXT NOT NULL,
        error TEXT,
        fine_tuned_model TEXT,
        finished_at INTEGER,
        trained_tokens INTEGER,
        integrations TEXT,
        metadata TEXT,
        result_files TEXT NOT NULL,
        estimated_finish INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_at INTEGER
    );
    CREATE INDEX fine_tuning_jobs_project ON fine_tuning_jobs(project_id, seq);
    CREATE INDEX fine_tuning_jobs_claim ON fine_tuning_jobs(status, seq);
    CREATE TABLE fine_tuning_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL REFERENCES fine_tuning_jobs(id),
        created_at INTEGER NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL,
        type TEXT NOT NULL,
        data TEXT
    );
    CREATE INDEX fine_tuning_events_job ON fine_tuning_events(job_id, seq);
    CREATE TABLE fine_tuning_checkpoints (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL REFERENCES fine_tuning_jobs(id),
        created_at INTEGER NOT NULL,
        step_number INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        metrics TEXT NOT NULL,
        fine_tuned_model_checkpoint TEXT NOT NULL UNIQUE,
        artifact_key TEXT NOT NULL
    );
    CREATE INDEX fine_tuning_checkpoints_job ON fine_tuning_checkpoints(job_id, seq);
    """,
    # 3: in-flight idempotency claims belong to a live process: a lease, renewed while the request runs
    """
    ALTER TABLE idempotency ADD COLUMN lease_owner TEXT;
    ALTER TABLE idempotency ADD COLUMN lease_expires_at INTEGER;
    """,
    # 4: per-key and per-project limits, admin keys and last use, usage per minute, and the key that created each
    # job
    """
    ALTER TABLE projects ADD COLUMN rpm INTEGER;
    ALTER TABLE projects ADD COLUMN tpm INTEGER;
    ALTER TABLE api_keys ADD COLUMN rpm INTEGER;
    ALTER TABLE api_keys ADD COLUMN tpm INTEGER;
    ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
    CREATE INDEX api_keys_project ON api_keys(project_id, created_at);
    ALTER TABLE fine_tuning_jobs ADD COLUMN api_key_id TEXT;
    ALTER TABLE fine_tuning_jobs ADD COLUMN usage_counted INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX fine_tuning_jobs_uncounted ON fine_tuning_jobs(seq) WHERE status = 'succeeded' AND usage_counted = 0;
    CREATE TABLE usage_minutes (
        minute INTEGER NOT NULL,
        project_id TEXT NOT NULL REFERENCES projects(id),
        api_key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        requests INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        images INTEGER NOT NULL,
        trained_tokens INTEGER NOT NULL,
        PRIMARY KEY (minute, project_id, api_key_id, model, endpoint)
    ) WITHOUT ROWID;
    """,
    # 5: batches, and the chunks of their lines already run (durable progress: a resumed batch skips them)
    """
    CREATE TABLE batches (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL REFERENCES projects(id),
        endpoint TEXT NOT NULL,
        input_file_id TEXT NOT NULL,
        completion_window TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        metadata TEXT,
        output_expires_after TEXT,
        api_key_id TEXT,
        model TEXT,
        in_progress_at INTEGER,
        finalizing_at INTEGER,
        completed_at INTEGER,
        failed_at INTEGER,
        expired_at INTEGER,
        cancelling_at INTEGER,
        cancelled_at INTEGER,
        output_file_id TEXT,
        error_file_id TEXT,
        errors TEXT,
        request_total INTEGER NOT NULL DEFAULT 0,
        request_completed INTEGER NOT NULL DEFAULT 0,
        request_failed INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_at INTEGER
    );
    CREATE INDEX batches_project ON batches(project_id, seq);
    CREATE INDEX batches_open ON batches(seq) WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling');
    CREATE TABLE batch_chunks (
        batch_id TEXT NOT NULL REFERENCES batches(id),
        chunk INTEGER NOT NULL,
        completed INTEGER NOT NULL,
        failed INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        PRIMARY KEY (batch_id, chunk)
    ) WITHOUT ROWID;
    """,
    # 6: rate limits shared by every server process (services/rate_limits.py): each series is one process's
    # running total of what one limit's bucket took, replaced on each exchange.
    """
    CREATE TABLE rate_limit_usage (
        series TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        per_minute INTEGER NOT NULL,
        used REAL NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX rate_limit_usage_updated ON rate_limit_usage(updated_at);
    """,
]


def _pg(script: str) -> str:
    """Every TEXT column compares bytewise (COLLATE "C"), as SQLite's do: keyset pagination over (created_at,
    id) and group ordering then agree across backends whatever locale the database was created with."""
    return script.replace(" TEXT", ' TEXT COLLATE "C"')


# The same versions and tables as SQLITE_MIGRATIONS, in Postgres types: BIGSERIAL seq, BIGINT times and counts
# (seeds are int64), BYTEA bodies, BOOLEAN flags; JSON stays TEXT so a value reads back exactly as written (key
# order included) and is cast to JSONB where a query looks inside it. Never edit a released step: append.
POSTGRES_MIGRATIONS: list[str] = [
    # 1: projects, keys, files, uploads, models, idempotency
    _pg("""
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(id),
        key_hash TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE files (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL REFERENCES projects(id),
        bytes BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,
        status TEXT NOT NULL,
        status_details TEXT,
        sha256 TEXT NOT NULL
    );
    CREATE INDEX files_project ON files(project_id, seq);
    CREATE INDEX files_expiry ON files(expires_at) WHERE expires_at IS NOT NULL;
    CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(id),
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,
        bytes BIGINT NOT NULL,
        mime_type TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        file_expires_after BIGINT,
        file_id TEXT
    );
    CREATE INDEX uploads_expiry ON uploads(status, expires_at);
    CREATE TABLE upload_parts (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        upload_id TEXT NOT NULL REFERENCES uploads(id),
        created_at BIGINT NOT NULL,
        bytes BIGINT NOT NULL,
        sha256 TEXT NOT NULL
    );
    CREATE INDEX upload_parts_upload ON upload_parts(upload_id);
    CREATE TABLE models (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(id),
        created BIGINT NOT NULL,
        owned_by TEXT NOT NULL,
        kind TEXT NOT NULL,
        base_model TEXT NOT NULL,
        artifact_key TEXT NOT NULL
    );
    CREATE TABLE idempotency (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        status_code INTEGER,
        content_type TEXT,
        body BYTEA,
        PRIMARY KEY (scope, key)
    );
    """),
    # 2: fine-tuning jobs, their events and checkpoints
    _pg("""
    CREATE TABLE fine_tuning_jobs (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL REFERENCES projects(id),
        created_at BIGINT NOT NULL,
        model TEXT NOT NULL,
        base_model TEXT NOT NULL,
        parent_model TEXT,
        training_file TEXT NOT NULL,
        validation_file TEXT,
        suffix TEXT,
        seed BIGINT NOT NULL,
        method TEXT NOT NULL,
        hyperparameters TEXT NOT NULL,
        status TEXT NOT NULL,
        error TEXT,
        fine_tuned_model TEXT,
        finished_at BIGINT,
        trained_tokens BIGINT,
        integrations TEXT,
        metadata TEXT,
        result_files TEXT NOT NULL,
        estimated_finish BIGINT,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_at BIGINT
    );
    CREATE INDEX fine_tuning_jobs_project ON fine_tuning_jobs(project_id, seq);
    CREATE INDEX fine_tuning_jobs_claim ON fine_tuning_jobs(status, seq);
    CREATE TABLE fine_tuning_events (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL REFERENCES fine_tuning_jobs(id),
        created_at BIGINT NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL,
        type TEXT NOT NULL,
        data TEXT
    );
    CREATE INDEX fine_tuning_events_job ON fine_tuning_events(job_id, seq);
    CREATE TABLE fine_tuning_checkpoints (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL REFERENCES fine_tuning_jobs(id),
        created_at BIGINT NOT NULL,
        step_number BIGINT NOT NULL,
        epoch BIGINT NOT NULL,
        metrics TEXT NOT NULL,
        fine_tuned_model_checkpoint TEXT NOT NULL UNIQUE,
        artifact_key TEXT NOT NULL
    );
    CREATE INDEX fine_tuning_checkpoints_job ON fine_tuning_checkpoints(job_id, seq);
    """),
    # 3: in-flight idempotency claims belong to a live process: a lease, renewed while the request runs
    _pg("""
    ALTER TABLE idempotency ADD COLUMN lease_owner TEXT;
    ALTER TABLE idempotency ADD COLUMN lease_expires_at BIGINT;
    """),
    # 4: per-key and per-project limits, admin keys and last use, usage per minute, and the key that created each
    # job
    _pg("""
    ALTER TABLE projects ADD COLUMN rpm BIGINT;
    ALTER TABLE projects ADD COLUMN tpm BIGINT;
    ALTER TABLE api_keys ADD COLUMN rpm BIGINT;
    ALTER TABLE api_keys ADD COLUMN tpm BIGINT;
    ALTER TABLE api_keys ADD COLUMN admin BOOLEAN NOT NULL DEFAULT FALSE;
    ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
    CREATE INDEX api_keys_project ON api_keys(project_id, created_at);
    ALTER TABLE fine_tuning_jobs ADD COLUMN api_key_id TEXT;
    ALTER TABLE fine_tuning_jobs ADD COLUMN usage_counted BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE INDEX fine_tuning_jobs_uncounted ON fine_tuning_jobs(seq) WHERE status = 'succeeded' AND NOT usage_counted;
    CREATE TABLE usage_minutes (
        minute BIGINT NOT NULL,
        project_id TEXT NOT NULL REFERENCES projects(id),
        api_key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        requests BIGINT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        images BIGINT NOT NULL,
        trained_tokens BIGINT NOT NULL,
        PRIMARY KEY (minute, project_id, api_key_id, model, endpoint)
    );
    """),
    # 5: batches, and the chunks of their lines already run (durable progress: a resumed batch skips them)
    _pg("""
    CREATE TABLE batches (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL REFERENCES projects(id),
        endpoint TEXT NOT NULL,
        input_file_id TEXT NOT NULL,
        completion_window TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        metadata TEXT,
        output_expires_after TEXT,
        api_key_id TEXT,
        model TEXT,
        in_progress_at BIGINT,
        finalizing_at BIGINT,
        completed_at BIGINT,
        failed_at BIGINT,
        expired_at BIGINT,
        cancelling_at BIGINT,
        cancelled_at BIGINT,
        output_file_id TEXT,
        error_file_id TEXT,
        errors TEXT,
        request_total BIGINT NOT NULL DEFAULT 0,
        request_completed BIGINT NOT NULL DEFAULT 0,
        request_failed BIGINT NOT NULL DEFAULT 0,
        input_tokens BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_at BIGINT
    );
    CREATE INDEX batches_project ON batches(project_id, seq);
    CREATE INDEX batches_open ON batches(seq) WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling');
    CREATE TABLE batch_chunks (
        batch_id TEXT NOT NULL REFERENCES batches(id),
        chunk BIGINT NOT NULL,
        completed BIGINT NOT NULL,
        failed BIGINT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        PRIMARY KEY (batch_id, chunk)
    );
    """),
    _pg("""
    CREATE TABLE rate_limit_usage (
        series TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        per_minute BIGINT NOT NULL,
        used DOUBLE PRECISION NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX rate_limit_usage_updated ON rate_limit_usage(updated_at);
    """),
]
