"""Micro-batching for the server: concurrent requests are collected into one model call.

>>> import asyncio
>>> async def demo():
...     batcher = MicroBatcher(lambda key, items: [x * 2 for x in items], max_batch=8, max_wait_ms=5)
...     batcher.start()
...     results = await asyncio.gather(*(batcher.submit("double", [i]) for i in range(4)))
...     await batcher.stop()
...     return results, batcher.stats()["batches"]
>>> asyncio.run(demo())
([[0], [2], [4], [6]], 1)

A request's inputs are never split across model calls. The worker takes the first waiting request, then
keeps taking requests until the batch holds `max_batch` inputs or `max_wait_ms` has passed since that first
request; requests with different keys (e.g. another max_new_tokens) go to separate calls. The model runs in
one worker thread, so the event loop keeps accepting requests while it computes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Pending:
    key: Hashable
    inputs: Sequence[Any]
    future: asyncio.Future[list[Any]] = field(repr=False)


class MicroBatcher:
    """`run(key, inputs) -> outputs` (same length) is called from a worker thread with the inputs of one or
    more requests that share `key`."""

    def __init__(self, run: Callable[[Hashable, list[Any]], list[Any]], max_batch: int = 16,
                 max_wait_ms: float = 5.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000.0
        self.queue: asyncio.Queue[_Pending] | None = None
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuneforge-model")
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # inputs per model call -> count
        self.requests_per_call: collections.Counter[int] = collections.Counter()
        self._task: asyncio.Task[None] | None = None
        self._carry: _Pending | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._worker())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.executor.shutdown(wait=True)

    async def submit(self, key: Hashable, inputs: Sequence[Any]) -> list[Any]:
        """Queue one request's inputs; returns their outputs once the batch that holds them has run."""
        if self.queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(key, list(inputs), future))
        return await future

    def stats(self) -> dict[str, Any]:
        calls = sum(self.batch_sizes.values())
        inputs = sum(size * n for size, n in self.batch_sizes.items())
        return {"batches": calls, "inputs": inputs, "requests": sum(r * n for r, n in self.requests_per_call.items()),
                "mean_batch_size": inputs / calls if calls else 0.0,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "max_batch_size": self.max_batch, "max_wait_ms": self.max_wait * 1000.0}

    async def _next(self, timeout: float | None) -> _Pending | None:
        assert self.queue is not None
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return await self.queue.get()
        if timeout <= 0:
            try:
                return self.queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _collect(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        first = await self._next(None)
        assert first is not None
        items, size = [first], len(first.inputs)
        deadline = loop.time() + self.max_wait
        while size < self.max_batch:
            item = await self._next(deadline - loop.time())
            if item is None:
                break
            if size + len(item.inputs) > self.max_batch:
                self._carry = item  # first in line for the next batch
                break
            items.append(item)
            size += len(item.inputs)
        return items

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [p for p in await self._collect() if not p.future.cancelled()]
            groups: dict[Hashable, list[_Pending]] = {}
            for item in items:
                groups.setdefault(item.key, []).append(item)
            for key, group in groups.items():
                flat = [x for p in group for x in p.inputs]
                try:
                    outputs = await loop.run_in_executor(self.executor, self.run, key, flat)
                except Exception as err:  # noqa: BLE001 - the error belongs to the requests, not the worker
                    for p in group:
                        if not p.future.done():
                            p.future.set_exception(err)
                    continue
                self.batch_sizes[len(flat)] += 1
                self.requests_per_call[len(group)] += 1
                start = 0
                for p in group:
                    if not p.future.done():
                        p.future.set_result(list(outputs[start:start + len(p.inputs)]))
                    start += len(p.inputs)
