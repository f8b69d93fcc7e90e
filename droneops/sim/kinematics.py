"""Where the simulated vehicle is and how it moves: the local plane, flight physics, energy drain.

:class:`ModelState` declares the state every part of :class:`~droneops.sim.model.VehicleModel`
works on (position, velocity, modes, timers, mission) and the small helpers they share;
:class:`Kinematics` adds the motion: a point mass flying straight 3-D lines with horizontal
speed, climb/descent and acceleration limits, hold, take-off, RTL, the landing descent, the
geofence stop, and the battery drain from the tabulated power model.

Coordinates: east/north metres in :class:`LocalPlane`, the local ENU frame
(:class:`droneops.core.geo.LocalFrame`) at the spawn point; altitudes m AMSL; velocities m/s
(east, north, up); headings degrees clockwise from true north; times simulated seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from droneops.core import geo
from droneops.core import mavlink as mav
from droneops.sim.energy import lipo_cell_voltage_v
from droneops.sim.state import Battery, Faults, FlightMode, Home, ItemReached, LandedState, SimConfig, StatusText

if TYPE_CHECKING:  # pragma: no cover
    from droneops.core.vehicle import VehicleProfile
    from droneops.sim.energy import PowerFn
    from droneops.sim.items import SimItem


class LocalPlane:
    """East/north metres <-> degrees in the local ENU frame at (``lat0_deg``, ``lon0_deg``),
    for scalar floats: :class:`droneops.core.geo.LocalFrame`'s horizontal plane (height 0).

    Both directions work at height 0 on the ellipsoid, so the round trip is exact (to 1e-9 m
    within a few km, 1e-5 m at 30 km). The last conversion each way is remembered (the simulator
    asks for the same point many times in a row: a hovering vehicle, the current mission item).
    """

    def __init__(self, lat0_deg: float, lon0_deg: float) -> None:
        self.lat0_deg = lat0_deg
        self.lon0_deg = lon0_deg
        self.frame = geo.LocalFrame(lat0_deg, lon0_deg, 0.0)
        self._last_en: tuple[float, float, float, float] = (math.nan, math.nan, 0.0, 0.0)
        self._last_latlon: tuple[float, float, float, float] = (math.nan, math.nan, 0.0, 0.0)

    def to_en(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """(lat, lon) degrees -> (east_m, north_m)."""
        la, lo, e, n = self._last_en
        if la == lat_deg and lo == lon_deg:
            return e, n
        en = self.frame.to_plane(lat_deg, lon_deg)[0]
        e, n = float(en[0]), float(en[1])
        self._last_en = (lat_deg, lon_deg, e, n)
        return e, n

    def to_latlon(self, east_m: float, north_m: float) -> tuple[float, float]:
        """(east_m, north_m) -> (lat, lon) degrees."""
        e, n, la, lo = self._last_latlon
        if e == east_m and n == north_m:
            return la, lo
        # The ENU point (east, north, up 0) lies above the ellipsoid (by ~d**2 / 2R): take the point
        # below it at height 0, so that to_en (which works at height 0) gives back (east, north).
        lat, lon, alt = self.frame.to_geodetic(east_m, north_m, 0.0)
        lat, lon, _ = self.frame.to_geodetic(east_m, north_m, -float(alt))
        la, lo = float(lat), float(lon)
        self._last_latlon = (east_m, north_m, la, lo)
        return la, lo


def point_in_ring(east_m: float, north_m: float, ring: Sequence[tuple[float, float]]) -> bool:
    """Even-odd rule: is (east, north) inside the polygon ``ring`` [(east, north), ...]?"""
    inside = False
    j = len(ring) - 1
    for i in range(len(ring)):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > north_m) != (yj > north_m):
            x_cross = xi + (north_m - yi) * (xj - xi) / (yj - yi)
            if east_m < x_cross:
                inside = not inside
        j = i
    return inside



class ModelState:
    """The simulated vehicle's state (set up by :class:`~droneops.sim.model.VehicleModel`) and
    the helpers all its parts use. Positions in :attr:`plane` (m), altitudes AMSL (m)."""

    profile: VehicleProfile
    config: SimConfig
    wind: Any
    plane: LocalPlane
    terrain: Callable[[float, float], float]
    power: PowerFn
    faults: Faults
    t_s: float
    east_m: float
    north_m: float
    alt_m: float
    vel_e: float
    vel_n: float
    vel_u: float
    heading_deg: float
    airspeed_mps: float
    power_w: float
    armed: bool
    mode: FlightMode
    mode_after_disarm: FlightMode
    landed: LandedState
    failsafe: bool
    home: Home
    battery: Battery
    payload_kg: float
    mission: tuple[SimItem, ...]
    fence: tuple[SimItem, ...]
    rally: tuple[SimItem, ...]
    current_seq: int
    mission_finished: bool
    mission_speed_mps: float
    _events: list[ItemReached | StatusText]
    _preflight_disarm_at: float | None
    _land_disarm_at: float | None
    _item_phase: str
    _hold_target: tuple[float, float, float] | None
    _rtl_phase: str
    _rtl_target: tuple[float, float, float] | None
    _takeoff_target_alt: float | None
    _landing_ground_m: float | None
    _fence_cache: tuple[tuple[SimItem, ...], list[tuple[bool, list[tuple[float, float]]]]] | None = None

    @property
    def lat_lon_deg(self) -> tuple[float, float]:
        return self.plane.to_latlon(self.east_m, self.north_m)

    @property
    def in_air(self) -> bool:
        return self.landed != LandedState.ON_GROUND

    @property
    def battery_voltage_v(self) -> float:
        cells = self.config.battery_cell_count
        ocv = cells * lipo_cell_voltage_v(self.battery.fraction)
        return max(ocv - self.battery.current_a * self.config.battery_internal_resistance_ohm, 0.0)

    def _text(self, severity: int, text: str) -> None:
        self._events.append(StatusText(severity, text))

    def _ground_here(self) -> float:
        lat, lon = self.lat_lon_deg
        return self.terrain(lat, lon)

    def _alt_above_ground(self, height_m: float) -> float:
        return self._ground_here() + height_m

    def _set_home_here(self) -> None:
        """Home = the current spot on the ground (set at arming, lift-off and after landing)."""
        lat, lon = self.lat_lon_deg
        self.home = Home(lat, lon, self._ground_here())


class Kinematics(ModelState):
    """Motion and energy of the simulated vehicle (see the module docstring)."""

    # --- starting a manoeuvre ---------------------------------------------------------------

    def _enter_hold(self) -> None:
        self._rtl_phase = ""
        self._takeoff_target_alt = None
        if self.landed == LandedState.LANDING:
            self.landed = LandedState.IN_AIR
        self._landing_ground_m = None
        self._hold_target = (self.east_m, self.north_m, self.alt_m)

    def _start_takeoff(self, target_alt_m: float) -> None:
        self._takeoff_target_alt = target_alt_m
        if self.landed == LandedState.ON_GROUND:
            self._lift_off()

    def _lift_off(self) -> None:
        self._set_home_here()
        self.landed = LandedState.TAKING_OFF
        self._preflight_disarm_at = None

    def _start_rtl(self) -> None:
        if self.landed == LandedState.ON_GROUND:
            self._rtl_phase = ""
            return
        dest = self._rtl_destination()
        self._rtl_target = dest
        self._rtl_phase = "climb"
        self._landing_ground_m = None

    def _rtl_destination(self) -> tuple[float, float, float]:
        """Closest safe point (home or a rally point): (east, north, ground alt AMSL)."""
        he, hn = self.plane.to_en(self.home.lat_deg, self.home.lon_deg)
        best = (he, hn, self.home.alt_m)
        best_d = math.hypot(he - self.east_m, hn - self.north_m)
        for item in self.rally:
            if not item.has_latlon:
                continue
            e, n = self.plane.to_en(item.lat_deg, item.lon_deg)
            d = math.hypot(e - self.east_m, n - self.north_m)
            if d < best_d:
                ground = item.z + self.home.alt_m if item.frame in mav.RELATIVE_FRAMES else item.z
                best, best_d = (e, n, ground), d
        return best

    def _start_land_here(self) -> None:
        if self.landed == LandedState.ON_GROUND:
            return
        self._landing_ground_m = None
        self._hold_target = None

    # --- control --------------------------------------------------------------------------

    def _run_hold(self, dt: float) -> None:
        if self.landed == LandedState.ON_GROUND:
            return
        if self._hold_target is None:
            self._hold_target = (self.east_m, self.north_m, self.alt_m)
        e, n, a = self._hold_target
        self._fly_to(e, n, a, self._horizontal_speed(), dt)

    def _run_takeoff(self, dt: float) -> None:
        if self._takeoff_target_alt is None:
            self._run_hold(dt)
            return
        if self._climb_to(self._takeoff_target_alt, dt):
            self._takeoff_target_alt = None
            self.landed = LandedState.IN_AIR
            self.mode = FlightMode.HOLD
            self._enter_hold()

    def _climb_to(self, alt_m: float, dt: float) -> bool:
        """Vertical take-off from the current spot; True once ``alt_m`` is reached."""
        if self.landed == LandedState.ON_GROUND:
            self._lift_off()
        return self._fly_to(self.east_m, self.north_m, alt_m, self._horizontal_speed(), dt)

    def _run_rtl(self, dt: float) -> None:
        if self.landed == LandedState.ON_GROUND:
            return
        if not self._rtl_phase:
            self._start_rtl()
        if self._rtl_target is None:   # not set only on the ground, handled above
            return
        e, n, ground = self._rtl_target
        if self._rtl_phase == "climb":
            return_alt = max(self.alt_m, self.home.alt_m + self.config.rtl_return_alt_m, ground + self.config.land_slow_agl_m)
            if self._fly_to(self.east_m, self.north_m, return_alt, self._horizontal_speed(), dt):
                self._rtl_phase = "return"
        elif self._rtl_phase == "return":
            if self._fly_to(e, n, self.alt_m, self._horizontal_speed(), dt):
                self._rtl_phase = "land"
                self._landing_ground_m = ground
        else:
            self._land(dt)

    def _horizontal_speed(self) -> float:
        return min(self.mission_speed_mps, self.profile.max_speed_mps)

    def _accel(self) -> float:
        a = self.profile.horizontal_accel_mps2
        return a if a > 0 else self.config.horizontal_accel_mps2

    def _fly_to(self, te: float, tn: float, ta: float, h_speed: float, dt: float,
                descent_speed: float | None = None) -> bool:
        """Move along the straight 3-D line to the target; True when there (snapped, at rest)."""
        de, dn, da = te - self.east_m, tn - self.north_m, ta - self.alt_m
        dist_h = math.hypot(de, dn)
        dist = math.sqrt(dist_h * dist_h + da * da)
        if dist < 0.01:
            self._move(te - self.east_m, tn - self.north_m, ta - self.alt_m, dt, snap=True)
            return True
        v_rate = self.profile.climb_speed_mps if da > 0 else (descent_speed or self.profile.descent_speed_mps)
        t_h = dist_h / max(h_speed, 1e-6)
        t_v = abs(da) / max(v_rate, 1e-6)
        t_line = max(t_h, t_v, 1e-6)
        v_line = dist / t_line
        a_line = min(self._accel(), self.config.vertical_accel_mps2) if dist_h < abs(da) else self._accel()
        v_line = min(v_line, math.sqrt(2.0 * a_line * dist))
        ue, un, ua = de / dist, dn / dist, da / dist
        ve_t, vn_t, vu_t = ue * v_line, un * v_line, ua * v_line
        # acceleration limit on the velocity change
        dve, dvn, dvu = ve_t - self.vel_e, vn_t - self.vel_n, vu_t - self.vel_u
        dh = math.hypot(dve, dvn)
        max_dh = self._accel() * dt
        if dh > max_dh:
            dve, dvn = dve * max_dh / dh, dvn * max_dh / dh
        max_dv = self.config.vertical_accel_mps2 * dt
        dvu = max(-max_dv, min(max_dv, dvu))
        self.vel_e += dve
        self.vel_n += dvn
        self.vel_u += dvu
        step_e, step_n, step_u = self.vel_e * dt, self.vel_n * dt, self.vel_u * dt
        step = math.sqrt(step_e ** 2 + step_n ** 2 + step_u ** 2)
        if step >= dist:  # would pass the target: stop on it
            self._move(de, dn, da, dt, snap=True)
            return True
        self._move(step_e, step_n, step_u, dt, snap=False)
        return False

    def _move(self, de: float, dn: float, du: float, dt: float, snap: bool) -> None:
        if not self._geofence_allows(self.east_m + de, self.north_m + dn):
            self.vel_e = self.vel_n = 0.0
            return
        self.east_m += de
        self.north_m += dn
        self.alt_m += du
        if snap:
            self.vel_e = self.vel_n = self.vel_u = 0.0
        if abs(self.vel_e) + abs(self.vel_n) > 0.3:
            self.heading_deg = math.degrees(math.atan2(self.vel_e, self.vel_n)) % 360.0

    def _fence_violation(self, east_m: float, north_m: float) -> bool:
        """True if the point lies inside an exclusion polygon or outside an inclusion one."""
        for inclusion, ring in self._fence_polygons():
            inside = point_in_ring(east_m, north_m, ring)
            if inside != inclusion:
                return True
        return False

    def _fence_polygons(self) -> list[tuple[bool, list[tuple[float, float]]]]:
        cache = self._fence_cache
        if cache is not None and cache[0] is self.fence:
            return cache[1]
        polygons: list[tuple[bool, list[tuple[float, float]]]] = []
        i = 0
        items = self.fence
        while i < len(items):
            item = items[i]
            if item.command in (mav.MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION, mav.MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION):
                count = max(int(item.param1), 1)
                ring = [self.plane.to_en(v.lat_deg, v.lon_deg) for v in items[i:i + count]]
                if len(ring) >= 3:
                    polygons.append((item.command == mav.MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION, ring))
                i += count
            else:
                i += 1
        self._fence_cache = (self.fence, polygons)
        return polygons

    def _geofence_allows(self, east_m: float, north_m: float) -> bool:
        """PX4 stops at a fence: refuse a move into a violation (HOLD + failsafe texts)."""
        if not self.fence or not self._fence_violation(east_m, north_m):
            return True
        if self._fence_violation(self.east_m, self.north_m):
            return True  # already outside: let it move (back) rather than freeze forever
        if self.mode != FlightMode.HOLD:
            self._text(mav.MAV_SEVERITY_CRITICAL, "Geofence: approaching or outside geofence")
            self._text(mav.MAV_SEVERITY_CRITICAL, "Failsafe activated")
            self.failsafe = True
            self.mode = FlightMode.HOLD
            self._hold_target = (self.east_m, self.north_m, self.alt_m)
            self._rtl_phase = ""
        return False

    def _land(self, dt: float) -> None:
        """Descend where the vehicle is; touch down, then disarm after the detection delay."""
        if self.landed == LandedState.ON_GROUND or self._land_disarm_at is not None:
            self.vel_e = self.vel_n = self.vel_u = 0.0
            return
        if self._landing_ground_m is None:
            self._landing_ground_m = self._ground_here()
        ground = self._landing_ground_m
        self.landed = LandedState.LANDING
        agl = self.alt_m - ground
        slow_agl = self.config.land_slow_agl_m      # PX4's landing, whatever airframe it flies
        slow = self.config.land_slow_speed_mps
        fast = min(self.config.land_descent_speed_mps, self.profile.descent_speed_mps)
        rate = slow if agl <= slow_agl + 1e-6 else fast
        self.vel_e = self.vel_n = 0.0
        target_u = -rate
        max_dv = self.config.vertical_accel_mps2 * dt
        self.vel_u += max(-max_dv, min(max_dv, target_u - self.vel_u))
        if agl > slow_agl and self.alt_m + self.vel_u * dt < ground + slow_agl:
            new_alt = ground + slow_agl - 1e-9
        else:
            new_alt = self.alt_m + self.vel_u * dt
        if new_alt <= ground:
            self.alt_m = ground
            self.vel_u = 0.0
            self._land_disarm_at = self.t_s + self.config.land_disarm_delay_s
        else:
            self.alt_m = new_alt


    # --- energy ---------------------------------------------------------------------------

    def _drain(self, dt: float) -> None:
        if not self.armed:
            self.airspeed_mps = 0.0
            return
        we, wn = self.wind.velocity_en_mps
        if self.landed == LandedState.ON_GROUND or (self._land_disarm_at is not None):
            idle = self.profile.ground_idle_power_w if getattr(self.profile, "ground_idle_power_w", 0.0) > 0 \
                else self.profile.avionics_power_w
            power = idle
            self.airspeed_mps = 0.0
        else:
            self.airspeed_mps = math.hypot(self.vel_e - we, self.vel_n - wn)
            power = self.power(self.payload_kg, self.airspeed_mps, self.vel_u)
        power *= self.faults.battery_drain_factor
        self.power_w = power
        voltage = max(self.battery_voltage_v, 1.0)
        self.battery.current_a = power / voltage
        self.battery.remaining_wh = max(self.battery.remaining_wh - power * dt / 3600.0, 0.0)
        self.battery.consumed_ah += self.battery.current_a * dt / 3600.0
