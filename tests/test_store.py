"""The fleet store: durability settings, idempotent orders, legal transitions, recovery."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sqlite3
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


# --- events: outbox, non-durable writes, retention (droneops.fleet.store_events) ----------------


class SetClock:
    """A clock the test sets (epoch s)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_events_wait_in_the_outbox_until_marked_published(tmp_path):
    path = tmp_path / "fleet.db"
    with Store(path, clock=SetClock(1_700_000_000.0)) as db:
        ids = [db.add_event("takeoff", order_id=f"o{i}", vehicle_id="v1", data={"node": "D"}).id for i in range(5)]
        pending = db.unpublished_events()
        assert [e.id for e in pending] == ids and pending[0].data == {"node": "D"}
        assert pending[0].at == 1_700_000_000.0 and pending[0].order_id == "o0"
        assert [e.id for e in db.unpublished_events(after_id=ids[1], limit=2)] == ids[2:4]
        db.mark_published(ids[:3])
    with Store(path) as db:   # the outbox is durable state: still there after a reopen
        assert [e.id for e in db.unpublished_events()] == ids[3:]
        assert db.outbox_size() == 2 and db.event_count() == 5


def test_old_database_is_migrated_to_the_outbox(tmp_path):
    """A database of the schema before the outbox (no event_outbox table, no events(at) index,
    no events_schema key), with events in it: opening it adds the outbox; the old events count
    as published, new ones are queued."""
    path = tmp_path / "fleet.db"
    Store(path).close()
    raw = sqlite3.connect(path)
    raw.executescript("DROP TABLE event_outbox; DROP INDEX events_at; DELETE FROM meta WHERE key='events_schema';"
                      "INSERT INTO events(at, kind, order_id, vehicle_id, data) VALUES "
                      "(1.0, 'accepted', 'old1', NULL, '{}'), (2.0, 'takeoff', 'old1', 'v1', '{}');")
    raw.commit()
    assert raw.execute("SELECT name FROM sqlite_master WHERE name IN ('event_outbox', 'events_at')").fetchall() == []
    raw.close()
    with Store(path) as db:
        assert [e.kind for e in db.events()] == ["accepted", "takeoff"]
        assert db.unpublished_events() == []
        new = db.add_event("landed", order_id="old1", vehicle_id="v1")
        assert [e.id for e in db.unpublished_events()] == [new.id]
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("SELECT value FROM meta WHERE key='events_schema'").fetchone() == ("2",)
        assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(S.SCHEMA_VERSION),)
        assert {r[0] for r in raw.execute("SELECT name FROM sqlite_master")} >= {"event_outbox", "events_at"}
    finally:
        raw.close()


def test_non_durable_events_cost_no_fsync(db):
    """200 events written non-durably, one at a time (each its own batch): no durable commit at
    all; the same 200 written durably one at a time: one fsynced commit each."""
    before = db.commits
    for i in range(200):
        db.add_event("command_rejected", data={"n": i}, durable=False)
    assert db.commits == before            # by design: a batch of non-durable jobs is never fsynced
    assert db.lazy_commits == 200          # each waited for alone: one batch each
    assert db.synchronous == 2             # FULL again for the durable writes (a read: one commit)
    before = db.commits
    for i in range(200):
        db.add_event("takeoff", data={"n": i})
    assert db.commits == before + 200
    assert len(db.events(kind="command_rejected")) == 200


def test_non_durable_write_rides_in_a_durable_batch(db):
    """Non-durable jobs queued together with a durable one are committed (fsynced) with it."""
    futs = [db.post_event("command_rejected", data={"n": i}, durable=False) for i in range(50)]
    order, _ = db.create_order("o1", REQ, 5)
    for f in futs:
        f.result()
    assert len(db.events(kind="command_rejected")) == 50 and order.id == "o1"


