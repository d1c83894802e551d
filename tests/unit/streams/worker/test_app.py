"""app.awaiting: where a suspended task waits, for the slow-batch warning (a stall is never silent)."""
from __future__ import annotations

import asyncio

from sendgate.streams.worker.app import awaiting


async def _innermost(event: asyncio.Event) -> None:
    await event.wait()


async def _outer(event: asyncio.Event) -> None:
    await _innermost(event)


def test_awaiting_names_every_coroutine_of_the_chain_innermost_last():
    async def run() -> str:
        event = asyncio.Event()
        task = asyncio.ensure_future(_outer(event))
        await asyncio.sleep(0)
        shown = awaiting(task)
        event.set()
        await task
        return shown

    lines = asyncio.run(run()).splitlines()
    names = [line.rsplit(" in ", 1)[-1] for line in lines if " in " in line]
    assert names[:3] == ["_outer", "_innermost", "wait"], lines


def test_awaiting_without_a_task():
    assert awaiting(None) == "  (not suspended)"
