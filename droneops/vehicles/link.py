"""Shared MAVLink links: one MAVSDK ground station per connection URL, many vehicles on each.

MAVSDK 4.1's native binding sees every autopilot that talks on one connection and keys them by
MAVLink system id, so a fleet does not need a ``Mavsdk`` instance per vehicle: all PX4 SITL
instances' ground-station links on one UDP port, a fleet behind a MAVLink router, or
``droneops sim --shared-port`` reach ONE connection. :class:`MavlinkLinks` keeps one ``Mavsdk``
(ground station) per URL and hands out each vehicle's ``System`` by system id; the flight
controller creates its plugins (telemetry, action, mission) on that ``System``.

The limits (MAVSDK 4.1, MAVLink 2):

* system ids are 8-bit, 1..254 usable (0 is broadcast, 255 is left to ground stations by
  convention), and the ground station takes one for itself (:data:`GCS_SYSTEM_ID`, 245 by
  default in MAVSDK): at most 253 vehicles per link;
* every ``Mavsdk`` instance checks out one of MAVLink's ``MAVLINK_COMM_NUM_BUFFERS`` = 16 channel
  slots, and instances past 16 in one process corrupt memory (see
  :data:`droneops.sim.server.MAX_VEHICLES_PER_PROCESS`): at most :data:`MAX_LINKS_PER_PROCESS`
  links, so at most 16 x 253 vehicles per process; in practice the CPU bounds it long before
  (docs/fleet.md, "Connecting a large fleet").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from droneops.errors import UserError

log = logging.getLogger(__name__)

GCS_SYSTEM_ID = 245
"""MAVLink system id of MAVSDK's ground station (its default for ``ComponentType.GROUND_STATION``)."""
MIN_SYSTEM_ID, MAX_SYSTEM_ID = 1, 254
"""Vehicle system ids a link accepts (0 is MAVLink broadcast, 255 ground stations)."""
MAX_LINKS_PER_PROCESS = 16
"""``Mavsdk`` instances (so connection URLs) one process may hold: MAVSDK 4.1 has 16 MAVLink channels."""
MAX_SYSTEMS_PER_LINK = MAX_SYSTEM_ID - MIN_SYSTEM_ID + 1 - 1
"""Vehicles one link carries at most: system ids 1..254 minus the ground station's own (253)."""


class LinkError(Exception):
    """A link could not be opened, or a system did not appear on it in time."""


def system_id_problem(system_id: int, gcs_system_id: int = GCS_SYSTEM_ID) -> str | None:
    """Why ``system_id`` cannot be a vehicle's on a link (a sentence), or None if it can."""
    if isinstance(system_id, bool) or not isinstance(system_id, int):
        return f"system id must be an integer, got {system_id!r}"
    if not MIN_SYSTEM_ID <= system_id <= MAX_SYSTEM_ID:
        return f"system id {system_id} is outside {MIN_SYSTEM_ID}..{MAX_SYSTEM_ID}"
    if system_id == gcs_system_id:
        return f"system id {system_id} is the ground station's own (MAVSDK's GCS uses {gcs_system_id})"
    return None


@dataclass
class _Link:
    """One connection URL: its ``Mavsdk``, the systems seen so far (by id) and two flags:
    ``dirty`` (MAVSDK reported a new system) and ``changed`` (the index grew)."""

    url: str
    mavsdk: Any = None
    systems: dict[int, Any] = field(default_factory=dict)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task] = field(default_factory=list)


