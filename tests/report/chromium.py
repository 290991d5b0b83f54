"""Headless Chromium for the report page's tests, driven through chromedriver's WebDriver HTTP
interface with urllib (no selenium): open a file:// page, run scripts in it, read its console.
Debian's chromium and chromium-driver (.ci/run installs them); without them the tests skip."""
import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = ("headless Chromium is not installed (.ci/run installs Debian's chromium and "
           "chromium-driver), so the report page's browser tests are skipped")
ARGUMENTS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--hide-scrollbars"]


def require_chromium():
    """Skip the calling test module, with one line saying why, where Chromium or its driver
    is missing."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(MISSING, allow_module_level=True)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Browser:
    """One chromedriver process and one headless Chromium session on 127.0.0.1."""

    def __init__(self, width=1280, height=900, scripts=True):
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen([CHROMEDRIVER, f"--port={port}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.wait_ready()
            options = {"binary": CHROMIUM, "args": ARGUMENTS + [f"--window-size={width},{height}"]}
            if not scripts:  # the page's scripts off, as a user's setting would; the test's run
                options["prefs"] = {"profile.managed_default_content_settings.javascript": 2}
            self.session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": {
                "browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
                "goog:chromeOptions": options}}})["sessionId"]
        except BaseException:
            self.process.kill()
            self.process.wait(10)
            raise

    def wait_ready(self, seconds=30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if self.call("GET", "/status")["ready"]:
                    return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise RuntimeError(f"chromedriver did not answer within {seconds} s")

    def call(self, method, path, body=None):
        request = urllib.request.Request(
            self.base + path, method=method, headers={"Content-Type": "application/json"},
            data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def open(self, path):
        self.call("POST", f"/session/{self.session}/url", {"url": path.resolve().as_uri()})

    def run(self, script, *args):
        """The value of a script's `return`, run in the page."""
        return self.call("POST", f"/session/{self.session}/execute/sync",
                         {"script": script, "args": list(args)})

    def wait_for(self, script, *args, seconds=20):
        """The first truthy value the script returns, polled until `seconds` have passed."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.run(script, *args)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"still false after {seconds} s: {script}")

    def console(self):
        """The browser console's entries since the last call: {level, message, source}."""
        return self.call("POST", f"/session/{self.session}/se/log", {"type": "browser"})

    def screenshot(self, path):
        path.write_bytes(base64.b64decode(self.call("GET",
                                                    f"/session/{self.session}/screenshot")))

    def close(self):
        try:
            self.call("DELETE", f"/session/{self.session}")
        finally:
            self.process.terminate()
            self.process.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
