"""FlightController: fly one droneops mission at a time on one vehicle through MAVSDK.

The telemetry side (state, link watch, events, :meth:`~TelemetryFollower.wait_for`) is
:class:`~droneops.vehicles.telemetry.TelemetryFollower`; this module adds the connection and the
flight steps: preflight, upload + read-back, payload, arm + start, pause / resume / abort / land,
following a flight to landed and disarmed (:meth:`FlightController.fly`, :meth:`~FlightController.attach`,
:meth:`~FlightController.follow`) and waiting at stops. What it relies on in PX4 and MAVSDK is listed
in :mod:`droneops.vehicles.flight`.

Units: SI, durations are wall-clock seconds unless a name says otherwise; altitudes m AMSL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from droneops.core.mavlink import from_mavsdk_items, to_mavsdk_items
from droneops.core.mission import FlightMission, MissionItem, compare_items
from droneops.errors import UserError
from droneops.vehicles.flight_types import (
    DEFAULT_CONFIG,
    IN_AIR_STATES,
    FlightConfig,
    FlightError,
    FlightEvent,
    FlightReport,
    FollowOutcome,
    PreflightError,
)
from droneops.vehicles.payload import PAYLOAD_MASS_PARAM, has_payload_param, set_payload_mass
from droneops.vehicles.preflight import battery_energy_wh, node_at, preflight_problems
from droneops.vehicles.telemetry import TelemetryFollower

if TYPE_CHECKING:  # pragma: no cover
    from droneops.core.network import Network
    from droneops.core.vehicle import VehicleProfile
    from droneops.vehicles.link import MavlinkLinks


log = logging.getLogger(__name__)


class FlightController(TelemetryFollower):
    """One vehicle behind one MAVSDK connection.

    Use as ``async with FlightController(url, profile) as fc: await fc.fly(mission)``.
    ``connection_url`` is a MAVSDK URL (``udpin://0.0.0.0:14540`` for PX4 SITL,
    ``udpin://127.0.0.1:PORT`` for ``droneops sim``, ``serial:///dev/ttyUSB0:57600``...).
    ``on_event`` (optional) is called with every :class:`FlightEvent`; :meth:`events` is the
    same stream as an async iterator. :meth:`pause`, :meth:`resume` and :meth:`abort` may be
    called while :meth:`fly` runs (from another task).
    ``payload_param``: whether the vehicle declares the payload-mass parameter
    (:data:`~droneops.vehicles.payload.PAYLOAD_MASS_PARAM`) that the controller sets before every
    flight: True, False, or None = probe it once after connecting (:meth:`has_payload_param`).
    :attr:`busy` is True while :meth:`fly`, :meth:`attach` or :meth:`follow` holds the controller.
    ``system_id``: the vehicle's MAVLink system id on the connection (None: the first autopilot
    that answers, for a URL with one vehicle). ``links``: a shared
    :class:`~droneops.vehicles.link.MavlinkLinks` to take the vehicle's ``System`` from (many
    vehicles on one connection); :meth:`close` then releases only this controller's plugins.
    Without ``links`` the controller owns its MAVSDK instance.
    """

    def __init__(self, connection_url: str, profile: VehicleProfile,
                 config: FlightConfig = DEFAULT_CONFIG,
                 on_event: Callable[[FlightEvent], None] | None = None,
                 network: Network | None = None, payload_param: bool | None = None,
                 system_id: int | None = None, links: MavlinkLinks | None = None):
        super().__init__(config, on_event)
        self.url = connection_url
        self.system_id = system_id
        self.links = links
        self._own_links: MavlinkLinks | None = None
        self.profile = profile
        self.network = network
        self.payload_param = payload_param
        self._mavsdk: Any = None
        self._system: Any = None
        self._telemetry: Any = None
        self._action: Any = None
        self._mission_raw: Any = None
        self._mission: FlightMission | None = None
        self._abort: str | None = None
        self._restore_task: asyncio.Task | None = None
        self._payload_probe: asyncio.Task | None = None
        self._busy = asyncio.Lock()

    @property
    def busy(self) -> bool:
        """True while :meth:`fly`, :meth:`attach` or :meth:`follow` holds the controller."""
        return self._busy.locked()

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> FlightController:
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection, wait for the autopilot and start following its telemetry."""
        from mavsdk.asyncio.plugins.action import ActionAsync
        from mavsdk.asyncio.plugins.mission_raw import MissionRawAsync
        from mavsdk.asyncio.plugins.telemetry import TelemetryAsync

        system = await self._find_system()
        self._system = system
        self._telemetry = TelemetryAsync(system)
        self._action = ActionAsync(system)
        self._mission_raw = MissionRawAsync(system)
        self.state.connected = True
        self._mark_rx()
        t = self._telemetry
        self._follow(t.subscribe_position(), self._on_position)
        self._follow(t.subscribe_home(), self._on_home)
        self._follow(t.subscribe_battery(), self._on_battery)
        self._follow(t.subscribe_flight_mode(), self._on_flight_mode)
        self._follow(t.subscribe_landed_state(), self._on_landed_state)
        self._follow(t.subscribe_armed(), self._on_armed)
        self._follow(t.subscribe_in_air(), self._on_in_air)
        self._follow(t.subscribe_health(), self._on_health)
        self._follow(t.subscribe_status_text(), self._on_status_text)
        self._follow(self._mission_raw.subscribe_mission_progress(), self._on_progress)
        self._follow(system.is_connected_state(), self._on_connected)
        self._tasks.append(asyncio.create_task(self._watch_link(), name="droneops-link-watch"))
        if self.payload_param is None:   # probe in the background: PX4 answers a missing name by timing out
            self._payload_probe = asyncio.create_task(has_payload_param(system), name="droneops-payload-probe")
        self._emit("connected", url=self.url, system_id=await system.get_system_id())

    async def close(self) -> None:
        """Stop following telemetry and release MAVSDK (the vehicle keeps doing what it does)."""
        probe, self._payload_probe = self._payload_probe, None
        if probe is not None:   # not cancelled: its MAVSDK call runs on in a thread until it returns
            with contextlib.suppress(Exception):
                await asyncio.shield(probe)
        tasks, self._tasks = self._tasks, []
        if self._restore_task is not None:
            tasks.append(self._restore_task)
            self._restore_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # the tasks are being torn down: their end is not news
                pass
        for plugin in (self._mission_raw, self._action, self._telemetry):
            if plugin is not None:
                try:
                    plugin.destroy()
                except Exception:   # teardown goes on; the failure is logged, not raised
                    log.warning("releasing a MAVSDK plugin failed on %s", self.url, exc_info=True)
        self._mission_raw = self._action = self._telemetry = None
        self._system = None
        if self._mavsdk is not None:
            self._mavsdk.destroy()
            self._mavsdk = None
        own, self._own_links = self._own_links, None
        if own is not None:
            await own.close()
        self.state.connected = False
        for q in self._queues:
            q.put_nowait(None)


    async def _find_system(self) -> Any:
        """The vehicle's ``System``: from the shared links, or from a MAVSDK instance of our own
        (the first autopilot, or the given system id). Raises :class:`FlightError`."""
        from mavsdk.asyncio import ComponentType, Configuration, Mavsdk, MavsdkConnectionError

        from droneops.vehicles.link import LinkError, MavlinkLinks

        timeout_s = self.config.connect_timeout_s
        if self.links is None and self.system_id is None:   # one vehicle, one instance (droneops fly)
            self._mavsdk = Mavsdk(Configuration.create_with_component_type(ComponentType.GROUND_STATION))
            try:
                await self._mavsdk.add_any_connection(self.url)
            except MavsdkConnectionError as exc:
                await self.close()
                raise FlightError(f"cannot open connection {self.url!r}: {exc}") from None
            system = await self._mavsdk.first_autopilot(timeout_s=timeout_s)
            if system is None:
                await self.close()
                raise FlightError(f"no autopilot answered on {self.url} within "
                                  f"{timeout_s:g} s (is the vehicle/simulator running?)")
            return system
        links = self.links
        if links is None:
            links = self._own_links = MavlinkLinks()
        try:
            return await links.system(self.url, self.system_id, timeout_s)
        except LinkError as exc:
            await self.close()
            raise FlightError(f"{exc} (is the vehicle/simulator running?)") from None

    def _on_link_regained(self) -> None:
        if self._mission is not None and (self._restore_task is None or self._restore_task.done()):
            self._restore_task = asyncio.create_task(self._restore_progress())

    async def _restore_progress(self) -> None:
        """After the link returns: download the mission again (MAVSDK's progress totals are
        stale until then) and check the vehicle still holds ours."""
        from mavsdk.plugins.mission_raw import MissionRawError

        mission = self._mission
        for _ in range(5):
            try:
                items = await self._mission_raw.download_mission()
            except MissionRawError as exc:
                self._emit("status", phase="restore", detail=f"mission download failed: {exc.result.name}")
                await asyncio.sleep(0.5)
                continue
            if mission is not None:
                diffs = compare_items(mission.items, items)
                self._emit("status", phase="restored", same_mission=not diffs,
                           current=self.state.mission_current, total=len(items))
            return


    # -- flight steps ----------------------------------------------------------------------------

    async def preflight(self, mission: FlightMission, wait_home_s: float | None = None) -> None:
        """Raise :class:`PreflightError` unless the vehicle may take off for ``mission``.

        Waits up to ``wait_home_s`` (default ``home_settle_timeout_s``) for the checks to pass:
        PX4 moves home to the landing point about a second after disarming.
        """
        wait = self.config.home_settle_timeout_s if wait_home_s is None else wait_home_s
        try:
            await self.wait_for(lambda: not preflight_problems(mission, self.profile, self.state, self.config),
                                wait, "preflight checks")
        except FlightError:
            raise PreflightError(preflight_problems(mission, self.profile, self.state, self.config)) from None

    async def upload(self, mission: FlightMission) -> None:
        """Upload mission, geofence and rally points, read the mission back and compare."""
        from mavsdk.plugins.geofence import GeofenceError
        from mavsdk.plugins.mission_raw import MissionPlan, MissionRawError

        self._emit("status", phase="uploading", items=len(mission.items))
        t_upload = time.monotonic()
        raw = to_mavsdk_items(mission.items)
        try:
            async for _result, data in self._mission_raw.upload_mission_with_progress(MissionPlan(raw)):
                if math.isfinite(data.progress):
                    self._emit("upload", progress=float(data.progress))
            if mission.geofence_items:
                await self._mission_raw.upload_geofence(to_mavsdk_items(mission.geofence_items))
            else:
                await self._clear_geofence()
            if mission.rally_items:
                await self._mission_raw.upload_rally_points(to_mavsdk_items(mission.rally_items))
            back = await self._mission_raw.download_mission()
        except MissionRawError as exc:
            texts = await self._explanation(since=t_upload)
            more = f" (autopilot: {'; '.join(texts[-3:])})" if texts else ""
            raise FlightError(f"mission upload failed: {exc.result.name}{more}") from None
        except GeofenceError as exc:
            raise FlightError(f"clearing the old geofence failed: {exc.result.name}") from None
        diffs = compare_items(mission.items, back)
        if diffs:
            raise FlightError("mission read back from the vehicle differs: " + "; ".join(diffs[:3]))
        await self._verify_fence_and_rally(mission)
        self._mission = mission
        self._forget_progress()
        self._emit("status", phase="uploaded", items=len(back), geofence=len(mission.geofence_items),
                   rally=len(mission.rally_items))

    def _forget_progress(self) -> None:
        """A new mission is on the vehicle: progress seen so far belongs to the old one (and may
        have the same item count), so only progress reported from now on counts."""
        self.state.mission_current, self.state.mission_total = -1, 0

    async def upload_and_verify_mission(self, items: Sequence[MissionItem]) -> None:
        """Upload mission items only and compare the read-back (what the benchmark times)."""
        from mavsdk.plugins.mission_raw import MissionRawError

        try:
            await self._mission_raw.upload_mission(to_mavsdk_items(items))
            back = await self._mission_raw.download_mission()
        except MissionRawError as exc:
            raise FlightError(f"mission upload failed: {exc.result.name}") from None
        diffs = compare_items(items, back)
        if diffs:
            raise FlightError("mission read back differs: " + "; ".join(diffs[:3]))

    async def _clear_geofence(self) -> None:
        """No zones: make sure an old geofence does not stay on the vehicle (best effort)."""
        from mavsdk.asyncio.plugins.geofence import GeofenceAsync

        plugin = GeofenceAsync(self._system)
        try:
            await plugin.clear_geofence()
        except Exception as exc:  # an empty fence on the vehicle answers with an error too
            self._emit("status", phase="geofence", detail=f"clear: {exc}")
        finally:
            plugin.destroy()

    async def _verify_fence_and_rally(self, mission: FlightMission) -> None:
        from mavsdk.plugins.mission_raw import MissionRawError, MissionRawResult

        for what, sent, download in (("geofence", mission.geofence_items, self._mission_raw.download_geofence),
                                     ("rally points", mission.rally_items, self._mission_raw.download_rallypoints)):
            if not sent:
                continue
            try:
                back = await download()
            except MissionRawError as exc:
                if exc.result in (MissionRawResult.UNSUPPORTED,):
                    self._emit("status", phase="verify", detail=f"{what} read-back unsupported by the vehicle")
                    continue
                raise FlightError(f"{what} read-back failed: {exc.result.name}") from None
            diffs = compare_items(sent, back)
            if diffs:
                raise FlightError(f"{what} read back from the vehicle differ: " + "; ".join(diffs[:3]))

    async def _confirm_mode(self, wanted: str, what: str) -> None:
        try:
            await self.wait_for(lambda: self.state.flight_mode == wanted, self.config.mode_confirm_timeout_s,
                                f"flight mode {wanted}")
        except FlightError:
            texts = self.recent_status_texts()
            why = f": {'; '.join(texts[-3:])}" if texts else ""
            raise FlightError(f"{what}: the vehicle stayed in {self.state.flight_mode} "
                              f"(PX4 refused the switch to {wanted}){why}") from None

    async def start(self) -> None:
        """Arm, then start the mission at once (the order PX4 accepts); confirm both from telemetry."""
        from mavsdk.plugins.action import ActionError
        from mavsdk.plugins.mission_raw import MissionRawError

        self._emit("status", phase="arming")
        t_arm = time.monotonic()
        try:
            await self._action.arm()
            await self._mission_raw.start_mission()
        except ActionError as exc:
            texts = await self._explanation(since=t_arm)
            raise FlightError(f"arming refused: {exc.result.name}"
                              + (f" ({'; '.join(texts[-3:])})" if texts else "")) from None
        except MissionRawError as exc:
            raise FlightError(f"start mission failed: {exc.result.name}") from None
        try:
            await self.wait_for(lambda: self.state.armed is True, self.config.mode_confirm_timeout_s, "arming")
            await self._confirm_mode("MISSION", "mission start refused")
        except FlightError:
            await self._disarm_if_on_ground()
            raise
        self._emit("status", phase="started")

    async def has_payload_param(self) -> bool:
        """Whether the vehicle declares the payload-mass parameter: the ``payload_param`` option,
        else the probe started at :meth:`connect` (the answer is kept)."""
        if self.payload_param is None:
            probe = self._payload_probe
            found = False
            if probe is not None:
                try:
                    found = await asyncio.shield(probe)
                except Exception as exc:  # noqa: BLE001 - a failed probe reads "no parameter", said in an event
                    self._emit("status", phase="payload_param", detail=f"payload parameter probe failed: {exc}")
            if not found:
                self._emit("status", phase="payload_param", detail=f"no {PAYLOAD_MASS_PARAM} parameter: "
                           "the vehicle carries its real payload")
            self.payload_param = found
        return self.payload_param

    async def load_payload(self, payload_kg: float) -> None:
        """Tell the vehicle it carries ``payload_kg`` (kg) on the next flight, if it declares the
        payload-mass parameter (:mod:`droneops.vehicles.payload`); else nothing (a real parcel)."""
        if not await self.has_payload_param():
            return
        error = await set_payload_mass(self._system, payload_kg)
        if error is not None:
            raise FlightError(f"setting the vehicle's payload parameter {PAYLOAD_MASS_PARAM} failed: {error}")
        self._emit("status", phase="payload", payload_kg=float(payload_kg))

    async def _disarm_if_on_ground(self) -> None:
        if self.state.armed and not self.state.in_air:
            try:
                await self._action.disarm()
            except Exception:  # noqa: BLE001 - best effort: the caller raises the real error
                pass

    async def pause(self) -> None:
        """Hold position (PX4 HOLD mode); confirmed from telemetry."""
        await self._mission_raw.pause_mission()
        await self._confirm_mode("HOLD", "pause refused")
        self._emit("status", phase="paused")

    async def resume(self) -> None:
        """Continue the mission from where it paused (PX4 MISSION mode); confirmed."""
        await self._mission_raw.start_mission()
        await self._confirm_mode("MISSION", "resume refused")
        self._emit("status", phase="resumed")

    async def abort(self, how: str = "rtl") -> str:
        """Abandon the flight. ``how``: ``"rtl"`` (PX4 return to launch) or ``"station"`` (fly
        along corridors to the nearest recharge node the battery reaches and land there: a new
        mission, needs ``network``). Returns the node id landed at for ``station``, else "home".
        The running :meth:`fly` ends with result ``aborted`` once landed and disarmed.
        """
        if how not in ("rtl", "station"):
            raise UserError(f"abort must be 'rtl' or 'station', not {how!r}")
        self._abort = how
        self._emit("status", phase="aborting", how=how)
        if how == "rtl":
            await self._action.return_to_launch()
            await self._confirm_mode("RETURN_TO_LAUNCH", "return to launch refused")
            return "home"
        if self.network is None:
            raise FlightError("abort to a station needs the network (FlightController(network=...))")
        from droneops.core.mission import divert_mission

        await self.pause()
        s = self.state
        payload = self._mission.payload_kg if self._mission is not None else 0.0
        battery = None if math.isnan(s.battery_pct) else battery_energy_wh(self.profile, s.battery_pct)
        divert = divert_mission(self.network, self.profile, s.lat_deg, s.lon_deg, s.abs_alt_m, payload,
                                battery_wh=battery)
        self._emit("status", phase="diverting", to=divert.to_id, items=len(divert.items))
        from mavsdk.plugins.mission_raw import MissionRawError

        try:
            await self._mission_raw.upload_mission(to_mavsdk_items(divert.items))
            back = await self._mission_raw.download_mission()
        except MissionRawError as exc:
            raise FlightError(f"divert mission upload failed: {exc.result.name}") from None
        diffs = compare_items(divert.items, back)
        if diffs:
            raise FlightError("divert mission read back differs: " + "; ".join(diffs[:3]))
        self._mission = divert
        self._forget_progress()
        await self._mission_raw.start_mission()
        await self._confirm_mode("MISSION", "divert mission start refused")
        return divert.to_id

    async def land(self) -> None:
        """Land where the vehicle is now (PX4 LAND), confirmed from telemetry: flight mode LAND
        or landed state ON_GROUND within ``mode_confirm_timeout_s``. A flight being followed then
        ends ``aborted`` (landed before its last item). Raises :class:`FlightError` on refusal
        or timeout, with the autopilot's explanation when it sent one."""
        from mavsdk.plugins.action import ActionError

        self._emit("status", phase="landing")
        t_land = time.monotonic()
        try:
            await self._action.land()
        except ActionError as exc:
            texts = await self._explanation(since=t_land)
            raise FlightError(f"land refused: {exc.result.name}"
                              + (f" ({'; '.join(texts[-3:])})" if texts else "")) from None
        s = self.state
        try:
            await self.wait_for(lambda: s.flight_mode == "LAND" or s.landed_state == "ON_GROUND",
                                self.config.mode_confirm_timeout_s, "flight mode LAND")
        except FlightError:
            texts = self.recent_status_texts()
            why = f": {'; '.join(texts[-3:])}" if texts else ""
            raise FlightError(f"land refused: the vehicle stayed in {s.flight_mode} "
                              f"(landed state {s.landed_state}){why}") from None
        self._emit("status", phase="landing_confirmed", mode=s.flight_mode)

    # -- the whole flight ------------------------------------------------------------------------

    def _flight_timeout_s(self, mission: FlightMission) -> float:
        if self.config.flight_timeout_s is not None:
            return self.config.flight_timeout_s
        return mission.planned_duration_s * self.config.flight_timeout_factor + self.config.flight_timeout_margin_s

    async def fly(self, mission: FlightMission, index: int = 0, preflight: bool = True) -> FlightReport:
        """Preflight, upload, arm + start, follow the flight until landed and disarmed.

        Returns the :class:`FlightReport`; raises :class:`PreflightError` (nothing was sent to
        fly) or :class:`FlightError` when the flight could not start or was lost.
        """
        return await self._run(mission, index, preflight=preflight, attach=False)

    async def attach(self, mission: FlightMission, index: int = 0) -> FlightReport:
        """Follow a flight that is already under way (e.g. after the ground station restarted):
        download the vehicle's mission (which also restores MAVSDK's progress totals), check it
        is ``mission``, then follow it like :meth:`fly` until landed and disarmed. The report's
        energy covers only what was seen after attaching. Raises :class:`FlightError` if the
        vehicle holds another mission."""
        return await self._run(mission, index, preflight=False, attach=True)

    async def follow(self, mission: FlightMission, index: int = 0) -> FollowOutcome:
        """Take the controller and supervise a flight ALREADY under way with ``mission`` until
        landed and disarmed. Nothing is downloaded or compared (the caller did that, e.g. with
        :meth:`download_mission`); :meth:`abort` / :meth:`land` work meanwhile. Returns the
        :class:`FollowOutcome` (``landed_id``: the mission's ``to_id``, or a divert's); raises
        :class:`FlightError` like :meth:`fly` when the flight is lost or never ends."""
        async with self._busy:
            self._flight_index = index
            self._abort = None
            self._mission = mission
            try:
                result, message, _ = await self._follow_flight(mission, time.monotonic())
            finally:
                self._flight_index = -1
            landed = self._mission.to_id if self._mission is not None else mission.to_id
            return FollowOutcome(result, message, landed)

    async def download_mission(self) -> list[MissionItem]:
        """The mission items the vehicle holds now (PX4 reports frame 0 as 5)."""
        from mavsdk.plugins.mission_raw import MissionRawError

        try:
            raw = await self._mission_raw.download_mission()
        except MissionRawError as exc:
            raise FlightError(f"mission download failed: {exc.result.name}") from None
        return from_mavsdk_items(raw)

    async def _run(self, mission: FlightMission, index: int, preflight: bool, attach: bool) -> FlightReport:
        async with self._busy:
            self._flight_index = index
            self._abort = None
            self._link_losses = 0
            report = FlightReport(index=index, from_id=mission.from_id, to_id=mission.to_id,
                                  planned_energy_wh=mission.planned_energy_wh,
                                  planned_duration_s=mission.planned_duration_s, items=len(mission.items))
            try:
                if attach:
                    diffs = compare_items(mission.items, await self.download_mission())
                    if diffs:
                        raise FlightError("the vehicle flies another mission: " + "; ".join(diffs[:3]))
                    self._mission = mission
                    self._emit("status", phase="attached", current=self.state.mission_current)
                else:
                    if preflight:
                        await self.preflight(mission)
                    await self.upload(mission)
                start_pct = self.state.battery_pct
                report.battery_start_pct = None if math.isnan(start_pct) else start_pct
                if not attach:
                    await self.load_payload(mission.payload_kg)
                t0 = time.monotonic()
                if not attach:
                    await self.start()
                result, message, min_pct = await self._follow_flight(mission, t0)
                report.duration_s = time.monotonic() - t0
                report.result, report.message = result, message
                if report.battery_start_pct is not None and min_pct is not None:
                    report.battery_end_pct = min_pct
                    report.used_energy_wh = ((report.battery_start_pct - min_pct) / 100.0
                                             * self.profile.battery_capacity_wh)
                report.landed_node = self._mission.to_id if self._mission is not None else None
                if result == "aborted":
                    # RTL/failsafe: PX4 lands at the closest of home and the rally points (stations).
                    report.landed_node = self._node_here(mission)
                    if report.landed_node is not None and f"at {report.landed_node}" not in message:
                        report.message = f"{message} at {report.landed_node}"
                report.link_losses = self._link_losses
                self._emit(result, **report.to_json())
                return report
            except FlightError as exc:
                report.result, report.message = "failed", str(exc)
                report.link_losses = self._link_losses
                exc.report = report  # type: ignore[attr-defined]
                self._emit("failed", **report.to_json())
                raise
            finally:
                self._flight_index = -1

    def _node_here(self, mission: FlightMission) -> str | None:
        return node_at(self.state, mission, self._mission or mission, self.network, self.config.home_tolerance_m)

    async def _follow_flight(self, mission: FlightMission, t0: float) -> tuple[str, str, float | None]:
        """Follow telemetry until landed and disarmed; returns (result, message, lowest battery %)."""
        s = self.state
        timeout = self._flight_timeout_s(mission)
        airborne = False
        last_item_seen = False
        min_pct: float | None = None
        disarmed_since: float | None = None
        following = self._mission
        while True:
            self._changed.clear()
            now = time.monotonic()
            current = self._mission
            if current is not following:          # a divert mission replaced the flight's mission
                following, last_item_seen = current, False
            n = len(current.items) if current is not None else 0
            if not math.isnan(s.battery_pct) and s.armed:
                min_pct = s.battery_pct if min_pct is None else min(min_pct, s.battery_pct)
            if s.in_air or s.landed_state in IN_AIR_STATES:
                airborne = True
            if s.mission_total == n and n and s.mission_current >= n - 1:
                last_item_seen = True
            landed_disarmed = s.link_ok and s.armed is False and s.landed_state == "ON_GROUND" and not s.in_air
            disarmed_since = (disarmed_since or now) if landed_disarmed else None
            if disarmed_since is not None:
                verdict = self._landed_verdict(current, n, airborne, last_item_seen, now - disarmed_since, now - t0)
                if verdict is not None:
                    return verdict[0], verdict[1], min_pct
            if now - t0 > timeout:
                raise FlightError(f"flight not finished after {timeout:.0f} s (mode {s.flight_mode}, "
                                  f"item {s.mission_current}/{s.mission_total}, landed state {s.landed_state}, "
                                  f"link {'ok' if s.link_ok else 'lost'}); the vehicle is still flying its mission")
            try:
                await asyncio.wait_for(self._changed.wait(), 0.25)
            except asyncio.TimeoutError:
                pass

    def _landed_verdict(self, current: FlightMission | None, n: int, airborne: bool, last_item_seen: bool,
                        disarmed_s: float, elapsed_s: float) -> tuple[str, str] | None:
        """Landed and disarmed for ``disarmed_s``: (result, message) if the flight is over, None
        to keep watching (a restore is running, or the landing has not settled yet); raises
        :class:`FlightError` when the vehicle disarmed without ever taking off."""
        s = self.state
        settle_s = self.config.link_timeout_s
        to_id = current.to_id if current is not None else "?"
        if self._abort == "rtl" and airborne:
            return "aborted", "returned to launch and landed"
        if last_item_seen:
            if self._abort == "station":
                return "aborted", f"diverted and landed at {to_id}"
            return "completed", f"landed at {to_id}"
        restoring = (self._restore_task is not None and not self._restore_task.done()) or (
            time.monotonic() - self._link_regained_at < settle_s)
        if airborne and not restoring:
            # Landed before the last item: a failsafe (RTL/land) or someone else's command.
            if disarmed_s >= settle_s:
                texts = self.recent_status_texts(120.0)
                why = f" ({'; '.join(texts[-3:])})" if texts else ""
                return "aborted", f"landed early at item {s.mission_current}/{n} in mode {s.flight_mode}{why}"
        elif elapsed_s > self.config.mode_confirm_timeout_s and disarmed_s >= settle_s:
            texts = self.recent_status_texts(60.0)
            why = f": {'; '.join(texts[-3:])}" if texts else ""
            raise FlightError(f"vehicle disarmed without taking off{why}")
        return None
