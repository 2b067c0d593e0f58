"""Screenshots of each role's main portal page on the demo centre, for the README.

    .venv/bin/python scripts/portal_screenshots.py docs/screenshots

Runs `aisc demo --no-serve` into a temporary home, serves that centre with `aisc serve`, and
signs in as each demo user in Debian's chromium (playwright).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from aisc.demo import DEMO_PASSWORD

AISC = [sys.executable, "-m", "aisc.cli.main"]
PAGES = [  # file, email, path
    ("applicant", "mei.chan@harbour-u.example", "/org"),
    ("applicant-allocation", "mei.chan@harbour-u.example", "/allocations/1"),
    ("applicant-jobs", "mei.chan@harbour-u.example", "/jobs"),
    ("reviewer", "ben.yip@panel.example", "/review"),
    ("operator", "operator@aisc.example", "/ops"),
    ("operator-decision", "operator@aisc.example", "/ops/applications/5"),
    ("funder", "auditor@itc.example", "/fund"),
]
PHONE = [("applicant-phone", "mei.chan@harbour-u.example", "/org")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "demo"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AISC_")}
        subprocess.run([*AISC, "demo", "--no-serve", "--home", str(home)], env=env, check=True)
        port = free_port()
        server = subprocess.Popen(
            [*AISC, "serve", "--port", str(port)],
            env={**env, "AISC_HOME": str(home), "AISC_DETECT_GPUS": "0"},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    if httpx.get(f"{url}/api/v1/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            shoot(url, out)
        finally:
            server.terminate()
            server.wait(timeout=30)


def shoot(url: str, out: Path) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        for pages, viewport in ((PAGES, (1280, 860)), (PHONE, (390, 844))):
            for name, email, path in pages:
                context = browser.new_context(
                    viewport={"width": viewport[0], "height": viewport[1]}
                )
                page = context.new_page()
                page.goto(f"{url}/login")
                page.fill("#email", email)
                page.fill("#password", DEMO_PASSWORD)
                page.click("button:has-text('Sign in')")
                page.wait_for_load_state()
                page.goto(url + path)
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                context.close()
                print(f"{out / name}.png")
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
