"""The viewer page (service/ui.py, service/static/ui/) in a real browser against a real server.

Debian's ``chromium`` and ``chromium-driver`` (installed by .ci/run) run headless through Selenium;
without them the browser tests skip. The page's numbers (``window.__jepaUi``) and the pixels it drew
are compared with numpy's PCA and cosine similarities of the same images embedded by the same server.

``JEPA_UPDATE_SCREENSHOT=1 python -m pytest tests/service/test_ui.py`` also rewrites docs/ui.png.
The routes, files and settings without a browser: test_ui_routes.py.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import skimage_data_dir
from tests.service.helpers import REPO, rel_err, start_subprocess
from tests.service.test_onnx import BLOCK_TORCH

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
SHIPPED_MODEL = REPO / "models" / "ijepa-vit-tiny-cifar10"
WAIT_S = 60


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Headless Chromium with a fresh profile, shared by this module's tests."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_window_size(1200, 1000)
    yield driver
    driver.quit()


def photo_paths(names: tuple[str, ...]) -> list[Path]:
    return [skimage_data_dir() / name for name in names]


def page_state(driver) -> dict:
    return driver.execute_script("return window.__jepaUi")


def wait_for(driver, condition: str, timeout: float = WAIT_S) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    def check(d) -> bool:
        state = d.execute_script("return window.__jepaUi && window.__jepaUi.status")
        if state == "error" and "error" not in condition:
            raise AssertionError(f"the page shows an error: {d.execute_script('return window.__jepaUi.error')}")
        return bool(d.execute_script(f"return Boolean({condition})"))

    WebDriverWait(driver, timeout, poll_frequency=0.1).until(check)


def open_page(driver, url: str) -> None:
    driver.get(url + "/ui")
    wait_for(driver, "window.__jepaUi && window.__jepaUi.status !== 'starting' || "
                     "!document.getElementById('key-form').hidden")  # fmt: skip


def upload(driver, paths: list[Path]) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))
    wait_for(driver, "window.__jepaUi.status === 'ready'")


def embed_here(url: str, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """The same files through the same server from Python: globals [n, D], patches [n, N, D]."""
    files = [("image", (p.name, p.read_bytes())) for p in paths]
    r = httpx.post(url + "/embed?outputs=global,patch&encoding=base64", files=files, timeout=60)
    r.raise_for_status()
    body = r.json()
    d = body["dim"]
    globals_ = np.stack([np.frombuffer(base64.b64decode(i["embedding"]), "<f4") for i in body["data"]])
    patches = np.stack([np.frombuffer(base64.b64decode(i["patch_embeddings"]), "<f4").reshape(-1, d)
                        for i in body["data"]])  # fmt: skip
    return globals_.astype(np.float64), patches.astype(np.float64)


def page_arrays(driver, count: int) -> tuple[np.ndarray, np.ndarray]:
    """What the page decoded from its /embed response: globals [n, D], patches [n, N, D]."""
    got = driver.execute_script("return window.__jepaUi.arrays()")
    d = got["dim"]
    return np.reshape(got["globals"], (count, d)), np.reshape(got["patches"], (count, -1, d))


def numpy_pca(x: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eigenvalues of X_c^T X_c, largest first [all], components [k, D], projections [M, k])."""
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    return s**2, vt[:k], xc @ vt[:k].T


def to_bytes(values: np.ndarray) -> np.ndarray:
    lo, hi = values.min(axis=0), values.max(axis=0)
    return np.rint(255 * (values - lo) / (hi - lo))


def canvas_pixels(driver, selector: str) -> list[np.ndarray]:
    """RGB bytes [rows, cols, 3] of every canvas matching ``selector``, in page order."""
    raw = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(c => "
        "[c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)])",
        selector,
    )
    return [np.asarray(data, dtype=np.int64).reshape(h, w, 4)[..., :3] for w, h, data in raw]


