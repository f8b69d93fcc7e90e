"""A tiny Chrome DevTools Protocol driver for the dashboard's browser test and bench.

Starts the SYSTEM Chromium (``/usr/bin/chromium``, never a downloaded browser) headless with a
fresh profile and ``--remote-debugging-port=0``, reads the chosen port from the profile's
``DevToolsActivePort`` file, opens a page target and talks to it over the aiohttp WebSocket
client (no extra dependency). Only what the tests need: navigate, evaluate, wait for a JS
condition, screenshot, and the page's console errors.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars"]


def find_chromium() -> str | None:
    for path in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or ""):
        if path and os.access(path, os.X_OK):
            return path
    return None


class CdpError(RuntimeError):
    pass


class Page:
    """One page target over its own WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.console: list[str] = []
        self.errors: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    if "error" in data:
                        fut.set_exception(CdpError(str(data["error"])))
                    else:
                        fut.set_result(data.get("result", {}))
            elif data.get("method") == "Runtime.exceptionThrown":
                d = data["params"]["exceptionDetails"]
                self.errors.append(str(d.get("exception", {}).get("description") or d.get("text")))
            elif data.get("method") == "Runtime.consoleAPICalled":
                p = data["params"]
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                self.console.append(f"{p.get('type')}: {text}")
                if p.get("type") == "error":
                    self.errors.append(text)

    async def send(self, method: str, timeout_s: float = 30.0, **params) -> dict:
        i = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[i] = fut
        await self.ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
        return await asyncio.wait_for(fut, timeout_s)

    async def evaluate(self, expression: str, *, await_promise: bool = False):
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                            awaitPromise=await_promise)
        if "exceptionDetails" in r:
            raise CdpError(f"{expression!r} threw: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout_s: float = 20.0, poll_s: float = 0.1):
        """Poll a JS expression until it is truthy; return its value. Fails with the last value."""
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            try:
                value = await self.evaluate(expression)
            except CdpError as exc:  # page not loaded yet, or the expression's objects not there yet
                value = f"<{exc}>"
                await asyncio.sleep(poll_s)
                continue
            if value:
                return value
            await asyncio.sleep(poll_s)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {expression!r} (last value {value!r}); "
                             f"page errors: {self.errors[-5:]}")

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def screenshot(self, path: str | Path) -> Path:
        r = await self.send("Page.captureScreenshot", format="png")
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(base64.b64decode(r["data"]))
        return p

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self.ws.close()


class Chromium:
    """``async with Chromium(width=1400, height=900) as browser: page = await browser.new_page(url)``."""

    def __init__(self, width: int = 1400, height: int = 900, binary: str | None = None) -> None:
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
        self.width, self.height = width, height
        self.proc: subprocess.Popen | None = None
        self.profile: str | None = None
        self.session: aiohttp.ClientSession | None = None
        self.port = 0
        self.pages: list[Page] = []

    async def __aenter__(self) -> Chromium:
        self.profile = tempfile.mkdtemp(prefix="droneops-chromium-")
        self.proc = subprocess.Popen(
            [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited at start with code {self.proc.returncode}")
            if port_file.exists():
                text = port_file.read_text().split()
                if text:
                    self.port = int(text[0])
                    break
            await asyncio.sleep(0.05)
        else:
            await self.close()
            raise RuntimeError("chromium did not open its DevTools port in 30 s")
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def new_page(self, url: str = "about:blank") -> Page:
        assert self.session is not None
        async with self.session.put(f"http://127.0.0.1:{self.port}/json/new?about:blank") as r:
            target = await r.json(content_type=None)
        ws = await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024)
        page = Page(ws)
        self.pages.append(page)
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        await page.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                        deviceScaleFactor=1, mobile=False)
        if url != "about:blank":
            await page.navigate(url)
        return page

    async def close(self) -> None:
        for page in self.pages:
            with contextlib.suppress(Exception):
                await page.close()
        self.pages.clear()
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None
