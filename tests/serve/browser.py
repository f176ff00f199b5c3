"""A real headless Chromium (Debian's ``chromium``) driven over the Chrome DevTools protocol.

Chromium is started with ``--remote-debugging-port=0`` and a fresh profile; it writes the port
it chose into the profile's ``DevToolsActivePort``. The page's target is reached over one
websocket (websocket-client) and driven with ``Runtime.evaluate`` (type, click, read the DOM)
and ``Page.captureScreenshot``. Nothing is downloaded.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from typing import Any

__all__ = ["CHROMIUM", "Browser"]

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--remote-debugging-port=0"]  # fmt: skip


class Browser:
    def __init__(self, profile: str, *, width: int = 1100, height: int = 700, timeout: float = 60.0) -> None:
        import websocket

        assert CHROMIUM is not None
        os.makedirs(profile, exist_ok=True)
        port_file = os.path.join(profile, "DevToolsActivePort")
        if os.path.exists(port_file):  # an earlier browser's
            os.remove(port_file)
        command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ws = None
        try:
            deadline = time.monotonic() + timeout
            while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"chromium did not start its DevTools endpoint (exit {self.proc.poll()})")
                time.sleep(0.2)
            port = int(open(port_file).read().split()[0])
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            page = next(t for t in targets if t["type"] == "page")
            self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
            self.ids = itertools.count(1)
            self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        call = next(self.ids)
        self.ws.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:  # events until our answer
            message = json.loads(self.ws.recv())
            if message.get("id") == call:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 60.0) -> Any:
        """The value of ``expression`` once it is truthy (polled)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} stayed falsy for {timeout:.0f} s")
            time.sleep(0.2)

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def screenshot(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.send("Browser.close")
            except Exception:
                pass
            self.ws.close()
            self.ws = None
        elif self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