def test_non_durable_events_survive_kill_9(tmp_path):
    """A non-durable commit is in the WAL without an fsync: it survives a process crash."""
    path = tmp_path / "fleet.db"
    code = textwrap.dedent(f"""
        import signal
        from droneops.fleet.store import Store
        s = Store({str(path)!r})
        for i in range(20):
            s.add_event("command_rejected", data={{"n": i}}, durable=False)
        print(f"stored {{s.commits}} {{s.lazy_commits}}", flush=True)
        signal.pause()  # until the test kills it
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert line == ["stored", "0", "20"]
    with Store(path) as db:
        assert [e.data["n"] for e in db.events(kind="command_rejected")] == list(range(20))


DAY_S = 86_400.0


def test_prune_by_age(tmp_path):
    """Events one per day for 10 days; a 3.5-day retention at day 10 keeps the events of days
    7, 8, 9 and 10 (ages 3, 2, 1, 0 days); the outbox loses the pruned ones too."""
    clock = SetClock(1_700_000_000.0)
    with Store(tmp_path / "fleet.db", clock=clock) as db:
        for day in range(11):
            clock.t = 1_700_000_000.0 + day * DAY_S
            db.add_event("tick", data={"day": day})
        assert db.prune_events(max_age_s=3.5 * DAY_S, max_rows=0, chunk_rows=2) == 7
        assert [e.data["day"] for e in db.events()] == [7, 8, 9, 10]
        assert [e.data["day"] for e in db.unpublished_events()] == [7, 8, 9, 10]
        assert db.prune_events(max_age_s=3.5 * DAY_S, max_rows=0) == 0


def test_prune_by_count(tmp_path):
    with Store(tmp_path / "fleet.db", clock=SetClock(1_700_000_000.0)) as db:
        for i in range(25):
            db.add_event("tick", data={"i": i})
        db.mark_published([e.id for e in db.events()[:10]])
        assert db.prune_events(max_age_s=0, max_rows=8, chunk_rows=4) == 17
        assert [e.data["i"] for e in db.events()] == list(range(17, 25))
        assert db.outbox_size() == 8
        assert db.prune_events(max_age_s=30 * DAY_S, max_rows=8) == 0   # nothing old, 8 left


async def test_prune_async_lets_other_writes_through(tmp_path):
    """Pruning 1,000 events in chunks of 100 is 10 writes; an order created meanwhile is
    committed before the pruning ends (its write is queued between two chunks)."""
    clock = SetClock(1_700_000_000.0)
    with Store(tmp_path / "fleet.db", clock=clock) as db:
        for i in range(1000):
            db.post_event("tick", data={"i": i}, durable=False)
        db.add_event("tick", data={"i": 1000})
        clock.t += 2 * DAY_S
        writes = db.writes
        prune = asyncio.ensure_future(db.prune_events_async(max_age_s=DAY_S, max_rows=0, chunk_rows=100))
        await asyncio.sleep(0)   # the first chunk is queued
        order, _ = await db.create_order_async("o1", REQ, 5)
        assert not prune.done()
        assert await prune == 1001
        assert db.writes - writes == 12   # 11 chunks (the last one finds fewer than 100) + the order
        assert order.state == S.RECEIVED and db.event_count() == 0


async def test_a_cancelled_write_does_not_stop_the_writer(tmp_path):
    """A task awaiting a write is cancelled while the write is queued (asyncio then cancels the
    write's future): the write still runs, and the writer thread goes on with the next ones."""
    path = tmp_path / "fleet.db"
    with Store(path) as db:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")   # the writer thread waits for this lock at its next batch
        blocker = db.post_event("tick", data={"i": 0})
        tasks = [asyncio.ensure_future(db.add_event_async("tick", data={"i": i})) for i in range(1, 50)]
        await asyncio.sleep(0)   # every write is queued behind the blocked one
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert all(t.cancelled() for t in tasks)
        other.execute("COMMIT")
        other.close()
        blocker.result()
        # with the writer thread dead this would never be committed: wait_for turns that into a failure
        order, _ = await asyncio.wait_for(db.create_order_async("after", REQ, 5), 20)
        assert order.state == S.RECEIVED
        assert len(db.events(kind="tick")) == 50
