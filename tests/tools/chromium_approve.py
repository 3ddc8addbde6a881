"""A BROWSER command for tests: opens the URL in a real headless Chromium and clicks Approve (or Deny).

Usage: BROWSER="python tests/tools/chromium_approve.py %s" — the decision comes from CHROMIUM_DECISION.
"""

import os
import sys

from playwright.sync_api import sync_playwright

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main(url: str) -> int:
    decision = os.environ.get("CHROMIUM_DECISION", "approve")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=FLAGS)
        page = browser.new_page()
        page.goto(url)
        page.click(f"#{decision}")
        page.wait_for_selector("h1")
        print(page.inner_text("h1"), file=sys.stderr)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