class MavlinkLinks:
    """A registry of shared MAVLink links: one ``Mavsdk`` ground station per connection URL.

    ``await links.system(url, system_id, timeout_s)`` opens ``url`` on first use and waits for the
    autopilot with that MAVLink system id (None: the first autopilot seen on the link, for a
    one-vehicle URL); ``await links.close()`` destroys every instance. ``gcs_system_id`` is the
    ground station's own id (vehicles may not use it).
    """

    def __init__(self, gcs_system_id: int = GCS_SYSTEM_ID) -> None:
        self.gcs_system_id = gcs_system_id
        self._links: dict[str, _Link] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._closed = False

    @property
    def urls(self) -> list[str]:
        """The connection URLs open now."""
        return list(self._links)

    def systems_seen(self, url: str) -> list[int]:
        """System ids seen on ``url`` so far (sorted; empty if the link is not open)."""
        link = self._links.get(url)
        return sorted(link.systems) if link is not None else []

    async def system(self, url: str, system_id: int | None, timeout_s: float) -> Any:
        """The ``mavsdk.asyncio.System`` of ``system_id`` on ``url`` (opened on first use).

        Raises :class:`UserError` for an id a link cannot carry and :class:`LinkError` when the
        URL cannot be opened or the system does not answer within ``timeout_s`` seconds.
        """
        if system_id is not None:
            problem = system_id_problem(system_id, self.gcs_system_id)
            if problem is not None:
                raise UserError(f"{url}: {problem}")
        link = await self._open(url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            found = await self._find(link, system_id)
            if found is not None:
                return found
            link.changed.clear()
            left = deadline - loop.time()
            if left <= 0 or self._closed:
                who = f"system id {system_id}" if system_id is not None else "no autopilot"
                seen = ", ".join(str(i) for i in sorted(link.systems)) or "none"
                raise LinkError(f"{who} {'did not answer' if system_id is not None else 'answered'} on {url} "
                                f"within {timeout_s:g} s (systems seen there: {seen})")
            # None: a system may declare its autopilot after it appeared; look again now and then
            wait_s = left if system_id is not None else min(left, 0.5)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(link.changed.wait(), wait_s)

    @staticmethod
    async def _find(link: _Link, system_id: int | None) -> Any:
        if system_id is not None:
            return link.systems.get(system_id)
        for sid in sorted(link.systems):
            if await link.systems[sid].has_autopilot():
                return link.systems[sid]
        return None

    async def _open(self, url: str) -> _Link:
        if self._closed:
            raise LinkError("the links are closed")
        lock = self._opening.setdefault(url, asyncio.Lock())
        async with lock:
            link = self._links.get(url)
            if link is not None:
                return link
            if len(self._links) >= MAX_LINKS_PER_PROCESS:
                raise UserError(f"cannot open {url}: one process holds at most {MAX_LINKS_PER_PROCESS} MAVLink "
                                f"connections (MAVSDK 4.1 has 16 channels); share URLs between vehicles "
                                "(distinct system ids) or use a MAVLink router")
            from mavsdk.asyncio import ComponentType, Configuration, Mavsdk, MavsdkConnectionError

            config = Configuration.create_with_component_type(ComponentType.GROUND_STATION)
            link = _Link(url, Mavsdk(config))
            try:
                await link.mavsdk.add_any_connection(url)
            except MavsdkConnectionError as exc:
                link.mavsdk.destroy()
                raise LinkError(f"cannot open connection {url!r}: {exc}") from None
            link.tasks.append(asyncio.create_task(self._watch_new(link), name=f"link-new-{url}"))
            link.tasks.append(asyncio.create_task(self._collect(link), name=f"link-collect-{url}"))
            self._links[url] = link
            log.info("MAVLink link %s open", url)
            return link

    @staticmethod
    async def _watch_new(link: _Link) -> None:
        """MAVSDK's new-system callbacks -> the ``dirty`` flag the collector coalesces."""
        link.dirty.set()   # systems that came before the subscription
        async for _ in link.mavsdk.on_new_system():
            link.dirty.set()

    @staticmethod
    async def _collect(link: _Link) -> None:
        """Index new systems by id; one ``get_systems`` call covers every discovery since the last
        (400 systems appearing at once cost a few calls, not 400)."""
        while True:
            await link.dirty.wait()
            link.dirty.clear()
            added = False
            for system in await link.mavsdk.get_systems():
                sid = await system.get_system_id()
                if sid not in link.systems and sid != 0:
                    link.systems[sid] = system
                    added = True
                # else the fresh wrapper is dropped: it only held one more reference to the system
            if added:
                link.changed.set()

    async def close(self) -> None:
        """Destroy every ``Mavsdk`` instance (controllers must have released their plugins)."""
        self._closed = True
        links, self._links = list(self._links.values()), {}
        for link in links:
            for task in link.tasks:
                task.cancel()
            for task in link.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            link.changed.set()
            link.systems.clear()
            link.mavsdk.destroy()
