"""A headless Chromium driven through the DevTools protocol over a pipe, with the standard library only.

Chromium's `--remote-debugging-pipe` reads JSON commands from file descriptor 3 and writes replies
and events to descriptor 4, each message ended by a NUL byte. That is enough to open a page, run
JavaScript in it after its own scripts ran, and take screenshots, as a user's browser would show it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The path of an installed Chromium (or Chrome), None when there is none."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, binary: str, profile: Path, width: int = 1400, height: int = 900, timeout: float = 60) -> None:
        self.timeout = timeout
        to_child, self._to_browser = os.pipe()
        self._from_browser, from_child = os.pipe()
        # far from 3 and 4, so that moving them onto 3 and 4 in the child cannot clobber each other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in (to_child, from_child)]
        os.close(to_child), os.close(from_child)

        def child_fds() -> None:
            os.dup2(high[0], 3), os.dup2(high[1], 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                 "about:blank"]
        self.proc = subprocess.Popen([binary, *flags], pass_fds=(3, 4), preexec_fn=child_fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(high[0]), os.close(high[1])
        self._buffer, self._next_id, self.session = b"", 0, None
        target = self.call("Target.createTarget", {"url": "about:blank"}, page=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, page=False)["sessionId"]
        self.call("Page.enable")

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise BrowserError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise BrowserError(f"Chromium closed the pipe (exit status {self.proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, page: bool = True) -> dict:
        """Send one DevTools command (to the page's session unless `page` is False); its result."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if page:
            msg["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def open(self, url: str) -> None:
        """Navigate the page to `url` and wait until the document has loaded."""
        self.call("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression evaluated in the page."""
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression[:80]}...: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None):
        """Evaluate `expression` until its value is truthy (the page renders asynchronously); that value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for: {expression[:120]}")
            time.sleep(0.1)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the visible page."""
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.call("Browser.close", page=False)
                self.proc.wait(timeout=10)
        except (BrowserError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._to_browser), os.close(self._from_browser)
