"""The fleet store's events: the ``events`` table, its outbox and its retention.

:class:`EventStore` is the part of :class:`droneops.fleet.store.Store` (a base class of it)
that records events, queues them for publishing and prunes them.

Outbox
------
Every event is stored first and published after (``droneops.fleet.event_outbox``): the write
that inserts an ``events`` row also inserts its id into ``event_outbox``. The publisher reads
the outbox (:meth:`EventStore.unpublished_events`, committed rows only), publishes each event
with its store ``id`` and its stored time, and once the broker acknowledged it (PUBACK) removes
it from the outbox (:meth:`EventStore.mark_published_async`, one write per batch). An event
stored before a crash and not yet acknowledged is still in the outbox at the next start and is
published then: every stored event reaches MQTT **at least once** (twice when the crash fell
between the PUBACK and the mark; readers tell repeats apart by ``id``).

Durability
----------
An event is written in the order of the writes around it (one writer queue). ``durable=False``
(``command_rejected`` events, the published marks, pruning) costs no fsync of its own (see
:mod:`droneops.fleet.store_writer`): it survives a process crash, and a power cut once any later
durable write committed.

Retention
---------
:meth:`EventStore.prune_events_async` deletes events older than an age and beyond a row count
(the oldest ids first), in chunks of a bounded number of rows, each its own non-durable write,
so orders and other writes queued meanwhile are committed between two chunks. Pruned events
leave the outbox too (published or not).

Migration
---------
The outbox table and the ``events(at)`` index are created when missing: a database made before
them is migrated when the service opens it (meta key ``events_schema``). Its old events count
as published (they were published live when they happened).

Times are UNIX epoch seconds from the store's ``clock``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from droneops.fleet.store_model import Event
from droneops.fleet.store_writer import GroupWriter, WriteJob

log = logging.getLogger("droneops.fleet.store")

#: The events part of the schema: version recorded under meta key ``events_schema``.
EVENTS_SCHEMA_VERSION = 2

EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    order_id TEXT,
    vehicle_id TEXT,
    data TEXT NOT NULL
);
"""

#: Added in events schema 2 (created on an older database when it is opened).
EVENTS_MIGRATION_2 = """
CREATE TABLE IF NOT EXISTS event_outbox (
    event_id INTEGER PRIMARY KEY REFERENCES events(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS events_at ON events(at);
"""


