"""Tests for droneops.core.geo: pymap3d-based frames, distances, tracks, planar geometry."""

from __future__ import annotations

import math

import numpy as np
import pymap3d.vincenty as vincenty
import pytest

from droneops.core import geo

EARTH_MEAN_RADIUS_M = 6_371_008.8


def haversine_m(lat1, lon1, lat2, lon2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_MEAN_RADIUS_M * math.asin(math.sqrt(a))


# --- frames ---------------------------------------------------------------------------------


def test_frame_origin_maps_to_zero():
    f = geo.LocalFrame(23.4, 113.22, 15.0)
    e, n, u = f.to_enu(23.4, 113.22, 15.0)
    assert abs(e) < 1e-6 and abs(n) < 1e-6 and abs(u) < 1e-6


def test_frame_round_trip_vectorised():
    rng = np.random.default_rng(0)
    f = geo.LocalFrame(23.4, 113.22)
    lat = 23.4 + rng.uniform(-0.2, 0.2, 500)
    lon = 113.22 + rng.uniform(-0.2, 0.2, 500)
    alt = rng.uniform(0, 2000, 500)
    e, n, u = f.to_enu(lat, lon, alt)
    assert e.shape == (500,)
    lat2, lon2, alt2 = f.to_geodetic(e, n, u)
    np.testing.assert_allclose(lat2, lat, atol=1e-9)
    np.testing.assert_allclose(lon2, lon, atol=1e-9)
    np.testing.assert_allclose(alt2, alt, atol=1e-4)


def test_frame_axes_point_east_and_north():
    f = geo.LocalFrame(10.0, 20.0)
    e, n, _ = f.to_enu(10.01, 20.0)
    assert n > 1000 and abs(e) < 1e-6
    e, n, _ = f.to_enu(10.0, 20.01)
    assert e > 1000 and abs(n) < 1.0


def test_plane_round_trip_and_distance():
    f = geo.LocalFrame(23.4, 113.22)
    lat, lon = f.from_plane(np.array([[0.0, 1000.0], [2500.0, -300.0]]))
    back = f.to_plane(lat, lon)
    np.testing.assert_allclose(back, [[0.0, 1000.0], [2500.0, -300.0]], atol=1e-6)
    assert geo.distance_m(23.4, 113.22, lat[0], lon[0]) == pytest.approx(1000.0, abs=0.01)


def test_centred_on_uses_centroid_and_handles_antimeridian():
    f = geo.LocalFrame.centred_on([10.0, 12.0], [179.9, -179.9])
    assert f.lat0_deg == pytest.approx(11.0)
    assert abs(abs(f.lon0_deg) - 180.0) < 1e-6


# --- distances and tracks -------------------------------------------------------------------


def test_one_degree_of_latitude_at_equator():
    d = float(geo.distance_m(0.0, 0.0, 1.0, 0.0))
    assert d == pytest.approx(110_574.4, abs=1.0)     # WGS-84 meridian arc, 0..1 deg
    assert d == pytest.approx(110_600, rel=2e-3)


def test_distance_agrees_with_haversine_and_vincenty():
    rng = np.random.default_rng(1)
    for _ in range(50):
        lat1, lon1 = rng.uniform(-60, 60), rng.uniform(-180, 180)
        dist, az = rng.uniform(50, 100_000), rng.uniform(0, 360)
        lat2, lon2 = vincenty.vreckon(lat1, lon1, dist, az)
        length, track = geo.segment_length_track(lat1, lon1, lat2, lon2)
        assert float(length) == pytest.approx(dist, rel=1e-7)
        assert abs((float(track) - az + 180) % 360 - 180) < 1e-4
        # spherical haversine is within its ~0.5% ellipsoid error
        assert haversine_m(lat1, lon1, float(lat2), float(lon2)) == pytest.approx(dist, rel=6e-3)


def test_segment_length_track_is_vectorised():
    lat1 = np.array([23.0, 23.0, 23.0, 23.0])
    lon1 = np.array([113.0, 113.0, 113.0, 113.0])
    d = 0.01
    lat2 = lat1 + np.array([d, 0, -d, 0])
    lon2 = lon1 + np.array([0, d, 0, -d])
    length, track = geo.segment_length_track(lat1, lon1, lat2, lon2)
    assert length.shape == (4,)
    np.testing.assert_allclose(track, [0.0, 90.0, 180.0, 270.0], atol=0.01)
    assert length[0] == pytest.approx(length[2], rel=1e-3)
    assert length[1] == pytest.approx(1024.0, rel=2e-3)   # 0.01 deg lon at 23 N


@pytest.mark.parametrize("east,north,expected", [
    (0.0, 1.0, 0.0), (1.0, 0.0, 90.0), (0.0, -1.0, 180.0), (-1.0, 0.0, 270.0),
    (1.0, 1.0, 45.0), (-1.0, 1.0, 315.0),
])
def test_track_deg_clockwise_from_north(east, north, expected):
    assert float(geo.track_deg(east, north)) == pytest.approx(expected)


def test_reverse_track_is_opposite():
    _, t1 = geo.segment_length_track(23.1, 102.7, 23.15, 102.76)
    _, t2 = geo.segment_length_track(23.15, 102.76, 23.1, 102.7)
    assert abs(((float(t2) - float(t1)) % 360) - 180) < 0.05


# --- planar geometry ------------------------------------------------------------------------

SQUARE = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], dtype=float)
# A "U" shape: concave, with a notch between x=3..7 above y=3
U_SHAPE = np.array([[0, 0], [10, 0], [10, 10], [7, 10], [7, 3], [3, 3], [3, 10], [0, 10], [0, 0]], dtype=float)


