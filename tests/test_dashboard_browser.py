"""End to end in headless Debian Chromium (the system browser ``/usr/bin/chromium``, driven by
Playwright for Python; no browser is downloaded): real Mosquitto with the example ACL, the real
fleet service flying simulated vehicles, the dashboard as station account ``station-S01``. The
page must show the drones, book an order and show its ETA, show the drone moving, show a
rejection's reason, flag an offline service and a lost browser connection, and recover.
Screenshots go to ``test-artifacts/dashboard/``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# The dashboard is built on the fleet service's MQTT layer and the shared broker harness.
pytest.importorskip("droneops.fleet.mqtt", reason="droneops.fleet.mqtt (fleet service MQTT layer) is not in this checkout")
pytest.importorskip("mqtt_broker", reason="tests/mqtt_broker.py (Mosquitto harness) is not in this checkout")

from dashboard_client import running_dashboard
from dashboard_fleet import real_fleet, running_service
from droneops.formats.geojson import load_network, parse_network
from mqtt_broker import free_port

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="/usr/bin/chromium is missing: the browser tests drive the system Chromium "
                              "through Playwright and download no browser (./run-tests installs Debian's "
                              "chromium with apt-get)"),
]
VIEWPORT = {"width": 1400, "height": 900}


class Page:
    """A Playwright page plus the page's own errors (uncaught exceptions, console.error)."""

    def __init__(self, page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error"
                and not msg.text.startswith("Failed to load resource") else None)

    async def evaluate(self, expression: str):
        return await self.page.evaluate(expression)

    async def wait_for(self, expression: str, timeout_s: float = 20.0):
        """Wait until the JS ``expression`` is truthy; return its value."""
        try:
            handle = await self.page.wait_for_function(expression, polling=100, timeout=timeout_s * 1000)
        except Exception as exc:  # playwright's TimeoutError: say what was awaited, and the page's errors
            raise AssertionError(f"page never satisfied {expression!r} in {timeout_s:g} s; "
                                 f"page errors: {self.errors[-5:]}") from exc
        return await handle.json_value()

    async def screenshot(self, path: Path) -> None:
        await self.page.screenshot(path=str(path))


