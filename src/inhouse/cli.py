"""The `inhouse` command: parse flags, build Settings, run. No logic lives here."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def _quiet_threads() -> None:
    # Must happen before torch/onnxruntime load: on a shared small box their spinning threads
    # slow everything down many times over.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _settings(args: argparse.Namespace) -> Any:
    from inhouse.config import load_settings

    overrides = {k: v for k, v in (("host", getattr(args, "host", None)), ("port", getattr(args, "port", None)),
                                   ("data_dir", getattr(args, "data_dir", None))) if v is not None}
    return load_settings(**overrides)


def _with_store(args: argparse.Namespace, fn: Callable[[Any], Awaitable[T]]) -> T:
    from inhouse.bootstrap import build_services

    services = build_services(_settings(args))

    async def go() -> T:
        await services.open()
        try:
            return await fn(services)
        finally:
            await services.close()

    return asyncio.run(go())


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from inhouse.app import create_app
    from inhouse.server import uvicorn_config

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from inhouse.bootstrap import build_services
    from inhouse.progress import on_terminal
    from inhouse.worker import run_worker

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper())
    services = build_services(settings)
    services.jobs.progress_bars = on_terminal()  # a bar per training job, drawn only on a terminal
    asyncio.run(run_worker(services))
    return 0


def _rpm_tpm_text(limited: Any) -> str:
    """A key's or a project's limits, as `keys list`, `projects list` and the updates print them."""
    return f"rpm={limited.rpm or 'unlimited'} tpm={limited.tpm or 'unlimited'}"


def _limits_text(key: Any) -> str:
    return _rpm_tpm_text(key) + (" admin" if key.admin else "")


def _limit_changes(args: argparse.Namespace) -> dict[str, int] | None:
    """The --rpm/--tpm given (a flag left out keeps its value); None, said on stderr, when neither was."""
    changes = {name: value for name, value in (("rpm", args.rpm), ("tpm", args.tpm)) if value is not None}
    if not changes:
        print("nothing to change: give --rpm and/or --tpm (0 is unlimited)", file=sys.stderr)
        return None
    return changes


def cmd_keys_create(args: argparse.Namespace) -> int:
    from inhouse.errors import InhouseError

    async def go(s: Any) -> Any:
        return await s.keys.create(args.project, args.name or "", rpm=args.rpm, tpm=args.tpm, admin=args.admin)

    try:
        created = _with_store(args, go)
    except InhouseError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    print(f"Created key {created.key.id} for project {created.project.name!r} ({_limits_text(created.key)}). "
          "It is shown only once:")
    print(created.token)
    return 0


def cmd_keys_update(args: argparse.Namespace) -> int:
    from inhouse.errors import InhouseError

    changes = _limit_changes(args)
    if changes is None:
        return 2

    async def go(s: Any) -> Any:
        return await s.keys.update_limits(args.key_id, changes)

    try:
        key = _with_store(args, go)
    except InhouseError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(f"updated {key.id}: {_limits_text(key)} (a running server applies it within 5 s)")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    async def go(s: Any) -> Any:
        return await s.keys.list()

    for key, project in _with_store(args, go):
        state = "revoked" if key.revoked_at else "active"
        print(f"{key.id}\t{project.name}\t{state}\t{_limits_text(key)}\t{key.name}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    async def go(s: Any) -> Any:
        return await s.keys.revoke(args.key_id)

    if not _with_store(args, go):
        print(f"no active key {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
    return 0


def cmd_projects_list(args: argparse.Namespace) -> int:
    async def go(s: Any) -> list[Any]:
        projects: list[Any] = []
        after = None
        while True:
            page = await s.keys.projects(after=after, limit=100)
            projects += page.items
            if not page.has_more:
                return projects
            after = page.items[-1].id

    for project in _with_store(args, go):
        print(f"{project.id}\t{project.name}\t{_rpm_tpm_text(project)}")
    return 0


def cmd_projects_update(args: argparse.Namespace) -> int:
    from inhouse.errors import InhouseError

    changes = _limit_changes(args)
    if changes is None:
        return 2

    async def go(s: Any) -> Any:
        project = await s.keys.project_named(args.project)
        return await s.keys.update_project(project.id, limits=changes)

    try:
        project = _with_store(args, go)
    except InhouseError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(f"updated project {project.name!r} ({project.id}): {_rpm_tpm_text(project)}, shared by all its "
          "keys (a running server applies it within 5 s)")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    print(json.dumps(_settings(args).public_dump(), indent=2))
    return 0


def cmd_config_docs(args: argparse.Namespace) -> int:
    from inhouse.config_doc import render

    print(render(), end="")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    async def go(s: Any) -> Any:
        return await s.meta.check()

    print(json.dumps({"migrated": True, "database": _with_store(args, go)}))
    return 0


def cmd_files_upload(args: argparse.Namespace) -> int:
    import json as _json
    from pathlib import Path

    from inhouse.upload_client import UploadFailed, upload

    path = Path(args.path)
    if not path.is_file():
        print(f"no such file: {path}", file=sys.stderr)
        return 2
    try:
        file = upload(path, args.purpose, args.base_url, args.api_key, part_bytes=args.part_mb * 1024 * 1024)
    except UploadFailed as exc:
        print(f"upload refused: {exc}", file=sys.stderr)
        return 1
    print(_json.dumps(file, indent=2))
    return 0


def cmd_models_prepare(args: argparse.Namespace) -> int:
    """Do the first-use work of every configured model now (GGUF conversion, ONNX export), with progress."""
    from inhouse.engines.prepare import prepare_all

    settings = _settings(args)
    for line in prepare_all(settings, only=args.model or None):
        print(line)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inhouse", description="Self-hosted OpenAI-compatible AI platform.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", help="data directory (default ./data, or INHOUSE_DATA_DIR)")

    serve = sub.add_parser("serve", help="run the HTTP server (and the in-process worker)")
    common(serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(fn=cmd_serve)

    worker = sub.add_parser("worker", help="run the background worker alone")
    common(worker)
    worker.set_defaults(fn=cmd_worker)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key (printed once)")
    common(create)
    create.add_argument("--project", required=True)
    create.add_argument("--name")
    create.add_argument("--rpm", type=int, help="requests per minute (0 or absent: unlimited)")
    create.add_argument("--tpm", type=int, help="tokens per minute (0 or absent: unlimited)")
    create.add_argument("--admin", action="store_true",
                        help="may list projects and keys, and read every project's usage (/v1/organization/...)")
    create.set_defaults(fn=cmd_keys_create)
    update = keys.add_parser("update", help="change a key's limits")
    common(update)
    update.add_argument("key_id")
    update.add_argument("--rpm", type=int, help="requests per minute (0: unlimited; absent: unchanged)")
    update.add_argument("--tpm", type=int, help="tokens per minute (0: unlimited; absent: unchanged)")
    update.set_defaults(fn=cmd_keys_update)
    lst = keys.add_parser("list", help="list keys (never the secrets)")
    common(lst)
    lst.set_defaults(fn=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    common(revoke)
    revoke.add_argument("key_id")
    revoke.set_defaults(fn=cmd_keys_revoke)

    projects = sub.add_parser("projects", help="manage projects").add_subparsers(dest="projects_command",
                                                                                 required=True)
    plist = projects.add_parser("list", help="list projects with their limits")
    common(plist)
    plist.set_defaults(fn=cmd_projects_list)
    pupdate = projects.add_parser("update", help="change a project's limits, shared by all its keys")
    common(pupdate)
    pupdate.add_argument("project", help="the project's name (or id)")
    pupdate.add_argument("--rpm", type=int, help="requests per minute (0: unlimited; absent: unchanged)")
    pupdate.add_argument("--tpm", type=int, help="tokens per minute (0: unlimited; absent: unchanged)")
    pupdate.set_defaults(fn=cmd_projects_update)

    config = sub.add_parser("config", help="configuration").add_subparsers(dest="config_command", required=True)
    show = config.add_parser("show", help="print the effective settings")
    common(show)
    show.set_defaults(fn=cmd_config_show)
    docs = config.add_parser("docs", help="print the settings reference as Markdown")
    docs.set_defaults(fn=cmd_config_docs)

    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    common(migrate)
    migrate.set_defaults(fn=cmd_migrate)

    from inhouse.upload_client import PART_BYTES, default_api_key, default_base_url

    files = sub.add_parser("files", help="files on a running server").add_subparsers(dest="files_command",
                                                                                       required=True)
    up = files.add_parser("upload", help="upload a file (large ones through the Uploads API in parts), with a "
                          "progress bar; prints the File object")
    up.add_argument("path")
    up.add_argument("--purpose", required=True, help="fine-tune, batch, assistants, vision, user_data or evals")
    up.add_argument("--base-url", default=default_base_url(), help="the server's /v1 URL (default OPENAI_BASE_URL "
                    "or http://127.0.0.1:8000/v1)")
    up.add_argument("--api-key", default=default_api_key(), help="default INHOUSE_API_KEY or OPENAI_API_KEY")
    up.add_argument("--part-mb", type=int, default=PART_BYTES // (1024 * 1024), help="part size of a large upload")
    up.set_defaults(fn=cmd_files_upload)

    models = sub.add_parser("models", help="local models").add_subparsers(dest="models_command", required=True)
    prepare = models.add_parser("prepare", help="do the first-use work now: convert GGUF weights, export "
                                "embedding models to ONNX (progress on a terminal)")
    common(prepare)
    prepare.add_argument("model", nargs="*", help="model ids (default: every configured model)")
    prepare.set_defaults(fn=cmd_models_prepare)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_threads()
    from inhouse.progress import quiet_libraries_off_terminal

    quiet_libraries_off_terminal()
    args = parser().parse_args(argv)
    fn: Callable[[argparse.Namespace], int] = args.fn
    return fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
