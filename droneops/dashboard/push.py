"""Pushing fleet state to browsers: per-browser coalescing of changes over Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any, Protocol

from aiohttp import web

from droneops.dashboard.config import DashboardConfig
from droneops.dashboard.state import TERMINAL_ORDER_STATES, FleetState, Key
from droneops.fleet.topics import dumps


class FeedStatus(Protocol):
    """What the hub shows of the MQTT feed (:class:`droneops.dashboard.feed.MqttFeed`)."""

    connected: bool

    def feed_json(self) -> dict: ...


class StreamClient:
    """One browser stream: the keys changed since its last push, and its event cursor."""

    def __init__(self, event_seq: int) -> None:
        self.dirty: set[Key] = set()
        self.wake = asyncio.Event()
        self.event_seq = event_seq


class Hub:
    """Fans state changes out to browser streams, coalescing per vehicle/order: a client
    gets at most one push per ``push_interval_s`` holding the newest value of every key that
    changed since its previous push (so 100 vehicles at 2 Hz cost each browser at most
    1/push_interval_s pushes per second, whatever the message rate)."""

    def __init__(self, config: DashboardConfig, state: FleetState) -> None:
        self.config = config
        self.state = state
        self.clients: set[StreamClient] = set()
        self.feed: FeedStatus | None = None
        self.pushes = 0

    def mark(self, keys: Iterable[Key]) -> None:
        keys = list(keys)
        for c in self.clients:
            c.dirty.update(keys)
            c.wake.set()

    def feed_json(self) -> dict:
        return self.feed.feed_json() if self.feed else {"connected": False, "error": "not started",
                                                        "denied": []}

    @property
    def feed_connected(self) -> bool:
        return bool(self.feed and self.feed.connected)

    def _orders_shown(self) -> list[str]:
        """Active orders, then the newest finished ones (``terminal_orders_shown``)."""
        done = [o for o in self.state.orders.values() if o.get("state") in TERMINAL_ORDER_STATES]
        done.sort(key=lambda o: o.get("updated_at") or 0, reverse=True)
        hidden = {o["order_id"] for o in done[self.config.terminal_orders_shown:]}
        return [oid for oid in self.state.orders if oid not in hidden]

    def snapshot(self, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        s, c = self.state, self.config
        return {
            "server_time": now, "fleet": c.fleet_name, "prefix": s.topics.prefix, "station": c.station,
            "stale_after_s": c.stale_after_s, "heartbeat_s": c.heartbeat_s,
            "service": s.service, "feed": self.feed_json(),
            "vehicles": {vid: s.vehicle_view(vid, now, c.stale_after_s, self.feed_connected)
                         for vid in s.vehicles},
            "orders": {oid: s.orders[oid] for oid in self._orders_shown()},
            "events": list(s.events),
        }

    def update(self, client: StreamClient, now: float | None = None) -> dict:
        """The push for one client: newest values of its dirty keys (None = removed)."""
        now = time.time() if now is None else now
        s, c = self.state, self.config
        dirty, client.dirty = client.dirty, set()
        out: dict[str, Any] = {"server_time": now}
        vehicles = {vid: s.vehicle_view(vid, now, c.stale_after_s, self.feed_connected)
                    for kind, vid in dirty if kind == "vehicle"}
        orders = {oid: s.orders.get(oid) for kind, oid in dirty if kind == "order"}
        if any(k == "service" or k == "feed" for k, _ in dirty):
            out["service"] = s.service
            out["feed"] = self.feed_json()
            # staleness of every vehicle depends on these
            vehicles = {vid: s.vehicle_view(vid, now, c.stale_after_s, self.feed_connected)
                        for vid in s.vehicles} | vehicles
        if orders:
            # a vehicle's "inbound" flag follows its order
            for vid, v in s.vehicles.items():
                if v.get("order_id") in orders:
                    vehicles[vid] = s.vehicle_view(vid, now, c.stale_after_s, self.feed_connected)
        if vehicles:
            out["vehicles"] = vehicles
        if orders:
            out["orders"] = orders
        events = s.events_after(client.event_seq)
        if events:
            out["events"] = events
            client.event_seq = events[-1]["seq"]
        return out

    async def stream(self, request):
        """``GET /api/stream``: Server-Sent Events. First ``snapshot``, then ``update``
        pushes (coalesced), and a ``ping`` every ``heartbeat_s`` when idle."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        client = StreamClient(self.state.event_seq)
        self.clients.add(client)
        try:
            await resp.write(b"retry: 2000\n\n")
            await resp.write(sse_frame("snapshot", self.snapshot()))
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(client.wake.wait(), self.config.heartbeat_s)
                client.wake.clear()
                if client.dirty or self.state.event_seq > client.event_seq:
                    await self._gather(client)
                    await resp.write(sse_frame("update", self.update(client)))
                    self.pushes += 1
                    await asyncio.sleep(self.config.push_interval_s)
                else:
                    await resp.write(sse_frame("ping", {"server_time": time.time(), "feed": self.feed_json()}))
        except ConnectionResetError:  # the browser went away
            pass
        finally:
            self.clients.discard(client)
        return resp


    async def _gather(self, client: StreamClient) -> None:
        """Wait for a burst of changes to end (quiet gap) or the gather limit, whichever first."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.config.push_gather_s
        while (left := end - loop.time()) > 0:
            client.wake.clear()
            try:
                await asyncio.wait_for(client.wake.wait(), min(left, self.config.push_quiet_s))
            except TimeoutError:
                return
        client.wake.clear()


def sse_frame(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: ".encode() + dumps(data) + b"\n\n"
