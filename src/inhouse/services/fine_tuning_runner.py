"""The worker side of fine-tuning: claim a job under a lease, validate its files, train (resuming from the
newest checkpoint), record events, checkpoints, the result file and the model, with a heartbeat that
carries cancel and pause back to the training thread."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inhouse import observability
from inhouse.config import Settings
from inhouse.engines.training import Resume, Stopped, TrainingRun, steps_per_epoch
from inhouse.ids import new_id, now
from inhouse.progress import Progress, progress
from inhouse.records import FineTuningCheckpointRecord, FineTuningJobRecord, ModelRecord
from inhouse.services.blob_keys import checkpoint_key, file_blob_key
from inhouse.services.files import FilesService
from inhouse.services.fine_tuning import event, model_kind, model_name, resolve
from inhouse.services.fine_tuning_data import DataInvalid, Dataset, parse_dataset
from inhouse.services.models import ModelsService
from inhouse.services.ports import ModelPools, Trainer
from inhouse.storage.base import BlobStore, MetadataStore, read_all
from inhouse.storage.tables import (
    JOB_ACTIVE,
    JOB_FAILED,
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_SUCCEEDED,
    JOB_VALIDATING_FILES,
)

log = logging.getLogger(__name__)


@dataclass
class _Run:
    job: FineTuningJobRecord
    owner: str
    stop: threading.Event
    loop: asyncio.AbstractEventLoop
    last_logged_step: int
    total_steps: int
    started: float
    start_step: int


class JobRunner:
    def __init__(self, settings: Settings, meta: MetadataStore, blobs: BlobStore, files: FilesService,
                 models: ModelsService, executors: ModelPools, trainer: Trainer,
                 clock: Callable[[], int] = now) -> None:
        self.settings = settings
        self.executors = executors
        self.trainer = trainer
        self.cfg = settings.fine_tuning
        self.meta = meta
        self.blobs = blobs
        self.files = files
        self.models = models
        self.clock = clock
        self.owner = f"worker-{secrets.token_hex(6)}"
        self.progress_bars = False  # `inhouse worker` on a terminal: a bar per job (the server keeps its log clean)

    # -- helpers ------------------------------------------------------------------------------------------
    async def _dataset(self, job: FineTuningJobRecord, file_id: str, param: str, min_examples: int,
                       keep: bool) -> Dataset:
        f = await self.meta.files.get_file(job.project_id, file_id, self.clock())
        if f is None:
            raise DataInvalid("invalid_" + param, f"The {param.replace('_', ' ')} {file_id} no longer exists.", param)
        method = "embedding" if model_kind(job) == "embedding" else job.method["type"]
        return await parse_dataset(self.blobs.read(file_blob_key(file_id)), param=param,
                                   method=method, max_line=self.settings.limits.max_jsonl_line_bytes,
                                   min_examples=min_examples, keep=keep)

    async def _datasets(self, job: FineTuningJobRecord, keep: bool) -> tuple[Dataset, Dataset | None] | None:
        """The training and validation sets, or None once the job is failed for a bad file."""
        try:
            train_set = await self._dataset(job, job.training_file, "training_file", 10, keep)
            valid_set = (await self._dataset(job, job.validation_file, "validation_file", 1, keep)
                         if job.validation_file else None)
        except DataInvalid as bad:
            await self._fail(job, bad.code, bad.message, bad.param)
            return None
        return train_set, valid_set

    async def _fail(self, job: FineTuningJobRecord, code: str, message: str, param: str | None) -> None:
        failed = await self.meta.jobs.worker_update(job.id, self.owner, fields={
            "status": JOB_FAILED, "error": {"code": code, "message": message, "param": param},
            "finished_at": self.clock(), "estimated_finish": None, "lease_owner": None, "lease_expires_at": None,
        }, events=[event(job.id, message, level="error")])
        if failed:
            observability.JOB_TRANSITIONS.labels(JOB_FAILED).inc()

    async def _heartbeat(self, run: _Run) -> None:
        while not run.stop.is_set():
            await asyncio.sleep(self.cfg.heartbeat_seconds)
            status = await self.meta.jobs.heartbeat_job(run.job.id, self.owner, self.clock(), self.cfg.lease_seconds)
            if status not in JOB_ACTIVE:
                run.stop.set()  # cancelled, paused, or taken by another worker: stop the CPU work now

    # -- one job ------------------------------------------------------------------------------------------
    async def run_next(self) -> bool:
        """Claim and run one job; False when there was none."""
        job = await self.meta.jobs.claim_job(self.owner, self.clock(), self.cfg.lease_seconds)
        if job is None:
            return False
        run = _Run(job, self.owner, threading.Event(), asyncio.get_running_loop(), 0, 0, time.monotonic(), 0)
        beat = asyncio.create_task(self._heartbeat(run))
        observability.JOBS_RUNNING.inc()
        try:
            await self._run(run)
        except Exception as exc:
            log.exception("fine-tuning job %s failed", job.id)
            if job.attempts >= self.cfg.max_attempts:
                # The exception's own text can name server paths (the data dir, a model file): the caller
                # gets its class, the log (above) everything.
                await self._fail(job, "training_failed", f"Fine-tuning failed with an internal error "
                                 f"({type(exc).__name__}); the server log has the details.", None)
            else:
                await self.meta.jobs.release_job(job.id, self.owner)  # another attempt resumes from a checkpoint
                observability.JOB_TRANSITIONS.labels("released").inc()
        finally:
            observability.JOBS_RUNNING.dec()
            run.stop.set()
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        return True

    async def _run(self, run: _Run) -> None:
        job = run.job
        if job.attempts > self.cfg.max_attempts:
            await self._fail(job, "max_attempts_exceeded",
                             f"The job was interrupted {job.attempts - 1} times and will not be retried.", None)
            return
        if job.status == JOB_VALIDATING_FILES:
            # Validate first keeping nothing (a huge or bad file costs memory bounded by one line), then read
            # the examples training needs. A resumed job's files were validated already: one pass reads them.
            if await self._datasets(job, keep=False) is None:
                return
            if not await self.meta.jobs.worker_update(job.id, self.owner, fields={"status": JOB_QUEUED},
                                                      events=[event(job.id, "Files validated, moving job to queued "
                                                               "state")]):
                return
        sets = await self._datasets(job, keep=True)
        if sets is None:
            return
        parent = await self.meta.models.get_model(job.project_id, job.parent_model) if job.parent_model else None
        if job.parent_model and parent is None:
            await self._fail(job, "invalid_model", f"The model {job.parent_model} to continue from was deleted.",
                             "model")
            return
        train_set, valid_set = sets
        hp = resolve(job.hyperparameters, len(train_set.examples), job.method["type"], model_kind(job))
        per_epoch = steps_per_epoch(len(train_set.examples), hp["batch_size"])
        run.total_steps = per_epoch * hp["n_epochs"]
        resume = await self._resume_point(job)
        run.start_step = resume.step if resume else 0
        run.last_logged_step = await self.meta.jobs.last_metric_step(job.id)
        message = ("Fine-tuning job started" if resume is None
                   else f"Fine-tuning job resumed from the checkpoint at step {resume.step}")
        if not await self.meta.jobs.worker_update(job.id, self.owner, fields={
                "status": JOB_RUNNING, "hyperparameters": hp}, events=[event(job.id, message)]):
            return
        observability.JOB_TRANSITIONS.labels(JOB_RUNNING).inc()
        training = await self._training(job, train_set, valid_set, hp, parent, resume)
        t0 = time.monotonic()
        adapter, trained_tokens = await self.executors.run("training", self._train, run, training, hp, resume)
        # trained_tokens counts every epoch of the job; this attempt ran those after its checkpoint's epoch.
        epochs = hp["n_epochs"]
        this_attempt = trained_tokens * (epochs - (resume.epoch if resume else 0)) // max(1, epochs)
        label = observability.model_label(job.base_model)
        observability.TRAINED_TOKENS.labels(label).inc(this_attempt)
        observability.TRAINING_SECONDS.labels(label).inc(time.monotonic() - t0)
        await self._succeed(run, adapter, trained_tokens)

    async def _resume_point(self, job: FineTuningJobRecord) -> Resume | None:
        page = await self.meta.jobs.list_checkpoints(job.id, after=None, limit=1)
        if not page.items:
            return None
        newest = page.items[0]
        return Resume(await read_all(self.blobs, newest.artifact_key), newest.epoch, newest.step_number)

    async def _training(self, job: FineTuningJobRecord, train_set: Dataset, valid_set: Dataset | None,
                        hp: dict[str, Any], parent: ModelRecord | None, resume: Resume | None) -> TrainingRun:
        """What the trainer gets, every byte read here on the loop. The parent's weights are held once, for the
        run: a causal LM merges them under each attempt's adapter; an embedding model's checkpoint holds every
        weight, so a resumed one does without them."""
        weights = None
        if parent is not None and (model_kind(job) != "embedding" or resume is None):
            weights = await read_all(self.blobs, parent.artifact_key)
        base = next(e for e in self.settings.all_models() if e.id == job.base_model)
        return TrainingRun(
            kind=model_kind(job), method=job.method["type"], base=base, examples=train_set.examples,
            validation=valid_set.examples if valid_set else [], n_epochs=hp["n_epochs"],
            batch_size=hp["batch_size"], learning_rate_multiplier=hp["learning_rate_multiplier"],
            beta=hp.get("beta", 0.1), seed=job.seed, full=bool(job.method.get("full")), parent=weights)

    # -- training thread ----------------------------------------------------------------------------------
    def _call(self, run: _Run, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, run.loop).result()

    def _train(self, run: _Run, training: TrainingRun, hp: dict[str, Any], resume: Resume | None
               ) -> tuple[bytes, int]:
        """On the training pool: the trainer's run, its hooks writing back through the loop."""
        return self.trainer.train(training, _Hooks(self, run, hp), resume)

    async def _checkpoint(self, run: _Run, epoch: int, step: int, adapter: bytes, metrics: dict[str, Any],
                          final: bool) -> None:
        job = run.job
        ckpt_id = new_id("ftckpt")
        writer = self.blobs.writer(checkpoint_key(ckpt_id))
        await writer.write(adapter)
        await writer.commit()  # durable before the row that names it
        name = model_name(job) if final else model_name(job, f"ckpt-step-{step}")
        record = FineTuningCheckpointRecord(ckpt_id, job.id, self.clock(), step, epoch, {
            k: v for k, v in metrics.items() if k != "total_steps"}, name, checkpoint_key(ckpt_id))
        dropped = await self.meta.jobs.add_checkpoint(self.owner, record, event(
            job.id, f"Checkpoint created at step {step} with Snapshot ID: {name}"), self.cfg.keep_checkpoints)
        if dropped is None:
            await self.blobs.delete(checkpoint_key(ckpt_id))
            raise Stopped()
        for key in dropped:
            await self.blobs.delete(key)

    async def _succeed(self, run: _Run, adapter: bytes, trained_tokens: int) -> None:
        job = run.job
        page = await self.meta.jobs.list_checkpoints(job.id, after=None, limit=1)
        final_ckpt = page.items[0]
        name = model_name(job)
        result = await self._result_file(job)
        model = ModelRecord(name, job.project_id, self.clock(), f"user-{job.method['org']}", model_kind(job),
                            job.base_model, final_ckpt.artifact_key)
        done = await self.meta.jobs.finish_job_success(job.id, self.owner, fields={
            "status": JOB_SUCCEEDED, "fine_tuned_model": name, "finished_at": self.clock(),
            "trained_tokens": trained_tokens, "result_files": [result], "estimated_finish": None,
        }, model=model, events=[event(job.id, f"New fine-tuned model created: {name}"),
                                event(job.id, "The job has successfully completed")])
        if not done:
            await self.meta.files.delete_file(job.project_id, result)
            await self.blobs.delete(file_blob_key(result))
            return
        observability.JOB_TRANSITIONS.labels(JOB_SUCCEEDED).inc()
        # Its trained tokens become usage; each job counts once, and any a crash left uncounted count now too.
        await self.meta.usage.settle_training_usage()

    async def _result_file(self, job: FineTuningJobRecord) -> str:
        rows: dict[int, dict[str, Any]] = {}
        after = None
        while True:
            page = await self.meta.jobs.list_events(job.id, after=after, limit=100)
            for e in page.items:
                if e.type == "metrics" and e.data:
                    rows.setdefault(int(e.data["step"]), e.data)
            if not page.has_more:
                break
            after = page.items[-1].id
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        # Each column: its CSV header -> the metric it reads.
        columns = (_ENCODER_COLUMNS if model_kind(job) == "embedding" else _CHAT_COLUMNS)
        w.writerow(["step", *columns])
        for step in sorted(rows):
            d = rows[step]
            w.writerow([step, *(_fmt(d.get(key)) for key in columns.values())])
        rec = await self.files.store_output(job.project_id, "step_metrics.csv", "fine-tune-results",
                                            out.getvalue().encode())
        return rec.id