def check_pca(driver, ui: dict, patches: np.ndarray, grid: tuple[int, int]) -> None:
    n, tokens, d = patches.shape
    flat = patches.reshape(n * tokens, d)
    eig, comps, proj = numpy_pca(flat)
    pca = ui["pca"]
    assert pca["converged"] and pca["k"] == 3
    np.testing.assert_allclose(pca["mean"], flat.mean(axis=0), atol=1e-6)
    page_comps = np.asarray(pca["components"])
    assert page_comps.shape == (3, d)
    np.testing.assert_allclose(pca["explained"], eig[:3] / eig.sum(), rtol=1e-6)
    # Each component is defined up to its sign: compare |cos| and then the projections with that sign.
    signs = np.sign(np.sum(page_comps * comps, axis=1))
    np.testing.assert_allclose(np.abs(np.sum(page_comps * comps, axis=1)), 1.0, atol=1e-6)
    page_proj = np.asarray(pca["projections"]).reshape(-1, 3)
    np.testing.assert_allclose(page_proj, proj * signs, atol=1e-5 * np.abs(proj).max())
    # The drawn maps: one pixel per patch, colours = min-max scaled projections (255 - c for a flipped sign).
    maps = canvas_pixels(driver, "canvas.pca")
    assert [m.shape for m in maps] == [(*grid, 3)] * n
    expected = to_bytes(proj).reshape(n, *grid, 3)
    expected = np.where(signs > 0, expected, 255 - expected)
    assert np.abs(np.stack(maps) - expected).max() <= 1


