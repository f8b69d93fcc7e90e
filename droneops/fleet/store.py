"""Durable fleet state: orders, their state history, flights and events, in SQLite.

Durability choices
------------------
* ``journal_mode=WAL``: readers never block the writer and a commit is one append to the
  write-ahead log.
* ``synchronous=FULL``: every commit fsyncs the WAL before :meth:`Store.create_order` (or any
  other write) returns. The service acknowledges an order only after the store returned, so
  an acknowledged order survives a process crash **and** a power cut / kernel panic. With
  ``NORMAL`` a WAL commit survives a process crash but the last transactions may be rolled
  back after a power loss -- an order a station was told "accepted" could vanish. Orders
  arrive at human rates (a few per minute), so one fsync per write is cheap.

Threading and asyncio
---------------------
The API is synchronous and the connection belongs to the thread that opened the store
(sqlite3's default ``check_same_thread``). The fleet service calls it directly from its event
loop thread: each call is one small indexed transaction (well under a millisecond plus one
fsync), telemetry is never written here (only state changes and mission-progress steps), and
calling inline keeps the order of writes identical to the order of decisions, which is what
crash recovery relies on.

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

import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from droneops.errors import UserError

SCHEMA_VERSION = 1

# --- order states ---------------------------------------------------------------------------

RECEIVED = "received"
PLANNED = "planned"
ASSIGNED = "assigned"
UPLOADING = "uploading"
IN_FLIGHT = "in_flight"
DELIVERED = "delivered"
COMPLETED = "completed"
REJECTED = "rejected"
ABORTED = "aborted"
DIVERTED = "diverted"
FAILED = "failed"

ORDER_STATES: tuple[str, ...] = (RECEIVED, PLANNED, ASSIGNED, UPLOADING, IN_FLIGHT, DELIVERED,
                                 COMPLETED, REJECTED, ABORTED, DIVERTED, FAILED)

#: Legal order state changes: state -> states it may move to.
ORDER_TRANSITIONS: dict[str, frozenset[str]] = {
    RECEIVED: frozenset({PLANNED, REJECTED, ABORTED}),
    # planned -> planned: re-planned (new plan JSON) while queued.
    PLANNED: frozenset({PLANNED, ASSIGNED, REJECTED, ABORTED}),
    # assigned -> planned: the vehicle became unavailable before the upload started.
    ASSIGNED: frozenset({PLANNED, UPLOADING, ABORTED, FAILED}),
    # uploading -> planned: upload/arm/start failed with the vehicle still on the ground.
    UPLOADING: frozenset({PLANNED, IN_FLIGHT, ABORTED, FAILED}),
    IN_FLIGHT: frozenset({DELIVERED, DIVERTED, ABORTED, FAILED}),
    DELIVERED: frozenset({COMPLETED, FAILED}),
    DIVERTED: frozenset({ASSIGNED, PLANNED, ABORTED, FAILED}),
    COMPLETED: frozenset(),
    REJECTED: frozenset(),
    ABORTED: frozenset(),
    FAILED: frozenset(),
}

TERMINAL_ORDER_STATES: frozenset[str] = frozenset(s for s, nxt in ORDER_TRANSITIONS.items() if not nxt)
#: Orders waiting for a vehicle (re-planned after a restart).
QUEUED_ORDER_STATES: frozenset[str] = frozenset({RECEIVED, PLANNED})
#: Orders whose vehicle may be moving: re-attach to the vehicle after a restart.
ACTIVE_ORDER_STATES: frozenset[str] = frozenset({ASSIGNED, UPLOADING, IN_FLIGHT, DELIVERED, DIVERTED})

# --- flight states --------------------------------------------------------------------------

F_UPLOADING = "uploading"
F_IN_FLIGHT = "in_flight"
F_LANDED = "landed"
F_FAILED = "failed"
F_CANCELLED = "cancelled"

FLIGHT_TRANSITIONS: dict[str, frozenset[str]] = {
    # uploading -> cancelled: nothing flew (upload/arm/start refused, vehicle on the ground).
    F_UPLOADING: frozenset({F_IN_FLIGHT, F_CANCELLED, F_FAILED, F_LANDED}),
    F_IN_FLIGHT: frozenset({F_LANDED, F_FAILED}),
    F_LANDED: frozenset(),
    F_FAILED: frozenset(),
    F_CANCELLED: frozenset(),
}
OPEN_FLIGHT_STATES: frozenset[str] = frozenset({F_UPLOADING, F_IN_FLIGHT})


class StoreError(Exception):
    """A store operation that cannot be done (programming or data error, not user input)."""


class IllegalTransition(StoreError):
    """An order or flight was asked to move to a state its current state does not allow."""


class OrderConflict(UserError):
    """An ``order_id`` that already exists was submitted again with a different request."""


class UnknownOrder(StoreError):
    """No order with that id."""


@dataclass(frozen=True)
class Order:
    """One delivery order as stored. ``request`` is the validated command (JSON object),
    ``plan`` the current plan (``Plan.to_json()``) or None; ``priority`` 0 (low) .. 9 (urgent)."""

    id: str
    state: str
    request: dict
    plan: dict | None
    vehicle_id: str | None
    priority: int
    reason: str | None
    created_at: float
    updated_at: float

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_ORDER_STATES


@dataclass(frozen=True)
class Transition:
    """One row of an order's history."""

    order_id: str
    from_state: str | None
    to_state: str
    reason: str | None
    at: float

    def to_json(self) -> dict:
        return {"from": self.from_state, "to": self.to_state, "reason": self.reason, "at": self.at}