_CHAT_COLUMNS = {"train_loss": "train_loss", "train_accuracy": "train_mean_token_accuracy",
                 "valid_loss": "valid_loss", "valid_mean_token_accuracy": "valid_mean_token_accuracy"}
_ENCODER_COLUMNS = {"train_loss": "train_loss", "train_accuracy": "train_accuracy", "valid_loss": "valid_loss",
                    "valid_accuracy_at_1": "valid_accuracy_at_1", "valid_mrr_at_10": "valid_mrr_at_10"}


def _step_text(metrics: dict[str, Any], total_steps: int) -> str:
    text = f"Step {metrics['step']}/{total_steps}: training loss={metrics['train_loss']:.2f}"
    if "valid_accuracy_at_1" in metrics:  # an embedding model's retrieval metrics
        text += (f", validation loss={metrics['valid_loss']:.2f}, "
                 f"accuracy@1={metrics['valid_accuracy_at_1']:.3f}, MRR@10={metrics['valid_mrr_at_10']:.3f}")
    elif "valid_loss" in metrics:
        text += (f", validation loss={metrics['valid_loss']:.2f}, "
                 f"full validation loss={metrics['full_valid_loss']:.2f}")
    return text


def _fmt(value: Any) -> str:
    return "" if value is None else f"{float(value):.5f}"


