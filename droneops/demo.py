"""Moved: ``droneops demo`` lives in :mod:`droneops.cli.demo` (runner) and
:mod:`droneops.cli.demo_view` (live view and summary table)."""

# TEMP re-export (issue 9 integration): callers move to droneops.cli.demo / droneops.cli.demo_view.
from droneops.cli.demo import (  # noqa: F401
    BrokerAddress,
    DemoOptions,
    free_tcp_port,
    free_udp_block,
    parse_broker,
    pick_orders,
    run_demo,
)
from droneops.cli.demo_view import FleetView, LiveDisplay, summary_table  # noqa: F401
