"""Hypothesis strategies for MALFORMED fleet commands (every example must be rejected).

Shared by the pure validation fuzz (tests/test_telemetry.py) and the over-the-broker fuzz
against the running service (tests/test_service.py).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PADS = ("P01", "P02", "P03")
ORIGINS = ("depot", "S01")
VEHICLES = ("v1", "v2")
MAX_PAYLOAD_KG = 2.5

VALID_ORDER = {"to": "P01", "payload_kg": 1.0, "priority": 5, "order_id": "o-1", "from": "depot"}

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=10)

bad_ids = st.one_of(
    st.just(""), st.just("a/b"), st.just("P01/#"), st.just("+"), st.just("x" * 65),
    st.just("-lead"), st.just("sp ace"), st.just("nul\x00"), st.just("é"),
    st.text(min_size=1, max_size=10).filter(lambda s: not s.isascii() or "/" in s or " " in s),
)
wrong_types = st.one_of(st.none(), st.booleans(), st.lists(json_scalars, max_size=2),
                        st.dictionaries(st.text(max_size=3), json_scalars, max_size=2))


def _encode(obj) -> bytes:
    return json.dumps(obj).encode()


@st.composite
def mutated_order(draw) -> bytes:
    """A valid order broken in exactly one way."""
    obj = dict(VALID_ORDER)
    how = draw(st.sampled_from(["drop_to", "drop_mass", "unknown", "to_type", "to_id", "to_unknown",
                                "mass_type", "mass_range", "prio_type", "prio_range", "oid",
                                "from_unknown", "from_id"]))
    if how == "drop_to":
        del obj["to"]
    elif how == "drop_mass":
        del obj["payload_kg"]
    elif how == "unknown":
        key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in VALID_ORDER))
        obj[key] = draw(json_values)
    elif how == "to_type":
        obj["to"] = draw(st.one_of(wrong_types, st.integers(), st.floats(allow_nan=False)))
    elif how == "to_id":
        obj["to"] = draw(bad_ids)
    elif how == "to_unknown":
        obj["to"] = draw(st.sampled_from(["P99", "depot", "S01", "Q01"]))
    elif how == "mass_type":
        obj["payload_kg"] = draw(st.one_of(wrong_types, st.text(max_size=5)))
    elif how == "mass_range":
        obj["payload_kg"] = draw(st.one_of(st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
                                           st.floats(min_value=MAX_PAYLOAD_KG + 1e-6, allow_nan=False,
                                                     allow_infinity=False),
                                           st.integers(min_value=3)))
    elif how == "prio_type":
        obj["priority"] = draw(st.one_of(wrong_types, st.text(max_size=5), st.floats(0.1, 0.9)))
    elif how == "prio_range":
        obj["priority"] = draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=10)))
    elif how == "oid":
        obj["order_id"] = draw(st.one_of(bad_ids, wrong_types, st.integers()))
    elif how == "from_unknown":
        obj["from"] = draw(st.sampled_from(["P01", "nowhere", "S99"]))
    elif how == "from_id":
        obj["from"] = draw(st.one_of(bad_ids, wrong_types))
    return _encode(obj)


raw_garbage = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=4097, max_size=6000),                       # too large
    st.text(max_size=100).map(lambda s: s.encode("utf-8")),        # mostly not JSON
    json_values.filter(lambda v: not isinstance(v, dict)).map(_encode),   # JSON, not an object
    st.dictionaries(st.text(max_size=10), json_values, max_size=6)
      .filter(lambda d: not {"to", "payload_kg"} <= set(d)).map(_encode),  # missing fields
    st.sampled_from([b"", b"   ", b"{", b"NaN", b'{"to": "P01", "payload_kg": NaN}',
                     b'{"to": "P01", "payload_kg": Infinity}', b'{"to":"P01","to":"P02","payload_kg":1}',
                     b"[" * 3000 + b"]" * 3000, b'{"to": "P01", "payload_kg": 1e999}',
                     b"\xff\xfe{}", b'{"to": "P01\xed\xa0\x80", "payload_kg": 1}',
                     b'{"to": "P01", "payload_kg": 1}' + b" " * 5000]),
)

malformed_order = st.one_of(raw_garbage, mutated_order())


@st.composite
def malformed_vehicle(draw) -> tuple[str, bytes]:
    """(vehicle_id in the topic, payload), one of them wrong."""
    if draw(st.booleans()):
        vid = draw(st.one_of(st.sampled_from(["v9", "nobody"]), bad_ids.filter(lambda s: "/" not in s and "+" not in s and "#" not in s and "\x00" not in s)))
        payload = _encode({"action": "abort"})
    else:
        vid = draw(st.sampled_from(VEHICLES))
        payload = draw(st.one_of(
            raw_garbage,
            st.builds(lambda a: _encode({"action": a}),
                      st.one_of(st.text(max_size=10).filter(lambda a: a not in ("abort", "return", "pause", "resume", "land")),
                                wrong_types, st.integers())),
            st.builds(lambda k: _encode({"action": "abort", k: 1}),
                      st.text(min_size=1, max_size=8).filter(lambda k: k != "action")),
        ))
    return vid, payload


def draw_examples(strategy, n: int) -> list:
    """n examples of a Hypothesis strategy (deterministic), to send over the broker."""
    out: list = []

    @settings(max_examples=n, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(x):
        out.append(x)

    collect()
    return out
