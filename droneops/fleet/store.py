"""Durable fleet state: orders, their state history, flights and events, in SQLite.

Durability choices
------------------
* ``journal_mode=WAL``: readers never block the writer and a commit is one append to the
  write-ahead log.
* ``synchronous=FULL``: every commit fsyncs the WAL before the write it carries is reported
  done. The service acknowledges an order only after its write is done, so an acknowledged
  order survives a process crash **and** a power cut / kernel panic. With ``NORMAL`` a WAL
  commit survives a process crash but the last transactions may be rolled back after a power
  loss -- an order a station was told "accepted" could vanish.
* **Group commit**: writes are not done on the caller's thread. One writer thread
  (:class:`droneops.fleet.store_writer.GroupWriter`) owns the write connection, takes every
  write queued meanwhile and commits them as one transaction: one fsync per batch, not per
  write. Each write still runs in its own savepoint, so one failing write rolls back alone.

Threading and asyncio
---------------------
Every public write exists twice: ``create_order(...)`` blocks the calling thread until its
batch is committed (the synchronous API: tests, the CLI, start-up recovery), and
``await create_order_async(...)`` (likewise ``transition_async``, ``add_event_async``, ...)
lets the event loop run on while the writer thread commits: the fleet service's hot paths
(orders in, assignments, events) use these. ``post_event`` queues an event without waiting at
all (events are records, not promises to a client; a later write's commit implies it). Writes
nobody was promised (rejected-command events, the event outbox's marks, pruning) are
non-durable: no fsync of their own (:mod:`droneops.fleet.store_writer`). Events, the outbox
that publishes them after their commit, and their retention are
:mod:`droneops.fleet.store_events`.
Writes run in the order they were submitted (one queue), which keeps the order of writes on
disk identical to the order of decisions, which crash recovery relies on. Reads run on the
caller's thread over their own connection (WAL: they never wait for the writer) and see every
write that is done; each is one small indexed query. Telemetry is never written here (only
state changes and mission-progress steps).

Order lifecycle
---------------
``received -> planned -> assigned -> uploading -> in_flight -> delivered -> completed``, with
side states ``rejected`` (with a reason), ``aborted``, ``diverted`` and ``failed``.
:data:`ORDER_TRANSITIONS` lists every legal move; anything else raises
:class:`IllegalTransition`. ``diverted`` means the vehicle was sent to a station before the
drop; from there the order is flown on (``assigned``) or requeued (``planned``).

Timestamps are UNIX epoch seconds (UTC), from the injectable ``clock``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from droneops.errors import UserError
from droneops.fleet.store_events import EventListener, EventStore, migrate_events
from droneops.fleet.store_model import (  # noqa: F401  (the store's public vocabulary, re-exported)
    ABORTED,
    ACTIVE_ORDER_STATES,
    AIRBORNE_ORDER_STATES,
    ASSIGNED,
    COMPLETED,
    DELIVERED,
    DIVERTED,
    F_CANCELLED,
    F_FAILED,
    F_IN_FLIGHT,
    F_LANDED,
    F_UPLOADING,
    FAILED,
    FLIGHT_TRANSITIONS,
    IN_FLIGHT,
    LOST_CONTACT,
    OPEN_FLIGHT_STATES,
    ORDER_STATES,
    ORDER_TRANSITIONS,
    PLANNED,
    QUEUED_ORDER_STATES,
    RECEIVED,
    REJECTED,
    SCHEMA_VERSION,
    TERMINAL_ORDER_STATES,
    UPLOADING,
    Event,
    Flight,
    IllegalTransition,
    Order,
    OrderConflict,
    OrderDoc,
    Recovery,
    StoreError,
    Transition,
    UnknownOrder,
    VehicleRecord,
)
from droneops.fleet.store_writer import GroupWriter, WriteJob

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    plan TEXT,
    vehicle_id TEXT,
    priority INTEGER NOT NULL,
    reason TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_state ON orders(state);
CREATE TABLE IF NOT EXISTS order_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL REFERENCES orders(id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS order_history_order ON order_history(order_id);
CREATE TABLE IF NOT EXISTS flights (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT REFERENCES orders(id),
    vehicle_id TEXT NOT NULL,
    flight_index INTEGER NOT NULL,
    mission_index INTEGER,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    origin TEXT,
    destination TEXT,
    planned_energy_wh REAL,
    used_energy_wh REAL,
    mission_items INTEGER,
    progress_current INTEGER,
    drop_item INTEGER,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    ended_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS flights_order_index ON flights(order_id, flight_index)
    WHERE order_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS flights_state ON flights(state);
CREATE TABLE IF NOT EXISTS vehicles (
    id TEXT PRIMARY KEY,
    node TEXT,
    ready_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


class Store(EventStore):
    """The fleet database. Open with ``Store(path)`` (``":memory:"`` for tests), close with
    :meth:`close` or use as a context manager. Every public write is one transaction (a
    savepoint in a group-committed batch, see the module docstring), committed and fsynced
    before the method returns (or its ``*_async`` twin's await ends). Events, their outbox and
    their pruning are :class:`droneops.fleet.store_events.EventStore`."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._memory = self.path == ":memory:"
        if not self._memory:
            parent = Path(self.path).parent
            if not parent.is_dir():
                raise UserError(f"store: directory {parent} does not exist")
        # ":memory:" is one database per connection: reader and writer share one, under a lock.
        self._read_lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._event_listeners: list[EventListener] = []
        self._listeners_lock = threading.Lock()
        self._writer = GroupWriter(self._open_writer, self._read_lock if self._memory else None,
                                   name=f"store-writer-{uuid.uuid4().hex[:6]}")
        if not self._memory:
            self._db = self._connect()
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")

    # --- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
        except sqlite3.Error as exc:
            raise UserError(f"store: cannot open {self.path}: {exc}") from None
        db.row_factory = sqlite3.Row
        return db

    def _open_writer(self) -> sqlite3.Connection:
        """The write connection (in the writer thread): WAL, FULL sync, schema checked."""
        db = self._connect()
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            db.close()
            raise UserError(f"store: {self.path} is not a droneops database: {exc}") from None
        if not self._memory and str(mode).lower() != "wal":
            db.close()
            raise StoreError(f"store: could not enable WAL on {self.path} (got {mode})")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            db.close()
            raise UserError(f"store: {self.path} has schema version {row[0]}, "
                            f"this droneops expects {SCHEMA_VERSION}")
        migrate_events(db)   # the event outbox (added to an older database here)
        if self._memory:
            self._db = db
        return db

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        if self._db is None:
            raise StoreError("the store is closed")
        with self._read_lock:
            yield self._db

    def _wait(self, job: WriteJob, *, durable: bool = True) -> Any:
        """Run a write job and block until its batch is committed."""
        return self._writer.submit(job, durable=durable).result()

    async def _await(self, job: WriteJob, *, durable: bool = True) -> Any:
        """Run a write job; the event loop runs on until its batch is committed."""
        return await asyncio.wrap_future(self._writer.submit(job, durable=durable))

    @property
    def commits(self) -> int:
        """Durable transactions (fsyncs) committed so far; :attr:`lazy_commits` counts the
        non-durable ones, :attr:`writes` the writes in both."""
        return self._writer.commits

    @property
    def lazy_commits(self) -> int:
        return self._writer.lazy_commits

    @property
    def writes(self) -> int:
        return self._writer.jobs

    def close(self) -> None:
        """Finish the queued writes, checkpoint the WAL and close. Safe to call twice."""
        def checkpoint(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        if self._db is not None and not self._memory:
            with self._read_lock:
                self._db.close()
        self._db = None
        self._writer.close(checkpoint)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def journal_mode(self) -> str:
        return str(self._wait(lambda db: db.execute("PRAGMA journal_mode").fetchone()[0]))

    @property
    def synchronous(self) -> int:
        """SQLite's synchronous level of the write connection (2 = FULL)."""
        return int(self._wait(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]))

    # --- orders -----------------------------------------------------------------------------

    @staticmethod
    def _order(row: sqlite3.Row, with_plan: bool = True) -> Order:
        return Order(id=row["id"], state=row["state"], request=json.loads(row["request"]),
                     plan=json.loads(row["plan"]) if with_plan and row["plan"] else None,
                     vehicle_id=row["vehicle_id"], priority=int(row["priority"]),
                     reason=row["reason"], created_at=row["created_at"],
                     updated_at=row["updated_at"])

    def _create_order_job(self, order_id: str, request: dict, priority: int) -> WriteJob:
        text = _dumps(request)
        now = self._clock()

        def job(db: sqlite3.Connection) -> tuple[Order, bool]:
            row = db.execute("SELECT * FROM orders WHERE id=?", (order_id,)).fetchone()
            if row is not None:
                if _dumps(json.loads(row["request"])) != text:
                    raise OrderConflict(f"order {order_id!r} already exists with a different request")
                return self._order(row), False
            db.execute("INSERT INTO orders(id, state, request, priority, created_at, updated_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (order_id, RECEIVED, text, int(priority), now, now))
            db.execute("INSERT INTO order_history(order_id, from_state, to_state, reason, at) "
                       "VALUES (?, NULL, ?, NULL, ?)", (order_id, RECEIVED, now))
            row = db.execute("SELECT * FROM orders WHERE id=?", (order_id,)).fetchone()
            return self._order(row), True
        return job

    def create_order(self, order_id: str, request: dict, priority: int) -> tuple[Order, bool]:
        """Store a new order in state ``received``; return ``(order, created)``.

        Idempotent: if ``order_id`` exists with the same ``request`` the stored order is
        returned with ``created=False`` (a retried command creates no duplicate). The same id
        with a different request raises :class:`OrderConflict`.
        """
        return self._wait(self._create_order_job(order_id, request, priority))

    async def create_order_async(self, order_id: str, request: dict, priority: int) -> tuple[Order, bool]:
        """:meth:`create_order` without blocking the event loop (done = committed)."""
        return await self._await(self._create_order_job(order_id, request, priority))

    def get_order(self, order_id: str) -> Order | None:
        with self._read() as rdb:
            row = rdb.execute("SELECT * FROM orders WHERE id=?", (order_id,)).fetchone()
        return self._order(row) if row else None

    def orders(self, states: Iterable[str] | None = None, *, with_plan: bool = True) -> list[Order]:
        """Orders in creation order, optionally only those in ``states``. ``with_plan=False``
        leaves every ``plan`` None (not decoded: the dispatcher's queue reads need no plans)."""
        with self._read() as rdb:
            if states is None:
                rows = rdb.execute("SELECT * FROM orders ORDER BY seq").fetchall()
            else:
                states = list(states)
                marks = ",".join("?" * len(states))
                rows = rdb.execute(f"SELECT * FROM orders WHERE state IN ({marks}) ORDER BY seq",
                                   states).fetchall()
        return [self._order(r, with_plan) for r in rows]

    def _transition_job(self, order_id: str, to_state: str, *, reason: str | None = None,
                        plan: dict | None = None, vehicle_id: str | None = None,
                        unassign: bool = False, expect: str | Iterable[str] | None = None) -> WriteJob:
        if to_state not in ORDER_TRANSITIONS:
            raise IllegalTransition(f"unknown order state {to_state!r}")
        now = self._clock()
        plan_text = _dumps(plan) if plan is not None else None
        allowed = None if expect is None else ({expect} if isinstance(expect, str) else set(expect))

        def job(db: sqlite3.Connection) -> Order:
            row = db.execute("SELECT state FROM orders WHERE id=?", (order_id,)).fetchone()
            if row is None:
                raise UnknownOrder(order_id)
            current = row["state"]
            if allowed is not None and current not in allowed:
                raise IllegalTransition(f"order {order_id}: is {current}, expected {sorted(allowed)}")
            if to_state not in ORDER_TRANSITIONS[current]:
                raise IllegalTransition(f"order {order_id}: {current} -> {to_state} is not allowed")
            sets = ["state=?", "updated_at=?"]
            args: list[Any] = [to_state, now]
            if reason is not None or to_state == REJECTED:
                sets.append("reason=?")
                args.append(reason)
            if plan_text is not None:
                sets.append("plan=?")
                args.append(plan_text)
            if vehicle_id is not None:
                sets.append("vehicle_id=?")
                args.append(vehicle_id)
            elif unassign:
                sets.append("vehicle_id=NULL")
            db.execute(f"UPDATE orders SET {', '.join(sets)} WHERE id=?", (*args, order_id))
            db.execute("INSERT INTO order_history(order_id, from_state, to_state, reason, at) "
                       "VALUES (?, ?, ?, ?, ?)", (order_id, current, to_state, reason, now))
            return self._order(db.execute("SELECT * FROM orders WHERE id=?", (order_id,)).fetchone())
        return job

    def transition(self, order_id: str, to_state: str, *, reason: str | None = None,
                   plan: dict | None = None, vehicle_id: str | None = None,
                   unassign: bool = False, expect: str | Iterable[str] | None = None) -> Order:
        """Move an order to ``to_state`` (recording the history row) and return it.

        ``plan``/``vehicle_id`` replace the stored ones when given; ``unassign`` clears the
        vehicle (an order back in the queue that no vehicle carries). ``expect`` (a state or
        states) guards against races: the current state must be one of them. Raises
        :class:`IllegalTransition` for a move :data:`ORDER_TRANSITIONS` does not allow and
        :class:`UnknownOrder` for an unknown id.
        """
        return self._wait(self._transition_job(order_id, to_state, reason=reason, plan=plan,
                                               vehicle_id=vehicle_id, unassign=unassign, expect=expect))

    async def transition_async(self, order_id: str, to_state: str, *, reason: str | None = None,
                               plan: dict | None = None, vehicle_id: str | None = None,
                               unassign: bool = False, expect: str | Iterable[str] | None = None) -> Order:
        """:meth:`transition` without blocking the event loop (done = committed)."""
        return await self._await(self._transition_job(order_id, to_state, reason=reason, plan=plan,
                                                      vehicle_id=vehicle_id, unassign=unassign, expect=expect))

    def _doc(self, db: sqlite3.Connection, order: Order) -> OrderDoc:
        hist = db.execute("SELECT * FROM order_history WHERE order_id=? ORDER BY id", (order.id,)).fetchall()
        flights = db.execute("SELECT * FROM flights WHERE order_id=? ORDER BY id", (order.id,)).fetchall()
        return OrderDoc(order, [Transition(r["order_id"], r["from_state"], r["to_state"], r["reason"], r["at"])
                                for r in hist], [self._flight(r) for r in flights])

    async def create_order_doc_async(self, order_id: str, request: dict, priority: int) -> tuple[OrderDoc, bool]:
        """:meth:`create_order_async` returning the order's :class:`OrderDoc`."""
        job = self._create_order_job(order_id, request, priority)

        def with_doc(db: sqlite3.Connection) -> tuple[OrderDoc, bool]:
            order, created = job(db)
            return self._doc(db, order), created
        return await self._await(with_doc)

    async def transition_doc_async(self, order_id: str, to_state: str, **kw: Any) -> OrderDoc:
        """:meth:`transition_async` (same keywords) returning the order's :class:`OrderDoc`."""
        job = self._transition_job(order_id, to_state, **kw)
        return await self._await(lambda db: self._doc(db, job(db)))

    def history(self, order_id: str) -> list[Transition]:
        with self._read() as rdb:
            rows = rdb.execute("SELECT * FROM order_history WHERE order_id=? ORDER BY id", (order_id,)).fetchall()
        return [Transition(r["order_id"], r["from_state"], r["to_state"], r["reason"], r["at"])
                for r in rows]

    # --- flights ----------------------------------------------------------------------------

    @staticmethod
    def _flight(row: sqlite3.Row) -> Flight:
        return Flight(**{k: row[k] for k in row.keys()})

    def start_flight(self, vehicle_id: str, *, order_id: str | None, kind: str,
                     origin: str | None, destination: str | None,
                     planned_energy_wh: float | None, mission_items: int | None,
                     drop_item: int | None = None, mission_index: int | None = None) -> Flight:
        """Record a new flight in state ``uploading`` (its index is the order's next one)."""
        if kind not in ("delivery", "divert", "return"):
            raise StoreError(f"unknown flight kind {kind!r}")
        now = self._clock()

        def job(db: sqlite3.Connection) -> Flight:
            if order_id is None:
                index = 0
            else:
                (index,) = db.execute("SELECT COUNT(*) FROM flights WHERE order_id=?", (order_id,)).fetchone()
            cur = db.execute(
                "INSERT INTO flights(order_id, vehicle_id, flight_index, mission_index, kind, state, "
                "origin, destination, planned_energy_wh, mission_items, drop_item, started_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (order_id, vehicle_id, index, mission_index, kind, F_UPLOADING, origin, destination,
                 planned_energy_wh, mission_items, drop_item, now, now))
            return self._flight(db.execute("SELECT * FROM flights WHERE id=?", (cur.lastrowid,)).fetchone())
        return self._wait(job)

    def update_flight(self, flight_id: int, *, state: str | None = None,
                      progress_current: int | None = None, used_energy_wh: float | None = None,
                      mission_items: int | None = None, destination: str | None = None) -> Flight:
        """Change a flight's state (checked against :data:`FLIGHT_TRANSITIONS`) and/or progress;
        durable when it returns."""
        return self._wait(self._update_flight_job(flight_id, state, progress_current, used_energy_wh,
                                                  mission_items, destination))

    def post_flight_progress(self, flight_id: int, progress_current: int) -> cf.Future:
        """Queue a flight's mission progress without waiting (a record, not a promise to anyone:
        it is written in order with the writes around it; a failure is logged)."""
        fut = self._writer.submit(self._update_flight_job(flight_id, None, progress_current, None, None, None))
        fut.add_done_callback(_log_failure)
        return fut

    def _update_flight_job(self, flight_id: int, state: str | None, progress_current: int | None,
                           used_energy_wh: float | None, mission_items: int | None,
                           destination: str | None) -> WriteJob:
        now = self._clock()
        values = (("progress_current", progress_current), ("used_energy_wh", used_energy_wh),
                  ("mission_items", mission_items), ("destination", destination))

        def job(db: sqlite3.Connection) -> Flight:
            row = db.execute("SELECT * FROM flights WHERE id=?", (flight_id,)).fetchone()
            if row is None:
                raise StoreError(f"unknown flight {flight_id}")
            sets = ["updated_at=?"]
            args: list[Any] = [now]
            if state is not None and state != row["state"]:
                if state not in FLIGHT_TRANSITIONS.get(row["state"], ()):
                    raise IllegalTransition(f"flight {flight_id}: {row['state']} -> {state} is not allowed")
                sets.append("state=?")
                args.append(state)
                if state not in OPEN_FLIGHT_STATES:
                    sets.append("ended_at=?")
                    args.append(now)
            for name, value in values:
                if value is not None:
                    sets.append(f"{name}=?")
                    args.append(value)
            db.execute(f"UPDATE flights SET {', '.join(sets)} WHERE id=?", (*args, flight_id))
            return self._flight(db.execute("SELECT * FROM flights WHERE id=?", (flight_id,)).fetchone())
        return job

    def get_flight(self, flight_id: int) -> Flight | None:
        with self._read() as rdb:
            row = rdb.execute("SELECT * FROM flights WHERE id=?", (flight_id,)).fetchone()
        return self._flight(row) if row else None

    def flights(self, *, order_id: str | None = None, vehicle_id: str | None = None,
                open_only: bool = False) -> list[Flight]:
        where, args = [], []
        if order_id is not None:
            where.append("order_id=?")
            args.append(order_id)
        if vehicle_id is not None:
            where.append("vehicle_id=?")
            args.append(vehicle_id)
        if open_only:
            where.append(f"state IN ({','.join('?' * len(OPEN_FLIGHT_STATES))})")
            args.extend(sorted(OPEN_FLIGHT_STATES))
        sql = "SELECT * FROM flights" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id"
        with self._read() as rdb:
            rows = rdb.execute(sql, args).fetchall()
        return [self._flight(r) for r in rows]

    # --- vehicles ---------------------------------------------------------------------------

    def set_vehicle(self, vehicle_id: str, *, node: str | None, ready_at: float | None = None) -> None:
        """Remember where a vehicle sits (``node`` None while flying) and when it is ready."""
        now = self._clock()
        args = (vehicle_id, node, now if ready_at is None else ready_at, now)

        def job(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO vehicles(id, node, ready_at, updated_at) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(id) DO UPDATE SET node=excluded.node, "
                       "ready_at=excluded.ready_at, updated_at=excluded.updated_at", args)
        self._wait(job)

    def get_vehicle(self, vehicle_id: str) -> VehicleRecord | None:
        with self._read() as rdb:
            r = rdb.execute("SELECT * FROM vehicles WHERE id=?", (vehicle_id,)).fetchone()
        return VehicleRecord(r["id"], r["node"], r["ready_at"], r["updated_at"]) if r else None

    # --- restart recovery -------------------------------------------------------------------

    def recovery(self) -> Recovery:
        """What was in progress at the last stop/crash: queued orders to re-plan, active orders
        (with their latest flight) whose vehicles must be re-attached, and all open flights."""
        queued = self.orders(sorted(QUEUED_ORDER_STATES))
        active = []
        for order in self.orders(sorted(ACTIVE_ORDER_STATES)):
            flights = self.flights(order_id=order.id)
            active.append((order, flights[-1] if flights else None))
        return Recovery(queued=queued, active=active, open_flights=self.flights(open_only=True))

    def counts(self) -> dict[str, int]:
        """Number of orders per state."""
        with self._read() as rdb:
            rows = rdb.execute("SELECT state, COUNT(*) AS n FROM orders GROUP BY state").fetchall()
        return {r["state"]: r["n"] for r in rows}


def _log_failure(fut: cf.Future) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        import logging

        logging.getLogger("droneops.fleet.store").error("store: a queued write failed", exc_info=fut.exception())
