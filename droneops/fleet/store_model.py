"""The fleet store's vocabulary: order and flight states, their legal moves, the errors and
the records (:class:`Order`, :class:`Flight`, ...) that :mod:`droneops.fleet.store` returns.

Order lifecycle
---------------
``received -> planned -> assigned -> uploading -> in_flight -> delivered -> completed``, with
side states ``rejected`` (with a reason), ``aborted``, ``diverted``, ``lost_contact`` and
``failed``. :data:`ORDER_TRANSITIONS` lists every legal move; anything else raises
:class:`IllegalTransition`. ``diverted`` means the vehicle was sent to a station before the
drop; from there the order is flown on (``assigned``) or requeued (``planned``).
``lost_contact`` means the vehicle's link stayed down longer than ``[supervision]
lost_contact_s`` during a flight (``in_flight``, ``delivered`` or ``diverted``): the order goes
back to the state it came from when the link returns, or ``failed`` when an operator clears it
(:mod:`droneops.fleet.lost_contact`); it is never dispatched again meanwhile.

Timestamps are UNIX epoch seconds (UTC). Every name here is also importable from
:mod:`droneops.fleet.store`.
"""

from __future__ import annotations

from dataclasses import dataclass

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
LOST_CONTACT = "lost_contact"
FAILED = "failed"

ORDER_STATES: tuple[str, ...] = (RECEIVED, PLANNED, ASSIGNED, UPLOADING, IN_FLIGHT, DELIVERED,
                                 COMPLETED, REJECTED, ABORTED, DIVERTED, LOST_CONTACT, FAILED)

#: Legal order state changes: state -> states it may move to.
ORDER_TRANSITIONS: dict[str, frozenset[str]] = {
    RECEIVED: frozenset({PLANNED, REJECTED, ABORTED}),
    # planned -> planned: re-planned (new plan JSON) while queued.
    PLANNED: frozenset({PLANNED, ASSIGNED, REJECTED, ABORTED}),
    # assigned -> planned: the vehicle became unavailable before the upload started.
    ASSIGNED: frozenset({PLANNED, UPLOADING, ABORTED, FAILED}),
    # uploading -> planned: upload/arm/start failed with the vehicle still on the ground.
    UPLOADING: frozenset({PLANNED, IN_FLIGHT, ABORTED, FAILED}),
    IN_FLIGHT: frozenset({DELIVERED, DIVERTED, ABORTED, FAILED, LOST_CONTACT}),
    DELIVERED: frozenset({COMPLETED, FAILED, LOST_CONTACT}),
    DIVERTED: frozenset({ASSIGNED, PLANNED, ABORTED, FAILED, LOST_CONTACT}),
    # lost_contact -> the state it came from when the link returns; failed when an operator clears it
    LOST_CONTACT: frozenset({IN_FLIGHT, DELIVERED, DIVERTED, ABORTED, FAILED}),
    COMPLETED: frozenset(),
    REJECTED: frozenset(),
    ABORTED: frozenset(),
    FAILED: frozenset(),
}

TERMINAL_ORDER_STATES: frozenset[str] = frozenset(s for s, nxt in ORDER_TRANSITIONS.items() if not nxt)
#: Orders waiting for a vehicle (re-planned after a restart).
QUEUED_ORDER_STATES: frozenset[str] = frozenset({RECEIVED, PLANNED})
#: Orders whose vehicle may be moving: re-attach to the vehicle after a restart.
ACTIVE_ORDER_STATES: frozenset[str] = frozenset({ASSIGNED, UPLOADING, IN_FLIGHT, DELIVERED, DIVERTED,
                                                 LOST_CONTACT})
#: Orders whose vehicle is in the air: these go ``lost_contact`` when its link stays down.
AIRBORNE_ORDER_STATES: frozenset[str] = frozenset({IN_FLIGHT, DELIVERED, DIVERTED})

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


@dataclass(frozen=True)
class OrderDoc:
    """An order with its history and flights, read in the same transaction as the write that
    returned it (what the retained order topic shows; the ``*_doc_async`` writes return it so
    the event loop publishes without reading the database itself)."""

    order: Order
    history: list[Transition]
    flights: list[Flight]