@pytest.fixture
async def browser():
    """Headless system Chromium through Playwright (one per test)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                            args=["--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            await chromium.close()


async def new_page(browser, url: str) -> Page:
    page = Page(await browser.new_page(viewport=VIEWPORT))
    await page.page.goto(url)
    return page


def dashboard_on(broker, network, port: int, **kw):
    """The dashboard on a fixed ``port`` (the page reconnects to it across restarts), 1 s heartbeat."""
    return running_dashboard(broker, network, listen_port=port, heartbeat_s=1.0, **kw)


DRONE_POSITIONS = """JSON.stringify(Object.fromEntries([...document.querySelectorAll('#layer-drones .drone')]
    .map(g => [g.dataset.id, g.getAttribute('transform').split(' scale')[0]])))"""
BANNERS = "[...document.querySelectorAll('#banners .banner')].map(b => b.textContent).join(' | ')"


async def book(page: Page, to: str, kg: float) -> str:
    await page.evaluate(f"""(() => {{
        const f = document.getElementById('book-form');
        document.getElementById('book-to').value = {json.dumps(to)};
        document.getElementById('book-kg').value = {json.dumps(str(kg))};
        document.getElementById('book-to').dispatchEvent(new Event('change'));
        f.requestSubmit();
    }})()""")
    return await page.wait_for("(t => t.startsWith('Order') || t.startsWith('Not booked') ? t : '')"
                               "(document.getElementById('book-result').textContent)", timeout_s=20)


HUADU_HOMES = {"V001": "depot", "V002": "shiling", "V003": "chini", "V004": "tanbu"}


async def test_page_end_to_end_on_huadu(mosquitto, tmp_path, make_sim_vehicle, browser):
    """Four simulated vehicles flown by the real service on the Huadu network; also the page's
    own connection dropping and coming back (the dashboard restarted on the same port)."""
    network = load_network("huadu")
    port = free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    n = len(HUADU_HOMES)
    async with real_fleet(mosquitto, tmp_path, make_sim_vehicle, network, HUADU_HOMES) as fleet:
        async with dashboard_on(mosquitto, network, port, station="shiling") as url:
            page = await new_page(browser, url + "?stats")
            await page.wait_for(f"document.querySelectorAll('#layer-drones .drone').length === {n}")
            await page.wait_for("document.getElementById('link-pill').textContent === 'page: live'")
            assert "service: online" in await page.evaluate("document.getElementById('service-pill').textContent")
            await page.screenshot(ARTIFACTS / "1-live.png")

            # booking: accepted with an ETA, the order row appears with a countdown
            text = await book(page, "P05", 1.0)
            assert "accepted" in text and "ETA" in text, text
            order_id = text.split()[1]
            row = f"document.querySelector('#orders-body tr[data-id=\"{order_id}\"]')"
            eta = await page.wait_for(f"(r => r && r.querySelector('td.eta').textContent)({row})")
            assert ":" in eta or eta == "due", eta
            await page.wait_for(f"!!document.querySelector('#layer-routes polyline[data-order=\"{order_id}\"]')")
            await page.screenshot(ARTIFACTS / "3-booked.png")

            # the drone flies: its position on the map differs between two screenshots
            await page.wait_for(f"(r => r && r.textContent.includes('in_flight'))({row})", timeout_s=60)
            flying = fleet.service.store.get_order(order_id).vehicle_id
            first = json.loads(await page.evaluate(DRONE_POSITIONS))
            await page.wait_for(f"JSON.parse({DRONE_POSITIONS})[{json.dumps(flying)}] !== "
                                f"{json.dumps(first[flying])}", timeout_s=20)
            second = json.loads(await page.evaluate(DRONE_POSITIONS))
            await page.screenshot(ARTIFACTS / "2-live-later.png")
            assert first[flying] != second[flying], (first, second)

            # rejection: the service's reason is shown
            text = await book(page, "P06", 9.0)
            assert text.startswith("Not booked") and "2.5 kg" in text, text

            # the fleet service goes offline: banner, pill, every drone greyed
            await fleet.stop()
            banner = await page.wait_for(f"(t => t.includes('Fleet service OFFLINE') ? t : '')({BANNERS})")
            assert "bookings are not possible" in banner
            await page.wait_for("[...document.querySelectorAll('#layer-drones .drone')].every(g => g.classList.contains('stale'))")
            await page.screenshot(ARTIFACTS / "4-service-offline.png")

        # the dashboard itself goes away: the page says its connection dropped
        await page.wait_for(f"(t => t.includes('Connection to the dashboard lost') ? t : '')({BANNERS})",
                            timeout_s=15)
        assert await page.evaluate("document.getElementById('link-pill').textContent") == "page: reconnecting"
        await page.screenshot(ARTIFACTS / "5-dashboard-connection-lost.png")

        # ... and recovers on its own when the dashboard is back
        async with dashboard_on(mosquitto, network, port, station="shiling"):
            await page.wait_for("document.getElementById('link-pill').textContent === 'page: live'", timeout_s=20)
            await page.wait_for(f"!({BANNERS}).includes('Connection to the dashboard lost')")
            stats = await page.evaluate("JSON.stringify({lags: window.__dash.stats.lags, frames: window.__dash.stats.frames})")
        assert page.errors == [], page.errors
        stats = json.loads(stats)
        (ARTIFACTS / "browser-stats.json").write_text(json.dumps({
            "vehicles": n, "lag_samples": len(stats["lags"]),
            "lag_ms_median": sorted(stats["lags"])[len(stats["lags"]) // 2] if stats["lags"] else None,
            "frames": len(stats["frames"])}, indent=2))


async def test_page_with_real_service_and_simulated_vehicles(mosquitto, tmp_path, make_sim_vehicle, browser):
    """The real chain: page -> dashboard -> Mosquitto -> droneops.fleet.service -> simulated PX4
    vehicles (MAVLink), and back. Station ``S`` (a swap station) watches a delivery from S."""
    from droneops.formats.vehicle_toml import load_vehicle
    from service_fixtures import network_geojson

    net = parse_network(network_geojson(), source="service-test")
    speed = 30.0
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=speed, system_id=1)
    v2 = await make_sim_vehicle(network=net, node="S", speed_factor=speed, system_id=2)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with dashboard_on(mosquitto, net, free_port(), station="S") as url:
        page = await new_page(browser, url)
        async with running_service(mosquitto, tmp_path, [("v1", v1, "D"), ("v2", v2, "S")], net,
                                   load_vehicle("quad7"), time_scale=speed) as svc:
            await page.wait_for("document.querySelectorAll('#layer-drones .drone').length === 2")
            await page.wait_for("document.getElementById('service-pill').textContent === 'service: online'")

            text = await book(page, "P2", 1.5)
            assert "accepted" in text and "ETA" in text, text
            order_id = text.split()[1]
            row = f"document.querySelector('#orders-body tr[data-id=\"{order_id}\"]')"
            eta = await page.wait_for(f"(r => r && r.querySelector('td.eta').textContent)({row})")
            assert ":" in eta or eta == "due", eta
            # inbound to S (the drone lands back here) with a countdown; its route on the map
            await page.wait_for(f"!!document.querySelector('#inbound-list li[data-id=\"{order_id}\"]')")
            await page.wait_for(f"!!document.querySelector('#layer-routes polyline[data-order=\"{order_id}\"]')")
            # the drone takes off and moves between two screenshots
            await page.wait_for(f"(r => r && r.textContent.includes('in_flight'))({row})", timeout_s=60)
            flying = svc.store.get_order(order_id).vehicle_id
            first = json.loads(await page.evaluate(DRONE_POSITIONS))
            await page.screenshot(ARTIFACTS / "real-1-in-flight.png")
            await page.wait_for(f"JSON.parse({DRONE_POSITIONS})[{json.dumps(flying)}] !== "
                                f"{json.dumps(first[flying])}", timeout_s=20)
            second = json.loads(await page.evaluate(DRONE_POSITIONS))
            await page.screenshot(ARTIFACTS / "real-2-in-flight-later.png")
            assert first[flying] != second[flying], (first, second)

            # the planner refuses an unreachable pad: its reason is on the page
            text = await book(page, "FAR", 1.0)
            assert text.startswith("Not booked") and "unreachable" in text, text

        # the service stopped (a clean shutdown publishes "offline", as its last will would)
        await page.wait_for(f"(t => t.includes('Fleet service OFFLINE') ? t : '')({BANNERS})")
        await page.wait_for("[...document.querySelectorAll('#layer-drones .drone')].every(g => g.classList.contains('stale'))")
        await page.screenshot(ARTIFACTS / "real-3-service-offline.png")
        assert page.errors == [], page.errors
