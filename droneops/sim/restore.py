"""Restoring MAVSDK's mission plugin after an upload the simulated vehicle refused.

MissionRawServer stores every upload, even one the vehicle refuses, and answers downloads from
that copy. After a refusal the vehicle keeps flying its previous items; :class:`RestoreMixin`
(part of :class:`~droneops.sim.server.SimVehicle`) uploads them back into the plugin through a
short-lived in-process ground station, so that a download returns what the vehicle flies, as on
PX4. From the refusing MISSION_ACK until the restore is done, transfers from other ground
stations are held off (dropped at the interception: their MAVSDK retries them), so a download
right after a refused upload never sees the refused items.
"""

from __future__ import annotations

import asyncio
import contextlib

from mavsdk.asyncio import Configuration, Mavsdk

from droneops.core import mavlink as mav
from droneops.core.mavlink import to_mavsdk_items
from droneops.sim.intercept import RESTORE_SYSTEM_ID
from droneops.sim.model import SimItem
from droneops.sim.publish import SimLink, log

RESTORE_TIMEOUT_S = 5.0
RESTORE_DRAIN_S = 0.2


def _pass_bytes(mavsdk, data: bytes) -> None:
    """Feed bytes into a ``raw://`` connection unless that instance is gone already."""
    if mavsdk._handle:  # noqa: SLF001 - MAVSDK 4.1 has no public "destroyed" flag
        mavsdk.pass_received_raw_bytes(data)



def _core(mavsdk):
    """The synchronous MAVSDK core under a ``mavsdk.asyncio.Mavsdk``: its raw-bytes calls
    (``raw://`` connections) are not wrapped by the asyncio binding of MAVSDK 4.1."""
    return mavsdk._mavsdk  # noqa: SLF001 - raw-bytes API only on the core object (pinned mavsdk 4.1)


class RestoreMixin(SimLink):
    """The plugin restore of :class:`~droneops.sim.server.SimVehicle` (see the module docstring)."""

    _restore_task: asyncio.Task | None
    restore_delay_s: float

    def _model_items(self, mission_type: int) -> tuple[SimItem, ...]:
        m = self.model
        return {mav.MAV_MISSION_TYPE_MISSION: m.mission, mav.MAV_MISSION_TYPE_FENCE: m.fence,
                mav.MAV_MISSION_TYPE_RALLY: m.rally}[mission_type]

    def _schedule_restore(self) -> None:
        if self._restore_task is None or self._restore_task.done():
            self._restore_task = asyncio.create_task(self._restore_plugin(), name=f"{self.name}-restore")
            self._tasks.append(self._restore_task)

    async def _restore_plugin(self) -> None:
        """Upload the vehicle's current (accepted) items back into MissionRawServer.

        MissionRawServer stores every upload, even one the vehicle refuses, and answers
        downloads from that copy. A short-lived in-process ground station (system id
        :data:`RESTORE_SYSTEM_ID`) linked to the vehicle through MAVSDK ``raw://`` connections
        (no socket) uploads the previous items again and restores the current item, so that a
        download returns what the vehicle flies, as on PX4. Meanwhile transfers from other
        ground stations are held off (dropped; their MAVSDK retries them): from the refusing
        MISSION_ACK on (:attr:`_hold_transfers_until`, set by the interception) until this ends.
        """
        from mavsdk.asyncio.plugins.mission_raw import MissionRawAsync

        if self._mavsdk is None:
            return
        if self.restore_delay_s > 0:   # a slow vehicle (tests widen the race window with it)
            await asyncio.sleep(self.restore_delay_s)
        self._restoring = True
        helper = None
        vehicle_raw = subscriptions = None
        try:
            # a ground station that stays silent until it has seen the vehicle
            helper = Mavsdk(Configuration.create_manual(RESTORE_SYSTEM_ID, mav.MAV_COMP_ID_MISSIONPLANNER, False))
            vehicle, ground = _core(self._mavsdk), _core(helper)
            # Hand the bytes over on the event loop: calling one instance from the other's send
            # callback deadlocks (each holds its own lock while sending). The helper's reader is
            # subscribed before its link exists (MAVSDK warns) because it sends at once.
            vehicle_raw = await self._mavsdk.add_any_connection("raw://")
            subscriptions = (
                vehicle.subscribe_raw_bytes_to_be_sent(lambda b: self._call_soon(_pass_bytes, ground, b)),
                ground.subscribe_raw_bytes_to_be_sent(lambda b: self._call_soon(_pass_bytes, vehicle, b)))
            await helper.add_any_connection("raw://")
            self._send_heartbeat()
            system = await helper.first_autopilot(RESTORE_TIMEOUT_S)
            if system is None:
                raise TimeoutError("the restoring ground station did not see the vehicle")
            client = MissionRawAsync(system)
            for mission_type in (mav.MAV_MISSION_TYPE_MISSION, mav.MAV_MISSION_TYPE_FENCE, mav.MAV_MISSION_TYPE_RALLY):
                items = self._model_items(mission_type)
                if self._plugin_items[mission_type] == items:
                    continue
                raw_items = to_mavsdk_items(items)
                if mission_type == mav.MAV_MISSION_TYPE_MISSION:
                    if raw_items:
                        await client.upload_mission(raw_items)
                        if 0 < self.model.current_seq < len(raw_items):
                            await client.set_current_mission_item(self.model.current_seq)
                    else:
                        await client.clear_mission()
                elif raw_items:
                    upload = client.upload_geofence if mission_type == mav.MAV_MISSION_TYPE_FENCE \
                        else client.upload_rally_points
                    await upload(raw_items)
                self._plugin_items[mission_type] = items
        except Exception as exc:  # noqa: BLE001 - the vehicle flies on; only downloads are affected
            log.warning("%s: could not restore the mission plugin's copy: %s", self.name, exc)
        finally:
            if helper is not None:
                helper.destroy()            # silence the helper first ...
            if vehicle_raw is not None and self._mavsdk is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(RESTORE_DRAIN_S)   # ... let replies already queued go out ...
                if self._mavsdk is not None:
                    await self._mavsdk.remove_connection(vehicle_raw)   # ... then cut the link
            if subscriptions is not None and self._mavsdk is not None:
                _core(self._mavsdk).unsubscribe_raw_bytes_to_be_sent(subscriptions[0])
            self._restoring = False
            self._hold_transfers_until = 0.0   # downloads now get the restored items
