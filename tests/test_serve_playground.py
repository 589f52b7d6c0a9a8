"""The playground page in a real browser: Debian's headless Chromium, driven by Playwright,
loads the page, shows the model's name, and streams a completion into it — the same text the
API gives for the same seed. Skipped without the browser extra or without Chromium."""
import shutil

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="needs the browser extra: "
                               "pip install '.[browser]'")
pytest.importorskip("fastapi", reason="the server needs the serve extra")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium)", allow_module_level=True)

from tests.test_serve_app import MODEL, complete, serving, small_model

# Without these, Chromium on a machine without internet stalls on its background services.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def test_the_page_streams_a_completion(tmp_path):
    with serving(small_model()) as server, sync_api.sync_playwright() as playwright:
        expected = complete(server.client(), prompt="ROMEO:", seed=11, max_tokens=40,
                            temperature=0.8).choices[0].text
        # A fresh profile each run: persistent context is how Playwright takes a user-data-dir.
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS, timeout=60_000)
        try:
            page = browser.new_page()
            page.goto(server.url + "/", timeout=30_000)
            sync_api.expect(page.locator("#model")).to_have_text(f"model: {MODEL}", timeout=30_000)
            page.fill("#prompt", "ROMEO:")
            page.fill("#seed", "11")
            page.fill("#max_tokens", "40")
            page.fill("#temperature", "0.8")
            page.click("#go")
            sync_api.expect(page.locator("#status")).to_contain_text("done", timeout=30_000)
            assert page.locator("#completion").text_content() == expected
            assert page.locator("#output .prompt").text_content() == "ROMEO:"
        finally:
            browser.close()
