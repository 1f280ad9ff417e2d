"""The Prefect UI in a real browser (Debian's chromium, driven by playwright) for the end-to-end test.

What a team user does by hand: fill the pipeline deployment's run form, press Retry on a failed run,
read the report artifact. Every step saves a screenshot (``ALIGNX_UI_SHOTS``, default
``data/logs/ui-screenshots`` in the checkout) so a failure can be seen, not guessed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("ALIGNX_UI_SHOTS", REPO / "data" / "logs" / "ui-screenshots"))


def chromium() -> str:
    """The system chromium (playwright's own browser download is not reachable from CI)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no chromium found: install Debian's chromium (make test does: apt-get install chromium)")


class Browser:
    """One headless chromium page on a Prefect UI; ``shot(name)`` saves a numbered screenshot."""

    images: list = []  # [alt, natural width, start of src] of the report artifact's images

    def __init__(self, base_url: str):
        from playwright.sync_api import sync_playwright

        self.base_url = base_url.rstrip("/")
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        self.page = self._browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.set_default_timeout(60_000)
        SHOTS.mkdir(parents=True, exist_ok=True)
        self._n = 0

    def close(self) -> None:
        self._browser.close()
        self._pw.stop()

    def shot(self, name: str) -> Path:
        self._n += 1
        path = SHOTS / f"{self._n:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def run_pipeline_from_form(self, deployment_id: Any, profile: str, overrides: dict[str, Any]) -> None:
        """Deployments -> alignx-pipeline -> Run -> Custom run; pick the profile in its drop-down, type
        the overrides, Submit."""
        page = self.page
        page.goto(f"{self.base_url}/deployments/deployment/{deployment_id}")
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Custom run").click()
        page.wait_for_url("**/run**")
        profile_select = page.locator(".p-select-button__control").first
        profile_select.wait_for()
        option = page.locator(".p-select-option", has_text=profile).first
        opens = [lambda: page.keyboard.press("ArrowDown"), lambda: page.keyboard.press("Enter"),
                 lambda: page.locator(".p-select-button").first.click()]
        for attempt in range(12):  # the drop-down opens once the form's handlers are attached
            profile_select.focus()
            opens[attempt % len(opens)]()  # its options are the profiles in data/profiles/
            try:
                option.wait_for(timeout=2000)
                break
            except Exception:
                pass
        self.shot("profile-options")
        option.click()
        page.locator("textarea").first.fill(json.dumps(overrides))
        page.wait_for_timeout(500)
        self.shot("run-form-filled")
        page.get_by_role("button", name="Submit", exact=True).click()
        page.wait_for_url("**tab=Runs**")
        self.shot("run-submitted")

    def retry(self, flow_run_id: Any) -> None:
        """The failed run's page -> Retry -> confirm."""
        page = self.page
        page.goto(f"{self.base_url}/runs/flow-run/{flow_run_id}")
        page.get_by_role("button", name="Retry").first.click()
        page.get_by_role("button", name="Retry").last.wait_for()
        self.shot("retry-dialog")
        page.get_by_role("button", name="Retry").last.click()
        page.wait_for_timeout(1000)

    def report_text(self, flow_run_id: Any) -> str:
        """The run's Artifacts tab -> the alignx-report artifact's page; returns its visible text."""
        page = self.page
        page.goto(f"{self.base_url}/runs/flow-run/{flow_run_id}")
        page.get_by_role("tab", name="Artifacts").or_(page.get_by_text("Artifacts", exact=True)).first.click()
        page.get_by_text("alignx-report").first.click()
        page.get_by_text("Report:").first.wait_for()
        page.wait_for_timeout(1000)
        # every plot is an image in the page itself: decoded (natural width > 0), not a path on the worker
        page.wait_for_function("Array.from(document.images).filter(i => i.alt).every(i => i.complete)")
        self.images = page.evaluate("Array.from(document.images).filter(i => i.alt)"
                                    ".map(i => [i.alt, i.naturalWidth, i.src.slice(0, 22)])")
        self.shot("report-artifact")
        if self.images:  # the plots, as the browser shows them
            page.locator("img[alt]").first.scroll_into_view_if_needed()
            self.shot("report-plots")
        return page.inner_text("body")

    def flow_run_page(self, flow_run_id: Any, name: str) -> str:
        self.page.goto(f"{self.base_url}/runs/flow-run/{flow_run_id}")
        self.page.wait_for_timeout(2000)
        self.shot(name)
        return self.page.inner_text("body")
