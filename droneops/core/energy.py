"""Physics-based electrical power and energy of a multirotor (pure: no I/O, numpy-vectorised).

Everything is SI: masses kg, speeds m/s, powers W, energies Wh (returned) / J (internal),
durations s, angles degrees. Tracks and wind directions are degrees clockwise from true north;
a :class:`Wind` is meteorological (``from_deg`` is where the wind blows FROM).

Power model (one rotorcraft; its ``rotor_count`` rotors share the thrust)
------------------------------------------------------------------------
Weight ``W = (mass_empty_kg + payload_kg) g``. Parasite drag of the airframe at airspeed
``V_a`` is ``D = 1/2 rho (C_D A) V_a^2`` (``drag_area_m2``). The rotor disks tilt forward by
``alpha = atan(D / W)`` so that thrust ``T = sqrt(W^2 + D^2)`` balances weight and drag
(vertical drag in climb is neglected). Relative to the tilted disks the free stream has an
axial component ``V_ax = V_a sin(alpha) + V_c cos(alpha)`` (``V_c`` climb rate, negative in
descent) and an in-plane component ``V_par = |V_a cos(alpha) - V_c sin(alpha)|``.

* Induced velocity from momentum theory with Glauert's forward-flight inflow,
  ``v_i = v_h^2 / sqrt((f V_par)^2 + (V_ax + v_i)^2)`` with ``v_h = sqrt(T / (2 rho A))`` the
  ideal hover value (A = total disk area), solved by Newton iteration. In hover this is
  ``P_i = T v_h = T^{3/2} / sqrt(2 rho A)``; in a vertical climb it is the exact
  ``v_i = -V_c/2 + sqrt((V_c/2)^2 + v_h^2)`` (Leishman, *Principles of Helicopter
  Aerodynamics*, 2nd ed., Cambridge 2006, ch. 2, "momentum theory" for hover, climb and
  forward flight). ``f = forward_inflow_factor`` is 1 for an isolated rotor (Glauert); below 1
  it models the wake interference of a multirotor, whose rear rotors fly in the front rotors'
  wake and body: the measured M100 power is much flatter in speed than an isolated rotor's.
* Descent (``V_ax < 0``): momentum theory fails in the vortex-ring state, so the empirical
  universal inflow curve ``v_i / v_h = 1 - 1.125 x - 1.372 x^2 - 1.718 x^3 - 0.655 x^4`` is used
  for ``-2 <= x = V_ax / v_h <= 0`` (Leishman 2006, ch. 2, the polynomial fit to measured
  inflow in the vortex-ring and turbulent-wake states) and the
  windmill-brake momentum solution below ``x = -2``; ``v_h`` there is the level-flight induced
  velocity at the same in-plane speed, so descent joins the forward-flight result.
* Shaft power ``P_shaft = kappa T v_i + T V_ax + P_0 (T / W_0)^{3/2} (1 + c mu^2)``: induced
  power with ``kappa = induced_power_factor`` (real/ideal induced power, ~1.15 for real rotors;
  Leishman 2006, ch. 2-3), the work against drag and gravity ``T V_ax = D V_a + W V_c``, and the
  blade profile power ``P_0 = profile_power_w`` (in hover at the empty weight ``W_0``) growing
  with the advance ratio ``mu = V_par / (Omega R)`` as ``1 + c mu^2``, ``c =
  advance_ratio_coeff`` (4.65 after Bramwell; Stolaroff et al. 2018, "Energy use and life cycle
  greenhouse gas emissions of drones for commercial package delivery", Nat. Commun. 9:409,
  Supplementary Note 1; Zeng, Xu & Zhang 2019, IEEE Trans. Wireless Commun. 18(4), eq. 12).
  Multirotors have fixed-pitch rotors whose speed rises with thrust (``T ~ Omega^2``), so the
  profile power scales with ``(T/W_0)^{3/2}`` and the tip speed ``Omega R`` with
  ``(T/W_0)^{1/2}`` from ``rotor_tip_speed_mps`` at ``W_0``. Shaft power is floored at 0
  (motors do not regenerate in a steep descent).
* Electrical power ``P = avionics_power_w + P_shaft / drivetrain_efficiency`` (motors, ESCs,
  wiring). Liu et al. 2017, "A power consumption model for multi-rotor small unmanned aircraft
  systems", ICUAS 2017, uses the same induced + profile + parasite structure with lumped
  coefficients.

Wind triangle: to make good a ground velocity ``V_g`` (ground speed along ``track_deg``) in a
wind ``V_w`` the aircraft flies the air-relative velocity ``V_g - V_w``; its magnitude is the
airspeed. Headwind and crosswind raise it, tailwind lowers it. With an unknown track
(``track_deg=None``) power is averaged over all track directions (a closed route flown in a
steady wind sees every relative wind direction). Hovering, climbing and descending in a wind
of speed ``S`` hold position, i.e. fly at airspeed ``S``.

Kinematics of a hop (how the CMU Matrice 100 flights were flown; :mod:`droneops.core.calibration`,
``missions/vehicles/m100.toml``): motors idle on the ground before lift-off and after
touch-down (``ground_idle_s`` at ``ground_idle_power_w``); vertical climb at
``climb_speed_mps``; a ``transition_hover_s`` hover at cruise height; each straight leg starts
and ends at rest, accelerating and braking at ``horizontal_accel_mps2`` (trapezoidal speed
profile) - the kinetic energy ``m V^2 / 2`` is bought through the drivetrain and lost in
braking; vertical descent at ``descent_speed_mps`` braking at ``vertical_brake_mps2`` to the
landing speed ``landing_speed_mps`` reached ``landing_agl_m`` above the ground, the rest flown
at that speed.

Calibration data: Rodrigues et al. 2022, "Drone flight data reveal energy and greenhouse gas
emissions savings for very small package delivery", Patterns 3(8) 100569; dataset
DOI 10.1184/R1/12683453 (CC BY 4.0).
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field

import numpy as np

from droneops.core.vehicle import VehicleProfile
from droneops.errors import UserError

G_MPS2 = 9.80665
"""Standard gravity, m/s^2."""

ArrayLike = float | np.ndarray

_J_PER_WH = 3600.0
_NEWTON_STEPS = 50
_NEWTON_TOL_MPS = 1e-10
_DIRECTIONS = 36  # track directions averaged when the track is unknown (every 10 degrees)
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(8)
# Leishman (2006) ch. 2: empirical induced velocity in axial descent, v_i/v_h = sum k_n x^n
_VRS_COEFFS = (1.0, -1.125, -1.372, -1.718, -0.655)


# --- wind -------------------------------------------------------------------------------------


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Wind:
    """A steady horizontal wind: ``speed_mps`` >= 0 blowing FROM ``from_deg`` (clockwise from north).

    ``Wind(6, 90)`` is an east wind: the air moves towards the west at 6 m/s.
    """

    speed_mps: float = 0.0
    from_deg: float = 0.0

    def __post_init__(self) -> None:
        if not (_is_real(self.speed_mps) and math.isfinite(self.speed_mps) and self.speed_mps >= 0):
            raise UserError(f"wind speed must be a finite number >= 0 m/s, got {self.speed_mps!r}")
        if not (_is_real(self.from_deg) and math.isfinite(self.from_deg)):
            raise UserError(f"wind direction must be a finite number of degrees, got {self.from_deg!r}")

    @classmethod
    def parse(cls, text: str) -> Wind:
        """Parse ``"SPEED_MPS@FROM_DEG"`` (``"6@90"``: 6 m/s from the east); ``"0"``/``"calm"`` = calm."""
        raw = str(text).strip()
        if raw.lower() in ("0", "calm"):
            return cls()
        match = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*@\s*(-?[0-9]+(?:\.[0-9]*)?|-?\.[0-9]+)", raw)
        if not match:
            raise UserError(f"bad wind {text!r}: expected SPEED_MPS@FROM_DEG, e.g. 6@90 for 6 m/s from the east")
        speed, direction = float(match.group(1)), float(match.group(2))
        if not 0 <= direction <= 360:
            raise UserError(f"bad wind {text!r}: direction must be 0..360 degrees (clockwise from north)")
        return cls(speed, direction % 360.0)

    @property
    def velocity_en_mps(self) -> tuple[float, float]:
        """Velocity of the air mass (east, north), m/s: it moves towards ``from_deg + 180``."""
        rad = math.radians(self.from_deg)
        return (-self.speed_mps * math.sin(rad), -self.speed_mps * math.cos(rad))

    def __str__(self) -> str:
        return f"{self.speed_mps:g}@{self.from_deg:g}"


def airspeed_mps(ground_speed_mps: ArrayLike, track_deg: ArrayLike, wind: Wind = Wind()) -> np.ndarray:
    """Airspeed, m/s, needed to make good ``ground_speed_mps`` along ``track_deg`` in ``wind``.

    The air-relative velocity is ``V_ground - V_wind`` (wind triangle); broadcasts over arrays.
    """
    return _airspeed(ground_speed_mps, track_deg, *wind.velocity_en_mps)


def _airspeed(vg: ArrayLike, track_deg: ArrayLike, wind_e: ArrayLike, wind_n: ArrayLike) -> np.ndarray:
    vg = np.asarray(vg, dtype=float)
    tr = np.radians(np.asarray(track_deg, dtype=float))
    return np.hypot(vg * np.sin(tr) - wind_e, vg * np.cos(tr) - wind_n)


# --- power ------------------------------------------------------------------------------------


def weight_n(profile: VehicleProfile, payload_kg: ArrayLike) -> np.ndarray:
    """Weight with ``payload_kg`` on board, N."""
    return (profile.mass_empty_kg + np.asarray(payload_kg, dtype=float)) * G_MPS2


def kinetic_energy_j(profile: VehicleProfile, payload_kg: ArrayLike, speed_mps: ArrayLike) -> np.ndarray:
    """Kinetic energy ``m v^2 / 2`` of the loaded vehicle at ``speed_mps``, J."""
    mass = profile.mass_empty_kg + np.asarray(payload_kg, dtype=float)
    return 0.5 * mass * np.asarray(speed_mps, dtype=float) ** 2


def _glauert_vi(vh2: np.ndarray, v_par: np.ndarray, v_ax: np.ndarray) -> np.ndarray:
    """Solve ``v sqrt(v_par^2 + (v_ax + v)^2) = vh2`` for ``v >= 0`` (``v_ax >= 0``) by Newton.

    Started at the hover value ``sqrt(vh2)`` (never below the root) the iteration falls
    monotonically to the root: the left side is increasing and convex in ``v``.
    """
    v = np.sqrt(vh2)
    for _ in range(_NEWTON_STEPS):
        s = np.sqrt(v_par**2 + (v_ax + v) ** 2)
        step = (v * s - vh2) / np.maximum(s + v * (v_ax + v) / np.maximum(s, 1e-12), 1e-12)
        v = np.maximum(v - step, 0.0)
        if not np.any(np.abs(step) > _NEWTON_TOL_MPS):
            break
    return v


def _descent_vi_ratio(x: np.ndarray) -> np.ndarray:
    """``v_i / v_h`` in axial descent at ``x = V_ax / v_h <= 0`` (empirical curve / windmill brake)."""
    empirical = sum(k * x**n for n, k in enumerate(_VRS_COEFFS))
    xw = np.minimum(x, -2.0)
    windmill = -xw / 2 - np.sqrt(np.maximum(xw**2 / 4 - 1.0, 0.0))
    return np.where(x >= -2.0, empirical, windmill)


def induced_velocity_mps(thrust_n: ArrayLike, disk_area_m2: float, air_density_kgpm3: float,
                         v_par_mps: ArrayLike = 0.0, v_ax_mps: ArrayLike = 0.0) -> np.ndarray:
    """Induced velocity at the rotor disks, m/s (momentum theory + Glauert; empirical in descent).

    ``v_par_mps`` is the free-stream component in the disk plane (already scaled by any
    interference factor), ``v_ax_mps`` the component along the thrust axis (positive in climb
    and in forward flight with the disks tilted forward).
    """
    t, vp, va = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (thrust_n, v_par_mps, v_ax_mps)))
    vh2 = t / (2.0 * air_density_kgpm3 * disk_area_m2)
    if not np.any(va < 0.0):
        return _glauert_vi(vh2, vp, va)
    climb = _glauert_vi(vh2, vp, np.maximum(va, 0.0))
    level = _glauert_vi(vh2, vp, np.zeros_like(va))
    ratio = _descent_vi_ratio(va / np.maximum(level, 1e-9))
    return np.where(va >= 0.0, climb, level * ratio)


def power_w(profile: VehicleProfile, payload_kg: ArrayLike, airspeed_mps: ArrayLike = 0.0,
            climb_rate_mps: ArrayLike = 0.0) -> np.ndarray:
    """Electrical power drawn from the battery, W, in steady flight (broadcasts over arrays).

    ``airspeed_mps`` is the horizontal speed relative to the air (:func:`airspeed_mps`),
    ``climb_rate_mps`` the vertical speed (negative = descent). Model and sources: module doc.
    """
    p = profile
    w, va, vc = np.broadcast_arrays(weight_n(p, payload_kg), np.abs(np.asarray(airspeed_mps, dtype=float)),
                                    np.asarray(climb_rate_mps, dtype=float))
    rho = p.air_density_kgpm3
    drag = 0.5 * rho * p.drag_area_m2 * va**2
    thrust = np.hypot(w, drag)
    alpha = np.arctan2(drag, w)
    v_ax = va * np.sin(alpha) + vc * np.cos(alpha)
    v_par = np.abs(va * np.cos(alpha) - vc * np.sin(alpha))
    vi = induced_velocity_mps(thrust, p.rotor_disk_area_m2, rho, p.forward_inflow_factor * v_par, v_ax)
    thrust_ratio = thrust / (p.mass_empty_kg * G_MPS2)
    growth = 1.0
    if p.rotor_tip_speed_mps > 0:
        mu = v_par / (p.rotor_tip_speed_mps * np.sqrt(thrust_ratio))
        growth = 1.0 + p.advance_ratio_coeff * mu**2
    profile_w = p.profile_power_w * thrust_ratio**1.5 * growth
    shaft = p.induced_power_factor * thrust * vi + thrust * v_ax + profile_w
    return p.avionics_power_w + np.maximum(shaft, 0.0) / p.drivetrain_efficiency


def hover_power_w(profile: VehicleProfile, payload_kg: ArrayLike = 0.0, wind: Wind = Wind()) -> np.ndarray:
    """Electrical power to hold position, W (in a wind: flying at the wind's speed)."""
    return power_w(profile, payload_kg, wind.speed_mps, 0.0)


def _wind_en(wind_speed_mps: ArrayLike, wind_from_deg: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    rad = np.radians(np.asarray(wind_from_deg, dtype=float))
    ws = np.asarray(wind_speed_mps, dtype=float)
    return -ws * np.sin(rad), -ws * np.cos(rad)


def level_power_w(profile: VehicleProfile, payload_kg: ArrayLike, ground_speed_mps: ArrayLike,
                 track_deg: ArrayLike | None, wind_speed_mps: ArrayLike, wind_from_deg: ArrayLike) -> np.ndarray:
    """Level-flight electrical power, W, at ``ground_speed_mps`` on ``track_deg`` in a wind.

    The wind is given as arrays (speed, FROM direction) so one call covers many flights in
    different winds; everything broadcasts. ``track_deg=None``: mean over all track directions.
    """
    vg = np.asarray(ground_speed_mps, dtype=float)
    we, wn = _wind_en(wind_speed_mps, wind_from_deg)
    if track_deg is None:
        tracks = np.arange(_DIRECTIONS) * (360.0 / _DIRECTIONS)
        air = _airspeed(vg[..., None], tracks, we[..., None], wn[..., None])
        return power_w(profile, np.asarray(payload_kg, dtype=float)[..., None], air, 0.0).mean(axis=-1)
    return power_w(profile, payload_kg, _airspeed(vg, track_deg, we, wn), 0.0)


def _mean_level_power_w(profile: VehicleProfile, payload_kg: ArrayLike, v_hi: ArrayLike, track_deg: ArrayLike | None,
                      wind_speed_mps: ArrayLike, wind_from_deg: ArrayLike) -> np.ndarray:
    """Time-mean level power while the ground speed changes uniformly in time between 0 and v_hi.

    Gauss-Legendre quadrature (8 nodes) over the speed; broadcasts over the other arguments.
    """
    hi = np.asarray(v_hi, dtype=float)[..., None]
    speeds = 0.5 * hi * (_GAUSS_NODES + 1.0)

    def ex(a: ArrayLike) -> np.ndarray:
        return np.asarray(a, dtype=float)[..., None]

    track = None if track_deg is None else ex(track_deg)
    powers = level_power_w(profile, ex(payload_kg), speeds, track, ex(wind_speed_mps), ex(wind_from_deg))
    return 0.5 * np.sum(_GAUSS_WEIGHTS * powers, axis=-1)


# --- energy of flight pieces ------------------------------------------------------------------


def segment_energy(profile: VehicleProfile, payload_kg: ArrayLike, length_m: ArrayLike,
                   track_deg: ArrayLike | None, wind: Wind = Wind(),
                   ground_speed_mps: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Energy (Wh) and duration (s) of level segments flown at a steady ground speed.

    ``length_m`` horizontal length, ``track_deg`` course over ground (clockwise from north;
    ``None`` = unknown, power averaged over all directions), ``ground_speed_mps`` defaults to the
    profile's cruise speed. Steady flight only: starting and stopping a leg costs
    :func:`speed_change_energy` more. All array arguments broadcast together.
    """
    vg = np.asarray(profile.cruise_speed_mps if ground_speed_mps is None else ground_speed_mps, dtype=float)
    if np.any(~(vg > 0)):
        raise UserError("ground speed must be > 0 m/s")
    length = np.asarray(length_m, dtype=float)
    if np.any(~(length >= 0)):
        raise UserError("segment length must be >= 0 m")
    power = level_power_w(profile, payload_kg, vg, track_deg, wind.speed_mps, wind.from_deg)
    duration = length / vg
    power, duration = np.broadcast_arrays(power, duration)
    return power * duration / _J_PER_WH, duration.copy()


def speed_change_energy(profile: VehicleProfile, payload_kg: ArrayLike, speed_mps: ArrayLike,
                        track_deg: ArrayLike | None = None,
                        wind: Wind = Wind()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Extra cost of starting a leg from rest and stopping it, over flying that stretch steadily.

    Returns ``(extra_wh, extra_s, distance_m)``: accelerating and braking at
    ``horizontal_accel_mps2`` take ``2 V / a`` seconds over ``V^2 / a`` metres, plus the kinetic
    energy ``m V^2 / 2`` bought through the drivetrain and lost in braking; the extra is relative
    to covering those metres at the steady speed ``V``. Planners: add it once per leg (take-off
    to landing or drop) to the :func:`segment_energy` sum of the leg's segments (legs shorter
    than ``V^2 / a`` are handled exactly by :func:`hop_energy`).
    """
    p = profile
    v = np.asarray(speed_mps, dtype=float)
    a = p.horizontal_accel_mps2
    if a <= 0:
        zero = np.zeros(np.broadcast(v, np.asarray(payload_kg, dtype=float)).shape)
        return zero, zero.copy(), zero.copy()
    dist = v**2 / a
    duration = 2.0 * v / a
    mean_p = _mean_level_power_w(p, payload_kg, v, track_deg, wind.speed_mps, wind.from_deg)
    steady_p = level_power_w(p, payload_kg, v, track_deg, wind.speed_mps, wind.from_deg)
    kinetic = kinetic_energy_j(p, payload_kg, v) / p.drivetrain_efficiency
    extra_wh = (mean_p * duration + kinetic - steady_p * dist / v) / _J_PER_WH
    return extra_wh, duration - dist / v, dist


def vertical_energy(profile: VehicleProfile, payload_kg: ArrayLike, height_m: ArrayLike, climb: bool,
                    wind: Wind = Wind(), landing: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Energy (Wh) and duration (s) of a vertical climb or descent of ``height_m`` (>= 0).

    Climb at ``climb_speed_mps``; descent at ``descent_speed_mps``. With ``landing=True`` the
    descent ends on the ground the way the vehicle lands: it brakes at ``vertical_brake_mps2``
    to ``landing_speed_mps``, reached ``landing_agl_m`` above the ground, and flies the rest at
    that speed (motors idling on the ground are not included: see :func:`hop_energy`). Holding
    position in ``wind`` means flying at the wind's speed. Broadcasts over payload and height.
    """
    p = profile
    h = np.asarray(height_m, dtype=float)
    if np.any(~(h >= 0)):
        raise UserError("height must be >= 0 m")
    air = wind.speed_mps
    if climb:
        return _steady(power_w(p, payload_kg, air, p.climb_speed_mps), h / p.climb_speed_mps)
    if not landing:
        return _steady(power_w(p, payload_kg, air, -p.descent_speed_mps), h / p.descent_speed_mps)
    e1, t1, e2, t2 = _descent_to_ground(p, payload_kg, h, air)
    return e1 + e2, t1 + t2


def _steady(power: np.ndarray, duration: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    power, duration = np.broadcast_arrays(power, duration)
    return power * duration / _J_PER_WH, duration.copy()


def _descent_kinematics(p: VehicleProfile, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Descent of ``h`` metres to touch-down: ``(fast_s, brake_s, brake_top_speed_mps, final_s)``.

    Descent at ``descent_speed_mps``, then constant braking at ``vertical_brake_mps2`` ending
    at ``landing_speed_mps`` when ``landing_agl_m`` above the ground (a descent that starts
    lower brakes from the speed of the braking curve at its height), then the last
    ``landing_agl_m`` at ``landing_speed_mps``. No landing height: all at descent speed.
    """
    vd = p.descent_speed_mps
    h = np.asarray(h, dtype=float)
    if p.landing_agl_m <= 0 or p.landing_speed_mps <= 0:
        zero = np.zeros_like(h)
        return h / vd, zero, zero + vd, zero.copy()
    vf = min(p.landing_speed_mps, vd)
    above = np.maximum(h - p.landing_agl_m, 0.0)
    final_s = np.minimum(h, p.landing_agl_m) / vf
    if p.vertical_brake_mps2 > 0 and vd > vf:
        brake_m = np.minimum((vd**2 - vf**2) / (2 * p.vertical_brake_mps2), above)
        v_top = np.sqrt(vf**2 + 2 * p.vertical_brake_mps2 * brake_m)
        brake_s = (v_top - vf) / p.vertical_brake_mps2
    else:
        brake_m = np.zeros_like(above)
        v_top = np.zeros_like(above) + vf
        brake_s = np.zeros_like(above)
    return (above - brake_m) / vd, brake_s, v_top, final_s


def _descent_to_ground(p: VehicleProfile, payload_kg: ArrayLike, h: np.ndarray,
                       air: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(descent_wh, descent_s, landing_wh, landing_s)`` of :func:`_descent_kinematics`."""
    fast_s, brake_s, v_top, final_s = _descent_kinematics(p, h)
    vd = p.descent_speed_mps
    vf = min(p.landing_speed_mps, vd) if p.landing_speed_mps > 0 else vd
    # constant deceleration: the descent rate is uniform in time between v_top and vf
    rates = 0.5 * (v_top[..., None] - vf) * _GAUSS_NODES + 0.5 * (v_top[..., None] + vf)
    brake_p = 0.5 * np.sum(_GAUSS_WEIGHTS * power_w(p, np.asarray(payload_kg, dtype=float)[..., None],
                                                    np.asarray(air, dtype=float)[..., None], -rates), axis=-1)
    fast_p = power_w(p, payload_kg, air, -vd)
    final_p = power_w(p, payload_kg, air, -vf)
    desc_wh = (fast_p * fast_s + brake_p * brake_s) / _J_PER_WH
    land_wh = final_p * final_s / _J_PER_WH
    desc_wh, desc_s, land_wh, land_s = np.broadcast_arrays(desc_wh, fast_s + brake_s, land_wh, final_s)
    return desc_wh, desc_s, land_wh, land_s


# --- a whole hop ------------------------------------------------------------------------------

PHASE_NAMES = ("ground", "climb", "hover", "accelerate/brake", "cruise", "descent", "landing")
"""Phases of :func:`hop_energy`, in flight order."""


@dataclass(frozen=True)
class Phase:
    """One phase of a hop: ``name``, ``duration_s`` and electrical ``energy_wh``."""

    name: str
    duration_s: float
    energy_wh: float


@dataclass(frozen=True)
class HopEnergy:
    """Energy (Wh) and duration (s) of a take-off -> cruise -> landing hop, with its phases."""

    energy_wh: float
    duration_s: float
    phases: list[Phase] = field(default_factory=list)

    def to_json(self) -> dict:
        """``{"energy_wh", "duration_s", "phases": [{"name", "duration_s", "energy_wh"}]}``."""
        return {"energy_wh": self.energy_wh, "duration_s": self.duration_s,
                "phases": [{"name": ph.name, "duration_s": ph.duration_s, "energy_wh": ph.energy_wh}
                           for ph in self.phases]}


def _leg_kinematics(p: VehicleProfile, leg_m: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per straight leg from rest to rest: ``(peak_speed_mps, change_s, cruise_s)``."""
    a = p.horizontal_accel_mps2
    if a <= 0:
        return v + 0.0, np.zeros_like(leg_m), leg_m / v
    peak = np.minimum(v, np.sqrt(a * leg_m))
    change_m = np.minimum(peak**2 / a, leg_m)
    return peak, 2.0 * peak / a, (leg_m - change_m) / v


def hop_durations(profile: VehicleProfile, distance_m: ArrayLike, altitude_m: ArrayLike, speed_mps: ArrayLike,
                  legs: int = 1) -> dict[str, np.ndarray]:
    """Durations (s) of the phases of :func:`hop_energy` (no power needed; broadcasts)."""
    p = profile
    dist, alt, v = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (distance_m, altitude_m, speed_mps)))
    _, change_s, cruise_s = _leg_kinematics(p, dist / legs, v)
    fast_s, brake_s, _, final_s = _descent_kinematics(p, alt)
    zero = np.zeros(dist.shape)
    return {"ground": zero + p.ground_idle_s, "climb": alt / p.climb_speed_mps, "hover": zero + p.transition_hover_s,
            "accelerate/brake": legs * change_s, "cruise": legs * cruise_s, "descent": fast_s + brake_s,
            "landing": final_s + zero}


def hop_phases(profile: VehicleProfile, distance_m: ArrayLike, altitude_m: ArrayLike, speed_mps: ArrayLike,
               payload_kg: ArrayLike, wind_speed_mps: ArrayLike = 0.0, wind_from_deg: ArrayLike = 0.0,
               track_deg: ArrayLike | None = 0.0, legs: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Vectorised core of :func:`hop_energy`: ``{phase: (energy_wh, duration_s)}`` arrays.

    Every argument except ``legs`` broadcasts (one element per hop), so a calibration can
    evaluate many flights, each in its own wind, in one call. Inputs are not validated here.
    """
    p = profile
    dist, alt, v, pay, ws, wf = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (
        distance_m, altitude_m, speed_mps, payload_kg, wind_speed_mps, wind_from_deg)))
    track = None if track_deg is None else np.broadcast_to(np.asarray(track_deg, dtype=float), dist.shape)
    t = hop_durations(p, dist, alt, v, legs)
    peak, _, _ = _leg_kinematics(p, dist / legs, v)
    e: dict[str, np.ndarray] = {}
    e["ground"] = t["ground"] * p.ground_idle_power_w / _J_PER_WH
    e["climb"] = t["climb"] * power_w(p, pay, ws, p.climb_speed_mps) / _J_PER_WH
    e["hover"] = t["hover"] * power_w(p, pay, ws, 0.0) / _J_PER_WH
    if p.horizontal_accel_mps2 > 0:
        mean_p = _mean_level_power_w(p, pay, peak, track, ws, wf)
        kinetic = legs * kinetic_energy_j(p, pay, peak) / p.drivetrain_efficiency
        e["accelerate/brake"] = (t["accelerate/brake"] * mean_p + kinetic) / _J_PER_WH
    else:
        e["accelerate/brake"] = np.zeros(dist.shape)
    e["cruise"] = t["cruise"] * level_power_w(p, pay, v, track, ws, wf) / _J_PER_WH
    e["descent"], _, e["landing"], _ = _descent_to_ground(p, pay, alt, ws)
    return {name: (np.broadcast_to(e[name], dist.shape), np.broadcast_to(t[name], dist.shape)) for name in PHASE_NAMES}


def hop_energy(profile: VehicleProfile, distance_m: float, altitude_m: float, speed_mps: float,
               payload_kg: float, wind: Wind = Wind(), track_deg: float | None = 0.0,
               legs: int = 1) -> HopEnergy:
    """A simple hop flown the way the calibration flights were, from motors on to motors off.

    Motors idle on the ground (``ground_idle_s`` in all, before lift-off and after touch-down),
    vertical climb to ``altitude_m`` above the take-off point, a ``transition_hover_s`` hover,
    ``distance_m`` of level flight at ground speed ``speed_mps`` on course ``track_deg``
    (``None``: unknown, power averaged over all directions) split into ``legs`` equal straight
    legs each flown from rest to rest (the CMU triangle R1 is 3 legs), then vertical descent
    and landing at the take-off height. Phases: :data:`PHASE_NAMES`.
    """
    for name, value, unit in (("distance", distance_m, "m"), ("altitude", altitude_m, "m"),
                              ("payload", payload_kg, "kg")):
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"{name} must be a finite number >= 0 {unit}, got {value}")
    if not (math.isfinite(speed_mps) and speed_mps > 0):
        raise UserError(f"speed must be a finite number > 0 m/s, got {speed_mps}")
    if track_deg is not None and not math.isfinite(track_deg):
        raise UserError(f"track must be a finite number of degrees, got {track_deg}")
    if int(legs) != legs or legs < 1:
        raise UserError(f"legs must be a whole number >= 1, got {legs}")
    parts = hop_phases(profile, distance_m, altitude_m, speed_mps, payload_kg, wind.speed_mps, wind.from_deg,
                       track_deg, int(legs))
    phases = [Phase(name, float(parts[name][1]), float(parts[name][0])) for name in PHASE_NAMES]
    return HopEnergy(energy_wh=sum(ph.energy_wh for ph in phases),
                     duration_s=sum(ph.duration_s for ph in phases), phases=phases)