def test_points_in_polygon():
    pts = np.array([[5, 5], [15, 5], [-1, -1], [9.9, 0.1]])
    assert geo.points_in_polygon(pts, SQUARE).tolist() == [True, False, False, True]
    assert geo.points_in_polygon(np.array([[5, 5], [1, 5]]), U_SHAPE).tolist() == [False, True]


@pytest.mark.parametrize("a,b,expected,case", [
    ((-5, 5), (15, 5), True, "crosses through"),
    ((2, 2), (8, 8), True, "fully inside"),
    ((5, 5), (20, 20), True, "starts inside"),
    ((-5, -5), (-1, 20), False, "outside, parallel"),
    ((-5, 0), (0, -5), False, "misses the corner"),
    ((-5, 5), (0, 10), True, "touches a vertex"),
    ((-5, 10), (20, 10), True, "runs along an edge"),
    ((11, 0), (11, 10), False, "parallel just outside"),
    ((12, 0), (20, 0), False, "collinear with an edge, no overlap"),
])
def test_segment_vs_square(a, b, expected, case):
    hit = geo.segments_intersect_polygon(np.array([a], float), np.array([b], float), SQUARE)
    assert hit.tolist() == [expected], case


def test_segment_through_concave_notch_is_clear():
    a = np.array([[5, 12], [5, 12], [1, 12]], float)
    b = np.array([[5, 4], [5, 2], [1, 9]], float)
    assert geo.segments_intersect_polygon(a, b, U_SHAPE).tolist() == [False, True, True]


def test_segments_intersect_polygon_empty_input():
    assert geo.segments_intersect_polygon(np.zeros((0, 2)), np.zeros((0, 2)), SQUARE).shape == (0,)


def test_polygon_area_and_self_intersection():
    assert geo.polygon_area_m2(SQUARE) == pytest.approx(100.0)
    assert geo.polygon_area_m2(SQUARE[:-1]) == pytest.approx(100.0)      # open ring too
    assert geo.polygon_area_m2(U_SHAPE) == pytest.approx(100.0 - 4 * 7)
    bow_tie = np.array([[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]], float)
    assert geo.ring_self_intersects(bow_tie)
    assert not geo.ring_self_intersects(SQUARE)
    assert not geo.ring_self_intersects(U_SHAPE)


def test_convex_hull_area():
    pts = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [5, 5]], float)
    assert geo.convex_hull_area_m2(pts) == pytest.approx(100.0)
    assert geo.convex_hull_area_m2(np.array([[0, 0], [1, 1], [2, 2]], float)) == 0.0
    assert geo.convex_hull_area_m2(np.array([[0, 0]], float)) == 0.0
