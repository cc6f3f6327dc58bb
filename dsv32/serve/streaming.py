"""Server-sent events and the merging of several choices' event streams into one.

SSE framing as OpenAI's API streams it: each chunk is `data: {json}\\n\\n`, the stream ends with
`data: [DONE]\\n\\n`; an error after the response has started is sent as one `data: {"error": ...}`
event before `[DONE]` (the status line has already gone out).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

T = TypeVar("T")
DONE = "data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def merge_streams(streams: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Items of several async iterators as they come, tagged with the iterator's index.

    Each stream runs in its own task; if the consumer stops early (client gone) or a stream
    raises, every task is cancelled, which closes the streams and so cancels their engine requests.
    """
    if len(streams) == 1:
        async with contextlib.aclosing(streams[0]) as only:  # type: ignore[type-var]
            async for item in only:
                yield 0, item
        return
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump(index: int, stream: AsyncIterator[T]) -> None:
        try:
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for item in stream:
                    await queue.put((index, item))
            await queue.put((index, end))
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # handed to the consumer, which re-raises it
            await queue.put((index, err))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        live = len(tasks)
        while live:
            index, item = await queue.get()
            if item is end:
                live -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