@dataclass(frozen=True)
class Flight:
    """One flight of a vehicle (``order_id`` None for a repositioning/return flight).

    ``flight_index`` counts the flights of one order from 0 (a diversion starts a new one);
    ``mission_index`` is the flight's index among the missions of the order's current plan
    (None for a divert/return flight).
    Energies in Wh; ``used_energy_wh`` None until measured. ``progress_current`` is the index
    of the current mission item, ``mission_items`` the uploaded item count. ``destination`` and
    ``origin`` are network node ids; ``kind`` is "delivery", "divert" or "return".
    """

    id: int
    order_id: str | None
    vehicle_id: str
    flight_index: int
    mission_index: int | None
    kind: str
    state: str
    origin: str | None
    destination: str | None
    planned_energy_wh: float | None
    used_energy_wh: float | None
    mission_items: int | None
    progress_current: int | None
    drop_item: int | None
    started_at: float
    updated_at: float
    ended_at: float | None

    @property
    def open(self) -> bool:
        return self.state in OPEN_FLIGHT_STATES


@dataclass(frozen=True)
class Event:
    id: int
    at: float
    kind: str
    order_id: str | None
    vehicle_id: str | None
    data: dict

    def to_json(self) -> dict:
        return {"id": self.id, "at": self.at, "kind": self.kind, "order_id": self.order_id,
                "vehicle_id": self.vehicle_id, **self.data}


@dataclass(frozen=True)
class VehicleRecord:
    """Last known whereabouts of a vehicle: ``node`` it sits at (None when unknown or flying),
    ``ready_at`` epoch s when its battery swap/charge ends."""

    id: str
    node: str | None
    ready_at: float
    updated_at: float


