"""Geodesy and planar geometry for village networks.

Frames and units
----------------
* Geodetic positions are WGS-84 latitude/longitude in degrees and heights in metres above the
  ellipsoid-ish "AMSL" the network files carry (the difference does not matter here: heights
  are only ever compared with each other).
* A :class:`LocalFrame` is a local East-North-Up (ENU) Cartesian frame, metres, tangent to the
  WGS-84 ellipsoid at an origin (for a network: the centroid of its nodes). Every
  geodetic <-> ENU conversion goes through :mod:`pymap3d` and is vectorised over numpy arrays.
* Horizontal geometry (corridor vs no-fly polygon tests, convex hulls, neighbour search) is
  done in the frame's East-North plane with all points taken at height 0, so that a point's
  ground elevation never shifts its horizontal position. Within 25 km of the origin the
  tangent-plane distortion is below 1e-5 relative (cm over a corridor), far below the
  accuracy of a hand-drawn polygon.
* :meth:`LocalFrame.linearised` gives the same frame to first order (:class:`LinearFrame`:
  constant metres per degree at the origin, i.e. equirectangular; scalar and fast, exact round
  trip) for code that projects single points many times per second (the simulated vehicle). It
  is not the ENU frame beyond first order: a parallel of latitude curves away from the frame's
  east axis by about ``d^2 tan(lat0) / (2 R)`` (8 m at 15 km east at 25 deg latitude), and
  distances from the origin are off by up to ~2e-4 relative on diagonals.
* Segment lengths and tracks (:func:`segment_length_track`) are computed per segment, not in
  the shared frame: the track in a tangent frame at the segment's start, the length from the
  ECEF chord turned into an ellipsoidal arc. They agree with Vincenty's geodesic to about
  1e-7 relative up to 300 km (sub-mm over a corridor; see ``tests/test_geo.py``). Tracks are
  degrees clockwise from true north in ``[0, 360)`` (north 0, east 90), the initial course.

This module is pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pymap3d

ArrayLike = float | Sequence[float] | np.ndarray
"""A scalar, a sequence or a numpy array of numbers (every function broadcasts over them)."""

WGS84_A_M = 6378137.0
"""WGS-84 semi-major axis, m."""
WGS84_E2 = 6.69437999014e-3
"""WGS-84 first eccentricity squared (as :class:`LinearFrame` uses it)."""


@dataclass(frozen=True)
class LocalFrame:
    """A local ENU frame (metres) tangent to WGS-84 at ``(lat0_deg, lon0_deg, alt0_m)``."""

    lat0_deg: float
    lon0_deg: float
    alt0_m: float = 0.0

    @classmethod
    def centred_on(cls, lat_deg: ArrayLike, lon_deg: ArrayLike) -> LocalFrame:
        """A frame at the centroid of the given points (circular mean of longitude), height 0."""
        lat = np.atleast_1d(np.asarray(lat_deg, dtype=float))
        lon = np.atleast_1d(np.asarray(lon_deg, dtype=float))
        if lat.size == 0:
            return cls(0.0, 0.0, 0.0)
        lon_rad = np.radians(lon)
        lon0 = float(np.degrees(np.arctan2(np.sin(lon_rad).mean(), np.cos(lon_rad).mean())))
        return cls(float(lat.mean()), lon0, 0.0)

    def to_enu(self, lat_deg: ArrayLike, lon_deg: ArrayLike, alt_m: ArrayLike = 0.0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Geodetic (deg, deg, m) -> (east_m, north_m, up_m) arrays in this frame."""
        lat = np.asarray(lat_deg, dtype=float)
        lon = np.asarray(lon_deg, dtype=float)
        alt = np.broadcast_to(np.asarray(alt_m, dtype=float), np.broadcast(lat, lon).shape)
        e, n, u = pymap3d.geodetic2enu(lat, lon, alt, self.lat0_deg, self.lon0_deg, self.alt0_m)
        return np.asarray(e, dtype=float), np.asarray(n, dtype=float), np.asarray(u, dtype=float)

    def to_geodetic(self, east_m: ArrayLike, north_m: ArrayLike, up_m: ArrayLike = 0.0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ENU (m) in this frame -> (lat_deg, lon_deg, alt_m) arrays."""
        e = np.asarray(east_m, dtype=float)
        n = np.asarray(north_m, dtype=float)
        u = np.broadcast_to(np.asarray(up_m, dtype=float), np.broadcast(e, n).shape)
        lat, lon, alt = pymap3d.enu2geodetic(e, n, u, self.lat0_deg, self.lon0_deg, self.alt0_m)
        return np.asarray(lat, dtype=float), np.asarray(lon, dtype=float), np.asarray(alt, dtype=float)

    def to_plane(self, lat_deg: ArrayLike, lon_deg: ArrayLike) -> np.ndarray:
        """Horizontal positions as an ``(N, 2)`` array of (east_m, north_m), taken at height 0."""
        e, n, _ = self.to_enu(np.atleast_1d(lat_deg), np.atleast_1d(lon_deg), 0.0)
        return np.column_stack([e.ravel(), n.ravel()])

    def from_plane(self, en_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`to_plane`: ``(N, 2)`` (east_m, north_m) -> (lat_deg, lon_deg).

        The point on the tangent plane (up = 0), i.e. the frame's own inverse: that point is
        ``d^2 / (2 R)`` above the ellipsoid, so a round trip through :meth:`to_plane` moves a
        point horizontally by about ``d^3 / (2 R^2)`` (1 cm at 10 km, 11 cm at 21 km).
        :meth:`ground_from_plane` removes that.
        """
        en = np.atleast_2d(np.asarray(en_m, dtype=float))
        lat, lon, _ = self.to_geodetic(en[:, 0], en[:, 1], 0.0)
        return lat, lon

    def point_to_plane(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """One position (deg) -> ``(east_m, north_m)`` as floats, at height 0 (as :meth:`to_plane`)."""
        e, n, _ = self.to_enu(lat_deg, lon_deg, 0.0)
        return float(e), float(n)

    def ground_from_plane(self, east_m: ArrayLike, north_m: ArrayLike,
                          iterations: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """The exact inverse of :meth:`to_plane`: (east_m, north_m) -> (lat_deg, lon_deg) of the
        point at height 0 that projects there.

        Starts from :meth:`to_geodetic` (a point on the tangent plane) and applies ``iterations``
        corrections, each re-projecting and shifting by the residual; each shrinks the horizontal
        error by about ``(distance / Earth radius)^2``. Vectorised; arrays broadcast.
        """
        e0 = np.asarray(east_m, dtype=float)
        n0 = np.asarray(north_m, dtype=float)
        ge, gn = e0, n0
        lat, lon, _ = self.to_geodetic(ge, gn, 0.0)
        for _ in range(iterations):
            e, n, _ = self.to_enu(lat, lon, 0.0)
            ge, gn = ge + e0 - e, gn + n0 - n
            lat, lon, _ = self.to_geodetic(ge, gn, 0.0)
        return lat, lon

    def linearised(self) -> LinearFrame:
        """This frame to first order at its origin: a fast scalar projection (see :class:`LinearFrame`)."""
        return LinearFrame(self.lat0_deg, self.lon0_deg)


class LinearFrame:
    """A :class:`LocalFrame` linearised at its origin: east/north metres <-> degrees with constant
    scale factors (equirectangular).

    Metres per degree of latitude from the WGS-84 meridian radius of curvature at the origin, per
    degree of longitude from the prime-vertical radius times ``cos(lat0)``: the derivative of the
    exact ENU projection at the origin. Scalar floats, no numpy; the round trip is exact. Against
    the exact frame (see the module notes) the east-west error is second order, about
    ``d^2 tan(lat0) / (2 R)`` northwards at ``d`` metres east (0.04 m at 1 km, 8 m at 15 km at
    25 deg latitude); fine for moving a simulated vehicle, not for comparing with
    :meth:`LocalFrame.to_plane` coordinates.
    """

    __slots__ = ("lat0_deg", "lon0_deg", "m_per_deg_lat", "m_per_deg_lon")

    def __init__(self, lat0_deg: float, lon0_deg: float) -> None:
        self.lat0_deg = lat0_deg
        self.lon0_deg = lon0_deg
        s = math.sin(math.radians(lat0_deg))
        w = math.sqrt(1.0 - WGS84_E2 * s * s)
        meridian_m = WGS84_A_M * (1.0 - WGS84_E2) / w**3
        normal_m = WGS84_A_M / w
        self.m_per_deg_lat = math.radians(1.0) * meridian_m
        """Metres north per degree of latitude at the origin."""
        self.m_per_deg_lon = math.radians(1.0) * normal_m * math.cos(math.radians(lat0_deg))
        """Metres east per degree of longitude at the origin."""

    def to_en(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """(lat_deg, lon_deg) -> (east_m, north_m)."""
        return ((lon_deg - self.lon0_deg) * self.m_per_deg_lon,
                (lat_deg - self.lat0_deg) * self.m_per_deg_lat)

    def to_latlon(self, east_m: float, north_m: float) -> tuple[float, float]:
        """(east_m, north_m) -> (lat_deg, lon_deg); the exact inverse of :meth:`to_en`."""
        return (self.lat0_deg + north_m / self.m_per_deg_lat,
                self.lon0_deg + east_m / self.m_per_deg_lon)


def track_deg(east_m: ArrayLike, north_m: ArrayLike) -> np.ndarray:
    """Direction of a horizontal vector, degrees clockwise from north in ``[0, 360)``."""
    t = np.degrees(np.arctan2(np.asarray(east_m, dtype=float), np.asarray(north_m, dtype=float)))
    return np.mod(t, 360.0)


_WGS84 = pymap3d.Ellipsoid.from_name("wgs84")


def segment_length_track(lat1_deg: ArrayLike, lon1_deg: ArrayLike,
                         lat2_deg: ArrayLike, lon2_deg: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal length (m) and initial track (deg from north) of segments 1 -> 2.

    Track: the end point expressed in an ENU frame tangent at the start point (both at height
    0), ``atan2(east, north)``. Length: the straight-line (ECEF) chord between the two points
    on the ellipsoid, turned into an arc on the ellipsoid's normal section along that track
    (Euler radius at the mid-latitude). Agrees with Vincenty to better than 1e-7 relative up to 300
    km (a few mm over a corridor). Vectorised.
    """
    lat1 = np.asarray(lat1_deg, dtype=float)
    lon1 = np.asarray(lon1_deg, dtype=float)
    lat2 = np.asarray(lat2_deg, dtype=float)
    lon2 = np.asarray(lon2_deg, dtype=float)
    zero = np.zeros(np.broadcast(lat1, lon1, lat2, lon2).shape)
    e, n, _ = pymap3d.geodetic2enu(lat2, lon2, zero, lat1, lon1, zero)
    track = track_deg(e, n)
    x1, y1, z1 = pymap3d.geodetic2ecef(lat1, lon1, zero)
    x2, y2, z2 = pymap3d.geodetic2ecef(lat2, lon2, zero)
    chord = np.sqrt((np.asarray(x2) - x1) ** 2 + (np.asarray(y2) - y1) ** 2 + (np.asarray(z2) - z1) ** 2)
    a, e2 = _WGS84.semimajor_axis, _WGS84.eccentricity**2
    sin_phi = np.sin(np.radians((lat1 + lat2) / 2.0))
    w = 1.0 - e2 * sin_phi**2
    meridian_r = a * (1.0 - e2) / w**1.5
    normal_r = a / np.sqrt(w)
    alpha = np.radians(track)
    radius = 1.0 / (np.cos(alpha) ** 2 / meridian_r + np.sin(alpha) ** 2 / normal_r)
    length = 2.0 * radius * np.arcsin(np.minimum(1.0, chord / (2.0 * radius)))
    return np.asarray(length, dtype=float), track


def distance_m(lat1_deg: ArrayLike, lon1_deg: ArrayLike,
               lat2_deg: ArrayLike, lon2_deg: ArrayLike) -> np.ndarray:
    """Horizontal distance between points (m); see :func:`segment_length_track`."""
    return segment_length_track(lat1_deg, lon1_deg, lat2_deg, lon2_deg)[0]


# --- planar geometry (East-North plane, metres) ---------------------------------------------


def _open_ring(ring: np.ndarray) -> np.ndarray:
    """Drop the closing vertex of a closed ring (GeoJSON rings repeat the first vertex)."""
    ring = np.asarray(ring, dtype=float)
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        return ring[:-1]
    return ring


def polygon_area_m2(ring: np.ndarray) -> float:
    """Unsigned area of a simple polygon ``(M, 2)`` (closed or open ring), shoelace formula."""
    r = _open_ring(ring)
    if len(r) < 3:
        return 0.0
    x, y = r[:, 0], r[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def points_in_polygon(points: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Boolean ``(N,)``: which of ``points`` ``(N, 2)`` lie strictly inside the polygon.

    Even-odd ray casting; points exactly on the boundary may go either way (callers that
    need the boundary to count use :func:`segments_intersect_polygon`).
    """
    pts = np.atleast_2d(np.asarray(points, dtype=float))
    r = _open_ring(ring)
    x1, y1 = r[:, 0], r[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    px = pts[:, 0:1]
    py = pts[:, 1:2]
    straddles = (y1 > py) != (y2 > py)                       # (N, M)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
    crossings = straddles & (px < x_cross)
    return (np.count_nonzero(crossings, axis=1) % 2) == 1


def _orient(ax, ay, bx, by, cx, cy):
    """Twice the signed area of triangle abc (>0 counter-clockwise)."""
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)


def segments_cross(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Whether segments a-b ``(N, 2)`` and c-d ``(M, 2)`` intersect (touching counts): ``(N, M)``."""
    a = np.atleast_2d(np.asarray(a, dtype=float))[:, None, :]
    b = np.atleast_2d(np.asarray(b, dtype=float))[:, None, :]
    c = np.atleast_2d(np.asarray(c, dtype=float))[None, :, :]
    d = np.atleast_2d(np.asarray(d, dtype=float))[None, :, :]
    ax, ay, bx, by = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    cx, cy, dx, dy = c[..., 0], c[..., 1], d[..., 0], d[..., 1]
    o1 = _orient(ax, ay, bx, by, cx, cy)
    o2 = _orient(ax, ay, bx, by, dx, dy)
    o3 = _orient(cx, cy, dx, dy, ax, ay)
    o4 = _orient(cx, cy, dx, dy, bx, by)
    proper = (o1 * o2 <= 0) & (o3 * o4 <= 0)
    collinear = (o1 == 0) & (o2 == 0)
    # Collinear segments intersect only if their bounding boxes overlap.
    overlap = ((np.minimum(ax, bx) <= np.maximum(cx, dx)) & (np.minimum(cx, dx) <= np.maximum(ax, bx))
               & (np.minimum(ay, by) <= np.maximum(cy, dy)) & (np.minimum(cy, dy) <= np.maximum(ay, by)))
    return proper & (~collinear | overlap)


def segments_intersect_polygon(a: np.ndarray, b: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Boolean ``(N,)``: which segments a-b (``(N, 2)`` each) enter the polygon.

    True when the segment crosses or touches the polygon's boundary or lies inside it.
    """
    a = np.atleast_2d(np.asarray(a, dtype=float))
    b = np.atleast_2d(np.asarray(b, dtype=float))
    if len(a) == 0:
        return np.zeros(0, dtype=bool)
    r = _open_ring(ring)
    edges_from, edges_to = r, np.roll(r, -1, axis=0)
    hits = segments_cross(a, b, edges_from, edges_to).any(axis=1)
    return hits | points_in_polygon(a, r)


def ring_self_intersects(ring: np.ndarray) -> bool:
    """Whether a polygon ring crosses itself (non-adjacent edges intersect)."""
    r = _open_ring(ring)
    m = len(r)
    if m < 4:
        return False
    p, q = r, np.roll(r, -1, axis=0)
    cross = segments_cross(p, q, p, q)
    i, j = np.triu_indices(m, k=2)
    adjacent = (i == 0) & (j == m - 1)
    return bool(cross[i[~adjacent], j[~adjacent]].any())


def convex_hull_area_m2(points: np.ndarray) -> float:
    """Area (m2) of the convex hull of ``(N, 2)`` points; 0 for fewer than 3 or collinear points."""
    pts = np.unique(np.atleast_2d(np.asarray(points, dtype=float)), axis=0)
    if len(pts) < 3:
        return 0.0
    from scipy.spatial import ConvexHull, QhullError

    try:
        return float(ConvexHull(pts).volume)   # in 2-D, "volume" is the area
    except QhullError:
        return 0.0
