"""The loop: the newest events, the health of each component and each service's lag, kept current in the
page by Server-Sent Events (``/loop/events``) without a reload.

The stream sends an ``event`` message per streamml event newer than the
last one the client has (the page says which it rendered; a reconnecting
``EventSource`` sends ``Last-Event-ID``), and a ``status`` message whenever
health and lag were measured again.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from streamml.console.live import EventLog, SeenEvent, event_link
from streamml.console.status import LoopStatus

SHOWN = 50
POLL_S = 0.25
KEEPALIVE_S = 15.0


def loop_page(events: EventLog, status: LoopStatus) -> dict[str, Any]:
    newest = events.newest(SHOWN)
    return {
        "events": [event_row(seen) for seen in newest],
        "last_seq": newest[0].seq if newest else 0,
        "status": status,
        "feed_caught_up": events.caught_up.is_set(),
    }


def event_row(seen: SeenEvent) -> dict[str, Any]:
    stage, text = seen.summary()
    return {"seq": seen.seq, "time": seen.time.strftime("%Y-%m-%d %H:%M:%S"), "type": seen.kind, "stage": stage,
            "text": text, "link": event_link(seen.event)}


async def stream(events: EventLog, status: Callable[[], LoopStatus], after: int,
                 stopping: threading.Event) -> AsyncIterator[str]:
    """Server-Sent Events until the client leaves or the console stops."""
    yield "retry: 2000\n\n"
    status_seq, quiet = -1, 0.0
    while not stopping.is_set():
        sent = False
        for seen in events.after(after):
            after = seen.seq
            yield f"id: {seen.seq}\nevent: event\ndata: {json.dumps(event_row(seen))}\n\n"
            sent = True
        latest = status()
        if latest.seq != status_seq:
            status_seq = latest.seq
            yield f"event: status\ndata: {json.dumps(latest.as_json())}\n\n"
            sent = True
        quiet = 0.0 if sent else quiet + POLL_S
        if quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_S)