def check_similarity(driver, ui: dict, globals_: np.ndarray) -> None:
    from selenium.webdriver.common.by import By

    unit = globals_ / np.linalg.norm(globals_, axis=1, keepdims=True)
    expected = unit @ unit.T
    np.testing.assert_allclose(ui["similarity"], expected, atol=1e-6)
    rows = driver.find_elements(By.CSS_SELECTOR, "#similarity tbody tr")
    cells = [[td for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert [len(r) for r in cells] == [len(globals_)] * len(globals_)
    shown = np.array([[float(td.get_attribute("data-value")) for td in row] for row in cells])
    np.testing.assert_allclose(shown, expected, atol=1e-6)
    assert [[td.text for td in row] for row in cells] == [[f"{v:.3f}" for v in row] for row in shown]


def check_heat(driver, patches: np.ndarray, image: int, patch: int) -> None:
    ui = page_state(driver)
    heat = ui["heat"]
    assert (heat["image"], heat["patch"]) == (image, patch)
    n, tokens, d = patches.shape
    unit = patches.reshape(n * tokens, d)
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    expected = unit @ unit[image * tokens + patch]
    np.testing.assert_allclose(heat["values"], expected, atol=1e-5)
    assert heat["values"][image * tokens + patch] == pytest.approx(1.0, abs=1e-5)
    scaled = (expected - expected.min()) / (expected.max() - expected.min())
    colours = np.asarray(driver.execute_script("return arguments[0].map(window.__jepaUi.colormap)", scaled.tolist()))
    drawn = np.concatenate([m.reshape(-1, 3) for m in canvas_pixels(driver, "canvas.heat")])
    assert np.abs(drawn - colours).max() <= 1


def hover_patch(driver, image: int, row: int, col: int, grid: tuple[int, int]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    box = driver.find_elements(By.CSS_SELECTOR, ".box.map")[image]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)  # actions do not scroll
    w, h = box.size["width"], box.size["height"]
    dx, dy = (col + 0.5) * w / grid[1] - w / 2, (row + 0.5) * h / grid[0] - h / 2
    ActionChains(driver).move_to_element_with_offset(box, int(dx), int(dy)).perform()
    wait_for(driver, f"window.__jepaUi.heat && window.__jepaUi.heat.patch === {row * grid[1] + col}")


def save_full_page(driver, path: Path) -> None:
    """A screenshot of the whole page: the window is made as tall as the document for it."""
    width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
    driver.execute_script("window.scrollTo(0, 0)")
    driver.set_window_size(width, driver.execute_script("return document.documentElement.scrollHeight") + 200)
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(width, height)


@pytest.mark.parametrize(
    ("model", "names"),
    [
        ("tiny", ("astronaut.png", "chelsea.png")),
        ("shipped", ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")),
    ],
)
def test_page_draws_what_numpy_computes(browser, serve, request, tiny_model_dir, tmp_path, model, names) -> None:
    """Upload real photos; the PCA maps, the similarity matrix and the hover heatmap hold numpy's
    numbers for the same /embed response, in the right shapes; the arrow keys move the patch."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    if model == "tiny":
        url = serve(tiny_model_dir).url
    else:  # as in the Docker image: ONNX Runtime in an interpreter where torch cannot be imported
        proc, url = start_subprocess(["--model", str(SHIPPED_MODEL), "--dtype", "float32"], prelude=BLOCK_TORCH)
        request.addfinalizer(lambda: proc.terminate() or proc.wait(timeout=30))
    paths = photo_paths(names)
    open_page(browser, url)
    info = page_state(browser)["info"]
    grid = tuple(info["grid"])
    assert info["model"] in browser.find_element(By.ID, "model").text
    upload(browser, paths)
    ui = page_state(browser)
    assert ui["grid"] == list(grid) and ui["count"] == len(paths) and ui["latencyMs"] > 0
    assert f"{len(paths)} images embedded in" in browser.find_element(By.ID, "status").text
    globals_, patches = page_arrays(browser, len(paths))
    here_globals, here_patches = embed_here(url, paths)  # the page decoded the response right
    assert rel_err(globals_, here_globals) < 1e-4 and rel_err(patches, here_patches) < 1e-4
    check_pca(browser, ui, patches, grid)
    check_similarity(browser, ui, globals_)
    photos = canvas_pixels(browser, "canvas.photo")
    assert len(photos) == len(paths) and all(p.std() > 10 for p in photos)  # the photos were drawn
    last = len(paths) - 1
    hover_patch(browser, last, grid[0] - 1, 0, grid)
    check_heat(browser, patches, last, (grid[0] - 1) * grid[1])
    hover_patch(browser, 0, 1, 2, grid)
    check_heat(browser, patches, 0, grid[1] + 2)
    browser.find_elements(By.CSS_SELECTOR, ".box.view")[0].send_keys(Keys.ARROW_RIGHT)
    wait_for(browser, f"window.__jepaUi.heat.patch === {grid[1] + 3}")
    check_heat(browser, patches, 0, grid[1] + 3)
    shot = tmp_path / "ui.png"
    save_full_page(browser, shot)
    with Image.open(shot) as im:
        assert im.size[0] > 0 and np.asarray(im.convert("L")).std() > 10
    if model == "shipped" and os.environ.get("JEPA_UPDATE_SCREENSHOT") == "1":
        shutil.copy(shot, REPO / "docs" / "ui.png")


def test_a_video_model_takes_videos_and_maps_the_middle_tubelet(browser, serve, tmp_path) -> None:
    """A V-JEPA 2 model: the picker takes videos, a real WebM and a photo are embedded together,
    the maps and heatmap hold numpy's numbers for the middle tubelet of each clip, the similarity
    matrix the whole clips', and beside the video's map is its middle frame (frame 12 of 24)."""
    import torch
    from selenium.webdriver.common.by import By

    import jepa
    from tests.service.video_util import LEVEL_STEP, make_video

    torch.manual_seed(0)
    temporal = jepa.Temporal(frames_per_clip=4, frame_step=2, image_frames=4)
    encoder = jepa.build_video_encoder("tiny", image_size=64, depth=2, temporal=temporal)
    url = serve(jepa.save_model_dir(encoder, tmp_path / "vjepa2")).url
    clip = tmp_path / "clip.webm"
    clip.write_bytes(make_video("webm-vp9", frames=24, width=64, height=48))  # 2 s at 12 frames/s
    paths = [clip, *photo_paths(("chelsea.png",))]
    open_page(browser, url)
    assert browser.find_element(By.ID, "files").get_attribute("accept") == "image/*,video/*"
    assert "videos" in browser.find_element(By.ID, "pick-label").text
    upload(browser, paths)
    ui = page_state(browser)
    grid = tuple(ui["grid"])
    assert len(grid) == 3 and ui["tubelet"] == grid[0] // 2 and ui["tokens"] == grid[1] * grid[2]
    assert "2 files embedded in" in browser.find_element(By.ID, "status").text
    globals_, patches = page_arrays(browser, len(paths))
    here_globals, here_patches = embed_here(url, paths)
    tokens, middle = grid[1] * grid[2], grid[0] // 2
    assert here_patches.shape[1] == grid[0] * tokens
    assert rel_err(globals_, here_globals) < 1e-4
    assert rel_err(patches, here_patches[:, middle * tokens : (middle + 1) * tokens]) < 1e-4
    check_pca(browser, ui, patches, grid[1:])
    check_similarity(browser, ui, globals_)
    frame, photo = canvas_pixels(browser, "canvas.photo")
    assert ui["videoFrameAt"] == pytest.approx(1.0, abs=0.05)
    assert abs(np.median(frame) - 12 * LEVEL_STEP) <= 5, np.median(frame)  # frame 12's grey, not 11's or 13's
    assert photo.std() > 10
    hover_patch(browser, 0, grid[1] - 1, 0, grid[1:])
    check_heat(browser, patches, 0, (grid[1] - 1) * grid[2])


def test_api_key_is_asked_once_and_kept_in_the_tab(browser, serve, tiny_model_dir: Path) -> None:
    from selenium.webdriver.common.by import By

    server = serve(tiny_model_dir, api_key="s3cret-key")
    open_page(browser, server.url)
    form = browser.find_element(By.ID, "key-form")
    assert form.is_displayed() and page_state(browser)["info"] is None
    browser.find_element(By.ID, "key").send_keys("wrong\n")
    wait_for(browser, "!document.getElementById('key-error').hidden")
    assert "refused" in browser.find_element(By.ID, "key-error").text
    browser.find_element(By.ID, "key").clear()
    browser.find_element(By.ID, "key").send_keys("s3cret-key\n")
    wait_for(browser, "window.__jepaUi.info !== null")
    assert not form.is_displayed()
    upload(browser, photo_paths(("coffee.png", "rocket.jpg")))
    kept = browser.execute_script("return [sessionStorage.getItem('jepa-api-key'), localStorage.length]")
    assert kept == ["s3cret-key", 0] and browser.get_cookies() == []


def test_a_file_that_is_not_an_image_shows_the_servers_message(browser, serve, tiny_model_dir, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"hello, not a picture")
    server = serve(tiny_model_dir)
    open_page(browser, server.url)
    upload_error = [*photo_paths(("chelsea.png",)), bad]
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in upload_error))
    wait_for(browser, "window.__jepaUi.status === 'error'")
    alert = browser.find_element(By.ID, "error")
    assert alert.is_displayed() and "image 1" in alert.text


def drop_files(driver, paths: list[Path]) -> None:
    """Drop files on the drop zone as a desktop would (a DragEvent carrying a DataTransfer)."""
    files = [[p.name, base64.b64encode(p.read_bytes()).decode()] for p in paths]
    driver.execute_script(
        "const dt = new DataTransfer();"
        "for (const [name, b64] of arguments[0]) {"
        "  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));"
        "  dt.items.add(new File([bytes], name)); }"
        "document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));",
        files,
    )
    wait_for(driver, "window.__jepaUi.status === 'ready'")


def test_keyboard_reaches_the_picker_and_every_map(browser, serve, tiny_model_dir: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    server = serve(tiny_model_dir)
    open_page(browser, server.url)
    upload(browser, photo_paths(("astronaut.png", "chelsea.png")))
    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    visited = []
    for _ in range(5):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        visited.append(browser.execute_script(
            "const e = document.activeElement; return e.id || e.className + ' ' + (e.dataset.image ?? '')"
        ))  # fmt: skip
    assert visited == ["files", "box view 0", "box map 0", "box view 1", "box map 1"], visited
    assert page_state(browser)["heat"]["image"] == 1  # focusing a map picks its first patch
    ActionChains(browser).send_keys(Keys.ARROW_DOWN).perform()
    heat = page_state(browser)["heat"]
    assert (heat["image"], heat["row"], heat["col"]) == (1, 1, 0)
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    assert page_state(browser)["heat"] is None


def test_readable_on_a_phone(browser, serve, tiny_model_dir: Path) -> None:
    from selenium.webdriver.common.by import By

    server = serve(tiny_model_dir)
    browser.set_window_size(390, 844)
    try:
        open_page(browser, server.url)
        drop_files(browser, photo_paths(("astronaut.png", "coffee.png", "chelsea.png")))
        assert page_state(browser)["count"] == 3
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"the page scrolls sideways on a phone: {width}"
        for canvas in browser.find_elements(By.CSS_SELECTOR, "canvas.pca, canvas.photo"):
            assert 100 <= canvas.size["width"] <= 390
        font = browser.execute_script("return parseFloat(getComputedStyle(document.body).fontSize)")
        assert font >= 16
    finally:
        browser.set_window_size(1200, 1000)


def test_screenshot_in_docs_is_a_png_the_readme_shows() -> None:
    shot = REPO / "docs" / "ui.png"
    assert "docs/ui.png" in (REPO / "README.md").read_text()
    with Image.open(io.BytesIO(shot.read_bytes())) as im:
        assert im.format == "PNG" and im.size[0] >= 800
