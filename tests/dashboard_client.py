"""Test clients of the station dashboard: :func:`running_dashboard` (``serve()`` on a free
loopback port), :class:`SseReader` (reads ``/api/stream`` and merges it as the page does) and
:func:`post_order` (``POST /api/orders``)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp

from droneops.dashboard.app import serve
from droneops.dashboard.config import DashboardConfig
from mqtt_broker import USERS


class SseReader:
    """Reads the dashboard's event stream and keeps the merged view, as the page does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.view: dict = {}
        self.events: list[tuple[str, dict]] = []
        self._cond = asyncio.Condition()

    async def __aenter__(self) -> SseReader:
        self.session = aiohttp.ClientSession()
        self.resp = await self.session.get(self.url + "api/stream")
        assert self.resp.status == 200 and self.resp.content_type == "text/event-stream"
        self.task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        self.resp.close()
        await self.session.close()

    async def _read(self) -> None:
        name, data = None, []
        async for raw in self.resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif not line and name:
                body = json.loads("\n".join(data))
                async with self._cond:
                    self._merge(name, body)
                    self.events.append((name, body))
                    self._cond.notify_all()
                name, data = None, []

    def _merge(self, name: str, body: dict) -> None:
        if name == "snapshot":
            self.view = body
            return
        if name != "update":
            return
        for key in ("vehicles", "orders"):
            for k, v in body.get(key, {}).items():
                if v is None:
                    self.view[key].pop(k, None)
                else:
                    self.view[key][k] = v
        for key in ("service", "feed"):
            if key in body:
                self.view[key] = body[key]
        self.view["events"] = self.view.get("events", []) + body.get("events", [])

    async def wait_for(self, predicate, timeout_s: float = 15.0):
        async def _wait():
            async with self._cond:
                while True:
                    if self.view:
                        try:
                            result = predicate(self.view)
                        except (KeyError, TypeError):
                            result = None
                        if result:
                            return result
                    await self._cond.wait()
        try:
            return await asyncio.wait_for(_wait(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"stream view never matched in {timeout_s} s; view keys "
                                 f"{sorted(self.view)}; vehicles {list(self.view.get('vehicles', {}))}; "
                                 f"service {self.view.get('service')}; feed {self.view.get('feed')}") from None


@contextlib.asynccontextmanager
async def running_dashboard(broker, network, **kw):
    """``serve()`` on loopback (a free port unless ``listen_port`` is given) as station-S01 of fleet
    ``test``; yields its URL. Other ``DashboardConfig`` fields may be overridden through ``kw``."""
    kw.setdefault("username", "station-S01")
    kw.setdefault("password", USERS[kw["username"]])
    kw.setdefault("listen_port", 0)
    config = DashboardConfig(host=broker.host, port=broker.port, fleet=broker.fleet, listen_host="127.0.0.1",
                             reconnect_min_s=0.1, reconnect_max_s=0.5, **kw)
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, network, ready=ready.set_result))
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        yield await ready
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def post_order(url: str, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "api/orders", json=body) as r:
            return r.status, await r.json()