@dataclass(frozen=True)
class Recovery:
    """What was in progress when the service stopped (see :meth:`Store.recovery`).

    ``queued``: orders to re-plan and dispatch (received/planned). ``active``: orders whose
    vehicle may be flying (assigned/uploading/in_flight/delivered/diverted), each with its
    latest flight (or None). ``open_flights``: every flight not finished, including return
    flights of aborted orders.
    """

    queued: list[Order]
    active: list[tuple[Order, Flight | None]]
    open_flights: list[Flight]


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
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    order_id TEXT,
    vehicle_id TEXT,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vehicles (
    id TEXT PRIMARY KEY,
    node TEXT,
    ready_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


class Store:
    """The fleet database. Open with ``Store(path)`` (``":memory:"`` for tests), close with
    :meth:`close` or use as a context manager. Every public write is one transaction,
    committed (and fsynced) before the method returns."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        if self.path != ":memory:":
            parent = Path(self.path).parent
            if not parent.is_dir():
                raise UserError(f"store: directory {parent} does not exist")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        except sqlite3.Error as exc:
            raise UserError(f"store: cannot open {self.path}: {exc}") from None
        self._db.row_factory = sqlite3.Row
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise UserError(f"store: {self.path} is not a droneops database: {exc}") from None
        if self.path != ":memory:" and str(mode).lower() != "wal":
            raise StoreError(f"store: could not enable WAL on {self.path} (got {mode})")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise UserError(f"store: {self.path} has schema version {row[0]}, "
                            f"this droneops expects {SCHEMA_VERSION}")

    # --- plumbing ---------------------------------------------------------------------------

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb) -> None:
            if exc_type is None:
                self.db.execute("COMMIT")
            else:
                self.db.execute("ROLLBACK")

    def _tx(self) -> Store._Tx:
        return Store._Tx(self._db)

    def close(self) -> None:
        """Checkpoint the WAL and close. Safe to call twice."""
        if self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()
            self._db = None  # type: ignore[assignment]

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def journal_mode(self) -> str:
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    @property
    def synchronous(self) -> int:
        """SQLite's synchronous level (2 = FULL)."""
        return int(self._db.execute("PRAGMA synchronous").fetchone()[0])

    # --- orders -----------------------------------------------------------------------------

    @staticmethod
    def _order(row: sqlite3.Row) -> Order:
        return Order(id=row["id"], state=row["state"], request=json.loads(row["request"]),
                     plan=json.loads(row["plan"]) if row["plan"] else None,
                     vehicle_id=row["vehicle_id"], priority=int(row["priority"]),
                     reason=row["reason"], created_at=row["created_at"],
                     updated_at=row["updated_at"])

    def create_order(self, order_id: str, request: dict, priority: int) -> tuple[Order, bool]:
        """Store a new order in state ``received``; return ``(order, created)``.

        Idempotent: if ``order_id`` exists with the same ``request`` the stored order is
        returned with ``created=False`` (a retried command creates no duplicate). The same id
        with a different request raises :class:`OrderConflict`.
        """
        text = _dumps(request)
        now = self._clock()
        with self._tx() as db:
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

    def get_order(self, order_id: str) -> Order | None:
        row = self._db.execute("SELECT * FROM orders WHERE id=?", (order_id,)).fetchone()
        return self._order(row) if row else None

    def orders(self, states: Iterable[str] | None = None) -> list[Order]:
        """Orders in creation order, optionally only those in ``states``."""
        if states is None:
            rows = self._db.execute("SELECT * FROM orders ORDER BY seq").fetchall()
        else:
            states = list(states)
            marks = ",".join("?" * len(states))
            rows = self._db.execute(f"SELECT * FROM orders WHERE state IN ({marks}) ORDER BY seq",
                                    states).fetchall()
        return [self._order(r) for r in rows]

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
        if to_state not in ORDER_TRANSITIONS:
            raise IllegalTransition(f"unknown order state {to_state!r}")
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT state FROM orders WHERE id=?", (order_id,)).fetchone()
            if row is None:
                raise UnknownOrder(order_id)
            current = row["state"]
            if expect is not None:
                allowed = {expect} if isinstance(expect, str) else set(expect)
                if current not in allowed:
                    raise IllegalTransition(f"order {order_id}: is {current}, expected {sorted(allowed)}")
            if to_state not in ORDER_TRANSITIONS[current]:
                raise IllegalTransition(f"order {order_id}: {current} -> {to_state} is not allowed")
            sets = ["state=?", "updated_at=?"]
            args: list[Any] = [to_state, now]
            if reason is not None or to_state == REJECTED:
                sets.append("reason=?")
                args.append(reason)
            if plan is not None:
                sets.append("plan=?")
                args.append(_dumps(plan))
            if vehicle_id is not None:
                sets.append("vehicle_id=?")
                args.append(vehicle_id)
            elif unassign:
                sets.append("vehicle_id=NULL")
            db.execute(f"UPDATE orders SET {', '.join(sets)} WHERE id=?", (*args, order_id))
            db.execute("INSERT INTO order_history(order_id, from_state, to_state, reason, at) "
                       "VALUES (?, ?, ?, ?, ?)", (order_id, current, to_state, reason, now))
            out = db.execute("SELECT * FROM orders WHERE id=?", (order_id,)).fetchone()
        return self._order(out)

    def history(self, order_id: str) -> list[Transition]:
        rows = self._db.execute("SELECT * FROM order_history WHERE order_id=? ORDER BY id",
                                (order_id,)).fetchall()
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
        with self._tx() as db:
            if order_id is None:
                index = 0
            else:
                (index,) = db.execute("SELECT COUNT(*) FROM flights WHERE order_id=?",
                                      (order_id,)).fetchone()
            cur = db.execute(
                "INSERT INTO flights(order_id, vehicle_id, flight_index, mission_index, kind, state, "
                "origin, destination, planned_energy_wh, mission_items, drop_item, started_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (order_id, vehicle_id, index, mission_index, kind, F_UPLOADING, origin, destination,
                 planned_energy_wh, mission_items, drop_item, now, now))
            row = db.execute("SELECT * FROM flights WHERE id=?", (cur.lastrowid,)).fetchone()
        return self._flight(row)

    def update_flight(self, flight_id: int, *, state: str | None = None,
                      progress_current: int | None = None, used_energy_wh: float | None = None,
                      mission_items: int | None = None, destination: str | None = None) -> Flight:
        """Change a flight's state (checked against :data:`FLIGHT_TRANSITIONS`) and/or progress."""
        now = self._clock()
        with self._tx() as db:
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
            for name, value in (("progress_current", progress_current),
                                ("used_energy_wh", used_energy_wh),
                                ("mission_items", mission_items), ("destination", destination)):
                if value is not None:
                    sets.append(f"{name}=?")
                    args.append(value)
            db.execute(f"UPDATE flights SET {', '.join(sets)} WHERE id=?", (*args, flight_id))
            out = db.execute("SELECT * FROM flights WHERE id=?", (flight_id,)).fetchone()
        return self._flight(out)

    def get_flight(self, flight_id: int) -> Flight | None:
        row = self._db.execute("SELECT * FROM flights WHERE id=?", (flight_id,)).fetchone()
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
        return [self._flight(r) for r in self._db.execute(sql, args).fetchall()]

    # --- events -----------------------------------------------------------------------------

    def add_event(self, kind: str, *, order_id: str | None = None, vehicle_id: str | None = None,
                  data: dict | None = None) -> Event:
        now = self._clock()
        body = data or {}
        with self._tx() as db:
            cur = db.execute("INSERT INTO events(at, kind, order_id, vehicle_id, data) "
                             "VALUES (?, ?, ?, ?, ?)", (now, kind, order_id, vehicle_id, _dumps(body)))
        assert cur.lastrowid is not None  # an INSERT always sets it
        return Event(int(cur.lastrowid), now, kind, order_id, vehicle_id, body)

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
        return [Event(r["id"], r["at"], r["kind"], r["order_id"], r["vehicle_id"], json.loads(r["data"]))
                for r in self._db.execute(sql, args).fetchall()]

    # --- vehicles ---------------------------------------------------------------------------

    def set_vehicle(self, vehicle_id: str, *, node: str | None, ready_at: float | None = None) -> None:
        """Remember where a vehicle sits (``node`` None while flying) and when it is ready."""
        now = self._clock()
        with self._tx() as db:
            db.execute("INSERT INTO vehicles(id, node, ready_at, updated_at) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(id) DO UPDATE SET node=excluded.node, "
                       "ready_at=excluded.ready_at, updated_at=excluded.updated_at",
                       (vehicle_id, node, now if ready_at is None else ready_at, now))

    def get_vehicle(self, vehicle_id: str) -> VehicleRecord | None:
        r = self._db.execute("SELECT * FROM vehicles WHERE id=?", (vehicle_id,)).fetchone()
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
        rows = self._db.execute("SELECT state, COUNT(*) AS n FROM orders GROUP BY state").fetchall()
        return {r["state"]: r["n"] for r in rows}
