"""Work a request does only while its client is there: a plain (non-streamed) answer's generation is cancelled
as soon as its client leaves, as a stream's is (Starlette watches a streamed answer's client itself)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import ClientDisconnect, Request

T = TypeVar("T")


async def unless_gone(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, unless the client disconnects first: then `work` is cancelled (a generation's rows leave
    the batch at the next step) and ClientDisconnect is raised (answered 499, to no one).

    Only for a handler that has read its whole body: the watch reads the request's next ASGI message, which
    after the body is the disconnect, whenever it comes."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the handler itself is cancelled (shutdown): both go with it
        task.cancel()
        watcher.cancel()
        raise
    if task.done():
        watcher.cancel()
        return task.result()
    task.cancel()
    await asyncio.wait((task,))  # its cancellation runs (its rows are cancelled on the way out)
    if not task.cancelled():
        task.exception()  # it ended some other way as it was cancelled: no answer goes out either way
    raise ClientDisconnect() from watcher.exception()
