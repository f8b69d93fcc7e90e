"""Mission execution of the simulated vehicle: the items PX4 flies, one step at a time.

:class:`MissionRunner` runs the current item of the uploaded mission: NAV_TAKEOFF, NAV_WAYPOINT
(param1 hold s, param2 acceptance radius m), NAV_LOITER_UNLIM / _TIME / _TO_ALT,
NAV_RETURN_TO_LAUNCH, NAV_LAND (reached when overhead, before the descent, as on PX4),
NAV_DELAY (param1 s), DO_CHANGE_SPEED (param2 m/s) and DO_GRIPPER (param2 0 = release: the
payload drops); other accepted DO_ items are skipped at once. Motion comes from
:class:`~droneops.sim.kinematics.Kinematics`. Times are simulated seconds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from droneops.core import mavlink as mav
from droneops.sim.kinematics import Kinematics
from droneops.sim.state import FlightMode, ItemReached, LandedState, Release

if TYPE_CHECKING:  # pragma: no cover
    from droneops.sim.items import SimItem


class MissionRunner(Kinematics):
    """The mission half of :class:`~droneops.sim.model.VehicleModel` (see the module docstring)."""

    releases: list[Release]
    _item_seq_started: int | None
    _item_hold_until: float | None

    def _mission_problem(self) -> str | None:
        if not self.mission:
            return "Switching to Mission is currently not available"
        for item in self.mission:
            if item.command in mav.PX4_POSITION_COMMANDS and item.has_latlon:
                e, n = self.plane.to_en(item.lat_deg, item.lon_deg)
                if self._fence_violation(e, n):
                    return f"Geofence violation for waypoint {item.seq + 1}"
        return None

    def _activate_mission(self) -> None:
        """MISSION engaged while armed: (re)start the current item."""
        if self.mission_finished and self.landed == LandedState.ON_GROUND:
            self.current_seq = 0     # PX4 resets a finished mission when started on the ground
            self.mission_finished = False
        self._reset_item()
        if self.mission_finished and self.mission[-1].command == mav.MAV_CMD_NAV_LAND and self.in_air:
            self._item_phase = "descend"  # resumed during the final landing: land
        self._hold_target = None

    def _reset_item(self) -> None:
        self._item_seq_started = None
        self._item_phase = ""
        self._item_hold_until = None


    def _item_target(self, item: SimItem) -> tuple[float, float, float]:
        """Target (east, north, alt AMSL) of a positional item; missing parts keep the current."""
        if item.has_latlon:
            e, n = self.plane.to_en(item.lat_deg, item.lon_deg)
        else:
            e, n = self.east_m, self.north_m
        if item.frame in mav.RELATIVE_FRAMES:
            alt = self.home.alt_m + item.z
        elif item.frame in mav.GLOBAL_FRAMES:
            alt = item.z
        else:
            alt = self.alt_m
        return e, n, alt

    def _complete_item(self) -> None:
        seq = self.current_seq
        self._events.append(ItemReached(seq))
        self._reset_item()
        if seq + 1 < len(self.mission):
            self.current_seq = seq + 1
        else:
            self.mission_finished = True

    def _run_mission(self, dt: float) -> None:
        if not self.mission:
            self._run_hold(dt)
            return
        if self._land_disarm_at is not None:  # touched down: wait for the land detector
            self._land(dt)
            return
        for _ in range(len(self.mission) + 1):  # instantaneous items complete in one step
            if self.mission_finished:
                self._after_mission(dt)
                return
            item = self.mission[self.current_seq]
            started = self._item_seq_started == self.current_seq
            self._item_seq_started = self.current_seq
            if not self._execute(item, started, dt):
                return

    def _after_mission(self, dt: float) -> None:
        """Mission over: finish a landing in progress, else hold at the last position."""
        if self._item_phase == "descend" or self.landed == LandedState.LANDING:
            self._land(dt)
        elif self.landed != LandedState.ON_GROUND:
            self._run_hold(dt)

    def _execute(self, item: SimItem, started: bool, dt: float) -> bool:
        """Run one step of ``item``; return True if it completed instantly (go on to the next)."""
        cmd = item.command
        if cmd == mav.MAV_CMD_NAV_TAKEOFF:
            _, _, alt = self._item_target(item)
            if self._climb_to(alt, dt):
                self.landed = LandedState.IN_AIR
                self._complete_item()
            return False
        if cmd in (mav.MAV_CMD_NAV_WAYPOINT, mav.MAV_CMD_NAV_LOITER_TIME, mav.MAV_CMD_NAV_LOITER_UNLIM,
                   mav.MAV_CMD_NAV_LOITER_TO_ALT):
            self._execute_waypoint(item, dt)
            return False
        if cmd == mav.MAV_CMD_NAV_LAND:
            self._execute_land(item, dt)
            return False
        if cmd == mav.MAV_CMD_NAV_DELAY:
            self._execute_delay(item, started, dt)
            return False
        if cmd == mav.MAV_CMD_NAV_RETURN_TO_LAUNCH:
            self._complete_item()
            self.mode = FlightMode.RETURN_TO_LAUNCH
            self._start_rtl()
            return False
        if cmd == mav.MAV_CMD_DO_CHANGE_SPEED:
            if item.param2 > 0:
                self.mission_speed_mps = min(item.param2, self.profile.max_speed_mps)
        elif cmd == mav.MAV_CMD_DO_GRIPPER:
            if int(item.param2) == 0 and self.payload_kg > 0:
                lat, lon = self.lat_lon_deg
                self.releases.append(Release(item.seq, self.t_s, lat, lon, self.alt_m, self.payload_kg))
                self.payload_kg = 0.0
        self._complete_item()  # DO_ items (and other accepted commands): done at once
        return True

    def _execute_waypoint(self, item: SimItem, dt: float) -> None:
        """WAYPOINT / LOITER_*: fly there (climbing first from the ground), then hold param1 s."""
        cmd = item.command
        if self.landed in (LandedState.ON_GROUND, LandedState.TAKING_OFF):
            # PX4 without a take-off item: climb vertically first, then fly to the item
            _, _, alt = self._item_target(item)
            if self._climb_to(max(alt, self._alt_above_ground(self.config.takeoff_alt_m)), dt):
                self.landed = LandedState.IN_AIR
            return
        if self._item_phase != "hold":
            e, n, alt = self._item_target(item)
            if not self._reached(e, n, alt, item, dt):
                return
            self._item_phase = "hold"
            hold = item.param1 if cmd in (mav.MAV_CMD_NAV_WAYPOINT, mav.MAV_CMD_NAV_LOITER_TIME) else math.inf
            self._item_hold_until = self.t_s + max(hold, 0.0)
            self._hold_target = (self.east_m, self.north_m, self.alt_m)
        self._run_hold(dt)
        if self._item_hold_until is not None and self.t_s >= self._item_hold_until - 1e-9:
            self._complete_item()

    def _execute_land(self, item: SimItem, dt: float) -> None:
        """NAV_LAND: fly over the point, then descend; the last item is "reached" when overhead."""
        if self._item_phase != "descend":
            if self.landed == LandedState.ON_GROUND:
                self._item_phase = "descend"
                self._complete_item()
                return
            e, n, _ = self._item_target(item)
            if self._fly_to(e, n, self.alt_m, self._horizontal_speed(), dt):
                self._landing_ground_m = None
                if self.current_seq == len(self.mission) - 1:
                    self._complete_item()   # PX4: "reached" when overhead, before the descent
                self._item_phase = "descend"
            return
        self._land(dt)
        if self._land_disarm_at is not None and not self.mission_finished:
            self._complete_item()           # a landing in the middle: done at touch-down
            self._item_phase = ""

    def _execute_delay(self, item: SimItem, started: bool, dt: float) -> None:
        """NAV_DELAY: wait param1 s where the vehicle is (holding if in the air)."""
        if not started:
            self._item_hold_until = self.t_s + max(item.param1, 0.0)
            self._hold_target = (self.east_m, self.north_m, self.alt_m)
        if self.landed != LandedState.ON_GROUND:
            self._run_hold(dt)
        if self.t_s >= (self._item_hold_until or 0.0) - 1e-9:
            self._complete_item()

    def _reached(self, e: float, n: float, alt: float, item: SimItem, dt: float) -> bool:
        radius = item.param2 if item.command == mav.MAV_CMD_NAV_WAYPOINT and item.param2 > 0 else self.config.acceptance_radius_m
        arrived = self._fly_to(e, n, alt, self._horizontal_speed(), dt)
        if arrived:
            return True
        is_last_nav = not any(i.command in mav.PX4_POSITION_COMMANDS for i in self.mission[self.current_seq + 1:])
        if item.param1 > 0 or is_last_nav or item.command != mav.MAV_CMD_NAV_WAYPOINT:
            return False  # hold/loiter items and the last waypoint are flown to the point
        return (math.hypot(e - self.east_m, n - self.north_m) < radius
                and abs(alt - self.alt_m) < self.config.altitude_acceptance_m)
