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
    from inhouse.worker import run_worker

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper())
    asyncio.run(run_worker(build_services(settings)))
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    async def go(s: Any) -> Any:
        return await s.keys.create(args.project, args.name or "")

    created = _with_store(args, go)
    print(f"Created key {created.key.id} for project {created.project.name!r}. It is shown only once:")
    print(created.token)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    async def go(s: Any) -> Any:
        return await s.keys.list()

    for key, project in _with_store(args, go):
        state = "revoked" if key.revoked_at else "active"
        print(f"{key.id}\t{project.name}\t{state}\t{key.name}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    async def go(s: Any) -> Any:
        return await s.keys.revoke(args.key_id)

    if not _with_store(args, go):
        print(f"no active key {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
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
    create.set_defaults(fn=cmd_keys_create)
    lst = keys.add_parser("list", help="list keys (never the secrets)")
    common(lst)
    lst.set_defaults(fn=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    common(revoke)
    revoke.add_argument("key_id")
    revoke.set_defaults(fn=cmd_keys_revoke)

    config = sub.add_parser("config", help="configuration").add_subparsers(dest="config_command", required=True)
    show = config.add_parser("show", help="print the effective settings")
    common(show)
    show.set_defaults(fn=cmd_config_show)
    docs = config.add_parser("docs", help="print the settings reference as Markdown")
    docs.set_defaults(fn=cmd_config_docs)

    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    common(migrate)
    migrate.set_defaults(fn=cmd_migrate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_threads()
    args = parser().parse_args(argv)
    fn: Callable[[argparse.Namespace], int] = args.fn
    return fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
