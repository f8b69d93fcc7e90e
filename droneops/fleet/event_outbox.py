"""Events from the store to MQTT, and their retention: the ``[events]`` section of the service config.

::

    [events]
    retention_days = 30        # events older than this are deleted (0: no age limit)
    max_rows = 1_000_000       # at most this many events are kept, the newest (0: no count limit)
    prune_interval_s = 60      # how often the pruning runs, s
    prune_chunk_rows = 5000    # events deleted per write while pruning
    publish_batch = 500        # events published at once (each waits for its PUBACK)
    publish_timeout_s = 10     # a PUBACK not received by then: published again later, s
    retry_s = 1                # wait after a failed batch before the next try, s

:class:`EventOutbox` publishes every stored event (``droneops.fleet.store_events``: stored
first, then published) on ``<prefix>/events`` as :func:`event_payload`, with its store ``id``
and stored ``timestamp``, and takes it out of the store's outbox once the broker acknowledged it.
After a crash or a broker outage the events still in the outbox are published when the link is
up again: at least once, in id order within a batch. :class:`EventPruner` applies the
retention, in chunks, each a write of its own (never a long hold of the store's writer, never
on the event loop).

Every problem in the table raises :class:`droneops.errors.UserError` naming the key.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from droneops.errors import UserError
from droneops.fleet.store_model import Event

if TYPE_CHECKING:
    from droneops.fleet.mqtt import MqttLink
    from droneops.fleet.store import Store

log = logging.getLogger("droneops.fleet.events")

#: Seconds per day (``retention_days`` to seconds).
DAY_S = 86_400.0


@dataclass(frozen=True)
class EventSettings:
    """Event retention and publishing (see the module docstring). ``retention_days``: age
    limit, days (0: none); ``max_rows``: count limit (0: none); ``prune_interval_s``: period of
    the pruning, s; ``prune_chunk_rows``: rows deleted per write; ``publish_batch``: events in
    flight at once; ``publish_timeout_s``: PUBACK wait, s; ``retry_s``: pause after a failed
    batch, s."""

    retention_days: float = 30.0
    max_rows: int = 1_000_000
    prune_interval_s: float = 60.0
    prune_chunk_rows: int = 5_000
    publish_batch: int = 500
    publish_timeout_s: float = 10.0
    retry_s: float = 1.0

    @property
    def max_age_s(self) -> float:
        """The age limit in seconds (0: none)."""
        return self.retention_days * DAY_S


#: key -> (lowest, highest, integer) of the ``[events]`` table.
_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "retention_days": (0.0, 36_500.0, False),
    "max_rows": (0, 1_000_000_000, True),
    "prune_interval_s": (1.0, 86_400.0, False),
    "prune_chunk_rows": (1, 1_000_000, True),
    "publish_batch": (1, 10_000, True),
    "publish_timeout_s": (0.1, 600.0, False),
    "retry_s": (0.01, 600.0, False),
}
EVENTS_KEYS = frozenset(_BOUNDS)


def parse_events(data: Any, where: str = "[events]") -> EventSettings:
    """Validate an ``[events]`` table (a missing one is the defaults)."""
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a table")
    extra = sorted(set(data) - EVENTS_KEYS)
    if extra:
        raise UserError(f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(sorted(EVENTS_KEYS))})")
    values: dict[str, Any] = {}
    for key, value in data.items():
        lo, hi, integer = _BOUNDS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or (integer and not float(value).is_integer()):
            raise UserError(f"{where}.{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise UserError(f"{where}.{key} must be between {lo:g} and {hi:g}, got {value}")
        values[key] = int(value) if integer else float(value)
    return EventSettings(**values)


def event_payload(event: Event) -> dict:
    """What ``<prefix>/events`` carries for a stored event: ``{"id", "kind", "timestamp",
    "order_id", "vehicle_id", ...data}`` (``timestamp``: when it was stored, epoch s; ``id``:
    its store id, the same on every repeat)."""
    body: dict = {"id": event.id, "kind": event.kind, "timestamp": event.at,
                  "order_id": event.order_id, "vehicle_id": event.vehicle_id}
    body.update((k, v) for k, v in event.data.items() if k not in body)
    return body


class EventOutbox:
    """Publishes the store's outbox on the link (see the module docstring): ``await run()``
    until cancelled. ``published``: events the broker acknowledged; ``failed``: publish
    attempts that did not get a PUBACK (each published again later)."""

    def __init__(self, store: Store, link: MqttLink, settings: EventSettings) -> None:
        self.store = store
        self.link = link
        self.settings = settings
        self.published = 0
        self.failed = 0
        self._wake = asyncio.Event()
        self._poked = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def _poke(self) -> None:
        """The store committed an event (called in its writer thread)."""
        loop = self._loop
        if loop is None or self._poked:
            return
        self._poked = True
        try:
            loop.call_soon_threadsafe(self._woken)
        except RuntimeError:   # the loop is closed: the service is gone
            self._poked = False

    def _woken(self) -> None:
        self._poked = False
        self._wake.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        remove = self.store.add_event_listener(self._poke)
        try:
            cursor = 0
            while True:
                await self.link.connected.wait()
                self._wake.clear()   # before the read: an event committed after it wakes us again
                batch = self.store.unpublished_events(after_id=cursor, limit=self.settings.publish_batch)
                if not batch:
                    await self._wake.wait()
                    continue
                if await self._publish(batch):
                    cursor = batch[-1].id
                else:   # read again from the oldest unacknowledged event, after a pause
                    cursor = 0
                    await asyncio.sleep(self.settings.retry_s)
        finally:
            remove()
            self._loop = None

    async def _publish(self, batch: list[Event]) -> bool:
        """Publish ``batch`` (all in flight at once), mark the acknowledged ones; True when all were."""
        results = await asyncio.gather(
            *(self.link.publish_event_acked(event_payload(e), timeout_s=self.settings.publish_timeout_s)
              for e in batch), return_exceptions=True)
        acked = [e.id for e, r in zip(batch, results) if r is None]
        if acked:
            await self.store.mark_published_async(acked)
            self.published += len(acked)
        missed = len(batch) - len(acked)
        if missed:
            self.failed += missed
            why = next(r for r in results if r is not None)
            log.warning("events: %d of %d not acknowledged by the broker (%s); published again later",
                        missed, len(batch), why if isinstance(why, str) else repr(why))
        return not missed


class EventPruner:
    """Applies the retention every ``prune_interval_s`` (the first time at start): ``await
    run()`` until cancelled. ``pruned``: events deleted so far."""

    def __init__(self, store: Store, settings: EventSettings) -> None:
        self.store = store
        self.settings = settings
        self.pruned = 0

    async def run(self) -> None:
        s = self.settings
        if s.max_age_s <= 0 and s.max_rows <= 0:
            return
        while True:
            try:
                n = await self.store.prune_events_async(max_age_s=s.max_age_s, max_rows=s.max_rows,
                                                        chunk_rows=s.prune_chunk_rows)
            except Exception:
                log.exception("events: pruning failed")
            else:
                self.pruned += n
                if n:
                    log.info("events: pruned %d (retention %g days, at most %d rows)", n, s.retention_days,
                             s.max_rows)
            await asyncio.sleep(s.prune_interval_s)