class _Hooks:
    """Runs in the training thread; every write goes back to the event loop, guarded by the lease."""

    def __init__(self, runner: JobRunner, run: _Run, hp: dict[str, Any]) -> None:
        self.runner, self.run, self.hp = runner, run, hp
        self.step_times: list[float] = []
        self.last = time.monotonic()
        self.bar: Progress | None = None
        if runner.progress_bars:
            self.bar = progress(run.total_steps, run.job.id, unit="step")
            self.bar.update(run.start_step)

    def should_stop(self) -> bool:
        return self.run.stop.is_set()

    def on_step(self, metrics: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"loss={metrics['train_loss']:.3f}")
            if metrics["step"] >= self.run.total_steps:
                self.bar.close()
        t = time.monotonic()
        self.step_times = [*self.step_times[-19:], t - self.last]
        self.last = t
        step = int(metrics["step"])
        if step <= self.run.last_logged_step:
            return  # replayed after a resume: its event was written by the first run
        self.run.last_logged_step = step
        avg = sum(self.step_times) / len(self.step_times)
        finish = self.runner.clock() + math.ceil(avg * (self.run.total_steps - step))
        text = _step_text(metrics, self.run.total_steps)
        ok = self.runner._call(self.run, self.runner.meta.jobs.worker_update(
            self.run.job.id, self.run.owner, fields={"estimated_finish": finish},
            events=[event(self.run.job.id, text, type="metrics", data=metrics)]))
        if not ok:
            raise Stopped()

    def on_epoch(self, epoch: int, step: int, adapter: bytes, metrics: dict[str, Any]) -> None:
        final = epoch == self.hp["n_epochs"]
        self.runner._call(self.run, self.runner._checkpoint(self.run, epoch, step, adapter, metrics, final))