def migrate_events(db: sqlite3.Connection) -> None:
    """Bring the events tables of ``db`` (the write connection, outside a transaction) to
    :data:`EVENTS_SCHEMA_VERSION`."""
    db.executescript(EVENTS_SCHEMA)
    row = db.execute("SELECT value FROM meta WHERE key='events_schema'").fetchone()
    if row is not None and int(row[0]) >= EVENTS_SCHEMA_VERSION:
        return
    db.executescript(EVENTS_MIGRATION_2)
    db.execute("INSERT INTO meta(key, value) VALUES ('events_schema', ?) "
               "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(EVENTS_SCHEMA_VERSION),))
    if row is None:
        log.info("store: events schema %d (event outbox) in place", EVENTS_SCHEMA_VERSION)


def _dumps(obj: Any) -> str:
    """An event's data as stored (values JSON cannot hold are stored as their text)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def _event(row: sqlite3.Row) -> Event:
    return Event(row["id"], row["at"], row["kind"], row["order_id"], row["vehicle_id"], json.loads(row["data"]))


#: ``listener()``: called (in the store's writer thread) after a commit that stored an event.
EventListener = Callable[[], None]


class EventStore:
    """Events, their outbox and their retention; a base class of
    :class:`droneops.fleet.store.Store`, which provides the plumbing declared here."""

    _clock: Callable[[], float]
    _writer: GroupWriter
    _event_listeners: list[EventListener]
    _listeners_lock: threading.Lock

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _wait(self, job: WriteJob, *, durable: bool = True) -> Any:
        raise NotImplementedError

    async def _await(self, job: WriteJob, *, durable: bool = True) -> Any:
        raise NotImplementedError

    # --- writing events ----------------------------------------------------------------------

    def _event_job(self, kind: str, order_id: str | None, vehicle_id: str | None, data: dict | None) -> WriteJob:
        now = self._clock()
        body = data or {}
        text = _dumps(body)

        def job(db: sqlite3.Connection) -> Event:
            cur = db.execute("INSERT INTO events(at, kind, order_id, vehicle_id, data) VALUES (?, ?, ?, ?, ?)",
                             (now, kind, order_id, vehicle_id, text))
            assert cur.lastrowid is not None  # an INSERT always sets it
            db.execute("INSERT INTO event_outbox(event_id) VALUES (?)", (cur.lastrowid,))
            return Event(int(cur.lastrowid), now, kind, order_id, vehicle_id, body)
        return job

    def _submit_event(self, job: WriteJob, durable: bool) -> cf.Future:
        fut = self._writer.submit(job, durable=durable)
        fut.add_done_callback(self._event_committed)
        return fut

    def _event_committed(self, fut: cf.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        with self._listeners_lock:
            listeners = list(self._event_listeners)
        for listener in listeners:
            try:
                listener()
            except Exception:
                log.exception("store: an event listener failed")

    def add_event(self, kind: str, *, order_id: str | None = None, vehicle_id: str | None = None,
                  data: dict | None = None, durable: bool = True) -> Event:
        """Store an event (and queue it in the outbox); returns it once committed."""
        return self._submit_event(self._event_job(kind, order_id, vehicle_id, data), durable).result()

    async def add_event_async(self, kind: str, *, order_id: str | None = None, vehicle_id: str | None = None,
                              data: dict | None = None, durable: bool = True) -> Event:
        """:meth:`add_event` without blocking the event loop."""
        fut = self._submit_event(self._event_job(kind, order_id, vehicle_id, data), durable)
        return await asyncio.wrap_future(fut)

    def post_event(self, kind: str, *, order_id: str | None = None, vehicle_id: str | None = None,
                   data: dict | None = None, durable: bool = True) -> cf.Future:
        """Queue an event without waiting (its future resolves to the :class:`Event` once
        committed, or to the error; a failure is also logged). ``durable=False``: no fsync of
        its own (see the module docstring)."""
        fut = self._submit_event(self._event_job(kind, order_id, vehicle_id, data), durable)
        fut.add_done_callback(_log_failure)
        return fut

    def add_event_listener(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener()`` (in the writer thread: keep it short and thread-safe) after each
        commit of an event; returns a function that removes it."""
        with self._listeners_lock:
            self._event_listeners.append(listener)

        def remove() -> None:
            with self._listeners_lock, contextlib.suppress(ValueError):
                self._event_listeners.remove(listener)
        return remove

    # --- reading events ----------------------------------------------------------------------

    def events(self, *, kind: str | None = None, order_id: str | None = None,
               limit: int | None = None) -> list[Event]:
        where, args = [], []
        if kind is not None:
            where.append("kind=?")
            args.append(kind)
        if order_id is not None:
            where.append("order_id=?")
            args.append(order_id)
        sql = "SELECT * FROM events" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._read() as rdb:
            rows = rdb.execute(sql, args).fetchall()
        return [_event(r) for r in rows]

    def event_count(self) -> int:
        """Events stored (published or not)."""
        with self._read() as rdb:
            return int(rdb.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    # --- the outbox --------------------------------------------------------------------------

    def unpublished_events(self, *, after_id: int = 0, limit: int = 500) -> list[Event]:
        """Committed events still in the outbox with an id above ``after_id``, oldest first, at
        most ``limit`` (one indexed range read)."""
        with self._read() as rdb:
            rows = rdb.execute("SELECT e.* FROM event_outbox o JOIN events e ON e.id = o.event_id "
                               "WHERE o.event_id > ? ORDER BY o.event_id LIMIT ?",
                               (int(after_id), int(limit))).fetchall()
        return [_event(r) for r in rows]

    def outbox_size(self) -> int:
        """Events stored and not yet acknowledged by the broker."""
        with self._read() as rdb:
            return int(rdb.execute("SELECT COUNT(*) FROM event_outbox").fetchone()[0])

    @staticmethod
    def _mark_job(ids: Iterable[int]) -> WriteJob:
        rows = [(int(i),) for i in ids]

        def job(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM event_outbox WHERE event_id=?", rows)
        return job

    def mark_published(self, ids: Iterable[int]) -> None:
        """Take ``ids`` out of the outbox (the broker acknowledged them); non-durable: a mark
        lost to a power cut only means the event is published again."""
        self._wait(self._mark_job(ids), durable=False)

    async def mark_published_async(self, ids: Iterable[int]) -> None:
        """:meth:`mark_published` without blocking the event loop."""
        await self._await(self._mark_job(ids), durable=False)

    # --- retention ---------------------------------------------------------------------------

    @staticmethod
    def _prune_job(cutoff_at: float | None, max_rows: int, chunk_rows: int) -> WriteJob:
        def job(db: sqlite3.Connection) -> int:
            deleted = 0
            if cutoff_at is not None:
                deleted = db.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ? "
                                     "ORDER BY at LIMIT ?)", (cutoff_at, chunk_rows)).rowcount
            if max_rows > 0 and deleted < chunk_rows:
                (last,) = db.execute("SELECT MAX(id) FROM events").fetchone()
                if last is not None:   # keep ids above last - max_rows: at most max_rows rows
                    deleted += db.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= ? "
                                          "ORDER BY id LIMIT ?)", (last - max_rows, chunk_rows - deleted)).rowcount
            return deleted
        return job

    def _prune_jobs(self, max_age_s: float, max_rows: int, chunk_rows: int) -> Iterator[WriteJob]:
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        cutoff = self._clock() - max_age_s if max_age_s > 0 else None
        while True:
            yield self._prune_job(cutoff, max_rows, chunk_rows)

    def prune_events(self, *, max_age_s: float, max_rows: int, chunk_rows: int = 5_000) -> int:
        """Delete events older than ``max_age_s`` (0: no age limit) and the oldest beyond
        ``max_rows`` (0: no count limit), ``chunk_rows`` per write; returns how many."""
        total = 0
        for job in self._prune_jobs(max_age_s, max_rows, chunk_rows):
            n = int(self._wait(job, durable=False))
            total += n
            if n < chunk_rows:
                return total
        return total

    async def prune_events_async(self, *, max_age_s: float, max_rows: int, chunk_rows: int = 5_000) -> int:
        """:meth:`prune_events` without blocking the event loop; other writes are committed
        between two chunks."""
        total = 0
        for job in self._prune_jobs(max_age_s, max_rows, chunk_rows):
            n = int(await self._await(job, durable=False))
            total += n
            if n < chunk_rows:
                return total
        return total


def _log_failure(fut: cf.Future) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("store: a queued write failed", exc_info=fut.exception())
