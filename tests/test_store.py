"""The fleet store: durability settings, idempotent orders, legal transitions, recovery."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from droneops.fleet import store as S
from droneops.fleet.store import IllegalTransition, OrderConflict, Store


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def db(tmp_path):
    s = Store(tmp_path / "fleet.db", clock=FakeClock())
    yield s
    s.close()


REQ = {"to": "P01", "payload_kg": 1.5, "priority": 5}


def test_wal_and_full_sync(db):
    assert db.journal_mode.lower() == "wal"
    assert db.synchronous == 2  # FULL


def test_create_order_is_idempotent(db):
    order, created = db.create_order("o1", REQ, 5)
    assert created and order.state == S.RECEIVED and order.request == REQ
    again, created2 = db.create_order("o1", dict(REQ), 5)
    assert not created2 and again.id == "o1" and again.created_at == order.created_at
    assert len(db.orders()) == 1
    assert [t.to_state for t in db.history("o1")] == [S.RECEIVED]


def test_same_id_different_request_conflicts(db):
    db.create_order("o1", REQ, 5)
    with pytest.raises(OrderConflict):
        db.create_order("o1", {**REQ, "payload_kg": 2.0}, 5)
    assert db.get_order("o1").request == REQ


def test_happy_path_and_history(db):
    db.create_order("o1", REQ, 5)
    plan = {"feasible": True, "legs": []}
    db.transition("o1", S.PLANNED, plan=plan)
    db.transition("o1", S.ASSIGNED, vehicle_id="v1")
    for state in (S.UPLOADING, S.IN_FLIGHT, S.DELIVERED, S.COMPLETED):
        db.transition("o1", state)
    order = db.get_order("o1")
    assert order.state == S.COMPLETED and order.terminal
    assert order.plan == plan and order.vehicle_id == "v1"
    hist = db.history("o1")
    assert [(h.from_state, h.to_state) for h in hist] == [
        (None, "received"), ("received", "planned"), ("planned", "assigned"),
        ("assigned", "uploading"), ("uploading", "in_flight"), ("in_flight", "delivered"),
        ("delivered", "completed")]
    assert all(a.at < b.at for a, b in itertools.pairwise(hist))


def test_rejected_keeps_reason(db):
    db.create_order("o1", REQ, 5)
    db.transition("o1", S.REJECTED, reason="no feasible route")
    assert db.get_order("o1").reason == "no feasible route"
    with pytest.raises(IllegalTransition):
        db.transition("o1", S.PLANNED)


def _path_to(state: str) -> list[str]:
    """A legal route from received to ``state`` (BFS over the transition table)."""
    frontier = [[S.RECEIVED]]
    seen = {S.RECEIVED}
    while frontier:
        path = frontier.pop(0)
        if path[-1] == state:
            return path[1:]
        for nxt in sorted(S.ORDER_TRANSITIONS[path[-1]]):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(path + [nxt])
    raise AssertionError(f"{state} unreachable")


@pytest.mark.parametrize("src,dst", list(itertools.product(S.ORDER_STATES, S.ORDER_STATES)))
def test_every_transition_is_enforced(tmp_path, src, dst):
    with Store(":memory:") as db:
        db.create_order("o", REQ, 5)
        for state in _path_to(src):
            db.transition("o", state)
        assert db.get_order("o").state == src
        if dst in S.ORDER_TRANSITIONS[src]:
            assert db.transition("o", dst).state == dst
        else:
            with pytest.raises(IllegalTransition):
                db.transition("o", dst)
            assert db.get_order("o").state == src
            assert db.history("o")[-1].to_state == src


def test_expect_guard(db):
    db.create_order("o1", REQ, 5)
    db.transition("o1", S.PLANNED)
    with pytest.raises(IllegalTransition):
        db.transition("o1", S.ASSIGNED, expect=S.RECEIVED)
    assert db.transition("o1", S.ASSIGNED, expect=(S.PLANNED, S.RECEIVED)).state == S.ASSIGNED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(S.ORDER_STATES), max_size=15))
def test_random_walks_stay_legal(moves):
    with Store(":memory:") as db:
        db.create_order("o", REQ, 5)
        state = S.RECEIVED
        for move in moves:
            if move in S.ORDER_TRANSITIONS[state]:
                state = db.transition("o", move).state
            else:
                with pytest.raises(IllegalTransition):
                    db.transition("o", move)
        hist = db.history("o")
        assert hist[-1].to_state == state == db.get_order("o").state
        for h in hist[1:]:
            assert h.to_state in S.ORDER_TRANSITIONS[h.from_state]


def test_flights_and_progress(db):
    db.create_order("o1", REQ, 5)
    f0 = db.start_flight("v1", order_id="o1", kind="delivery", origin="depot", destination="P01",
                         planned_energy_wh=120.0, mission_items=9, drop_item=5)
    assert f0.flight_index == 0 and f0.state == S.F_UPLOADING and f0.open
    db.update_flight(f0.id, state=S.F_IN_FLIGHT, progress_current=3)
    f1 = db.start_flight("v1", order_id="o1", kind="divert", origin=None, destination="S02",
                         planned_energy_wh=30.0, mission_items=4)
    assert f1.flight_index == 1
    done = db.update_flight(f0.id, state=S.F_LANDED, used_energy_wh=118.5)
    assert done.ended_at is not None and not done.open
    with pytest.raises(IllegalTransition):
        db.update_flight(f0.id, state=S.F_IN_FLIGHT)
    assert [f.id for f in db.flights(open_only=True)] == [f1.id]
    ret = db.start_flight("v2", order_id=None, kind="return", origin="P02", destination="depot",
                          planned_energy_wh=None, mission_items=None)
    assert ret.order_id is None and ret.flight_index == 0


def test_recovery_lists_what_was_in_progress(tmp_path):
    path = tmp_path / "fleet.db"
    with Store(path) as db:
        for oid in ("q1", "q2", "a1", "f1", "done", "rej"):
            db.create_order(oid, {**REQ, "order_id": oid}, 5)
        db.transition("q2", S.PLANNED)
        for state in (S.PLANNED, S.ASSIGNED, S.UPLOADING):
            db.transition("a1", state)
        fl_a1 = db.start_flight("v1", order_id="a1", kind="delivery", origin="depot",
                                destination="P01", planned_energy_wh=1.0, mission_items=5)
        for state in (S.PLANNED, S.ASSIGNED, S.UPLOADING, S.IN_FLIGHT):
            db.transition("f1", state)
        fl_f1 = db.start_flight("v2", order_id="f1", kind="delivery", origin="depot",
                                destination="P02", planned_energy_wh=1.0, mission_items=5)
        db.update_flight(fl_f1.id, state=S.F_IN_FLIGHT, progress_current=2)
        for state in (S.PLANNED, S.ASSIGNED, S.UPLOADING, S.IN_FLIGHT, S.DELIVERED, S.COMPLETED):
            db.transition("done", state)
        db.transition("rej", S.REJECTED, reason="x")
        db.set_vehicle("v3", node="S01", ready_at=123.0)
    # reopen: everything must come back from disk
    with Store(path) as db:
        rec = db.recovery()
        assert [o.id for o in rec.queued] == ["q1", "q2"]
        assert [(o.id, f.id if f else None) for o, f in rec.active] == [("a1", fl_a1.id), ("f1", fl_f1.id)]
        assert {f.id for f in rec.open_flights} == {fl_a1.id, fl_f1.id}
        assert db.get_flight(fl_f1.id).progress_current == 2
        assert db.get_vehicle("v3").node == "S01" and db.get_vehicle("v3").ready_at == 123.0
        assert db.counts() == {"received": 1, "planned": 1, "uploading": 1, "in_flight": 1,
                               "completed": 1, "rejected": 1}


def test_events_roundtrip(db):
    e = db.add_event("delivered", order_id="o1", vehicle_id="v1", data={"node": "P01"})
    assert e.to_json()["node"] == "P01"
    assert [x.kind for x in db.events(order_id="o1")] == ["delivered"]


def test_acknowledged_order_survives_kill_9(tmp_path):
    """A child process creates orders and prints 'ack' after each create returns; we kill -9 it
    as soon as we read the acks. Every acknowledged order must be in the database."""
    path = tmp_path / "fleet.db"
    code = textwrap.dedent(f"""
        import signal
        from droneops.fleet.store import Store
        s = Store({str(path)!r})
        for i in range(20):
            s.create_order(f"o{{i}}", {{"to": "P01", "payload_kg": 1.0}}, 5)
            print(f"ack o{{i}}", flush=True)
        signal.pause()  # until the test kills it
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    acked = []
    try:
        for line in proc.stdout:
            acked.append(line.split()[1])
            if len(acked) == 20:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(acked) == 20
    with Store(path) as db:
        assert {o.id for o in db.orders()} >= set(acked)


def test_not_a_database(tmp_path):
    bad = tmp_path / "x.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(S.UserError):
        Store(bad)
