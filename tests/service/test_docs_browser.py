"""``/docs`` renders with no network: headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
installed by .ci/run) opens it with every non-loopback request sent to a dead proxy and every host
name unresolvable, and must show the ``POST /embed`` operation; the browser's own network log must
list only requests to the service.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.service.helpers import ThreadServer, settings_for


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path):
    with ThreadServer(settings_for(tiny_model_dir, backend="torch")) as srv:
        yield srv


def test_docs_page_and_its_assets_come_from_the_service(server) -> None:
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text), "an asset outside the service"
    for asset in re.findall(r"""(?:src|href)="(/[^"]+)""", page.text):
        r = httpx.get(server.url + asset)
        assert r.status_code == 200 and len(r.content) > 500, asset
    assert httpx.get(server.url + "/redoc").status_code == 404  # CDN-only page: not offered
    assert "/docs" not in httpx.get(server.url + "/openapi.json").json()["paths"]


def offline_chromium():
    """A headless Chromium that can reach 127.0.0.1 only; skips where Chromium is not installed."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("chromium and chromedriver not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--proxy-server=http://127.0.0.1:9",  # anything not on loopback goes to a closed port
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # and no name resolves
        "--disable-background-networking",
        "--no-first-run",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver_path))


def test_docs_renders_the_embed_operation_with_no_network(server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser = offline_chromium()
    try:
        browser.get(server.url + "/docs")
        WebDriverWait(browser, 60).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#swagger-ui"), "/embed"))
        summaries = browser.find_elements(By.CSS_SELECTOR, ".opblock-summary")
        texts = [" ".join(s.text.split()) for s in summaries]
        assert any(t.startswith("POST /embed") for t in texts), texts
        assert any(t.startswith("GET /health") for t in texts), texts
        requested = [
            json.loads(entry["message"])["message"]["params"]["request"]["url"]
            for entry in browser.get_log("performance")
            if '"Network.requestWillBeSent"' in entry["message"]
        ]
    finally:
        browser.quit()
    outside = [u for u in requested if not u.startswith((server.url, "data:", "blob:"))]
    assert requested and not outside, outside
    assert any(u.endswith("/docs-assets/swagger-ui-bundle.js") for u in requested)
