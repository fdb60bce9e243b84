"""The page of `alexnet-mnist serve` in headless Chromium, driven through WebDriver (Debian's chromedriver).

Real pen strokes (pointer events) trace the ink of real MNIST test digits on the page's pad, and the
page must show the right digit; a chosen file gets the API's answer; and the README's screenshot
comes from the script that the screenshot test runs. The model is the small one trained on real
digits (conftest.trained), exported to ONNX as the pipeline's export stage does.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MEAN, ROOT, STD, needs_real_mnist, read_real
from PIL import Image

from alexnet_mnist.idx import TEST_IMAGES, TEST_LABELS

sys.path.insert(0, str(ROOT / "docs"))  # the screenshot script's browser functions
sys.path.insert(0, str(ROOT / "benchmarks"))  # common.serve: the command on a free port
import common
import serve_screenshot

pytestmark = [pytest.mark.slow, needs_real_mnist]
RIGHT = 9  # of the 10 drawn digits (one of each class), the page must show at least this many right


@pytest.fixture(scope="module")
def tools() -> None:
    """Chromium and chromedriver. CI installs both (.ci/run), so only outside CI does their absence skip."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing and os.environ.get("CI"):
        pytest.fail(
            f"{', '.join(missing)} not on PATH; .ci/run installs them (apt-get install -y chromium chromium-driver)"
        )
    if missing:
        pytest.skip(f"{', '.join(missing)} not on PATH (apt-get install -y chromium chromium-driver)")


@pytest.fixture(scope="module")
def onnx_model(trained, tmp_path_factory) -> Path:
    from alexnet_mnist.onnx_export import export

    _, model = trained
    path = tmp_path_factory.mktemp("served") / "model.onnx"
    export(model, {"mean": MEAN, "std": STD}, path)
    return path


@pytest.fixture(scope="module")
def page(tools, onnx_model, tmp_path_factory):
    """(browser on the served page, its URL)."""
    with common.serve(onnx_model) as (url, _):
        browser = serve_screenshot.driver(tmp_path_factory.mktemp("profile"))
        try:
            browser.get(url)
            yield browser, url
        finally:
            browser.quit()


def first_of_each_class() -> tuple[np.ndarray, np.ndarray]:
    """(10 test digits, their labels 0..9): the first of each class in MNIST's test set."""
    images, labels = read_real(TEST_IMAGES, 3), read_real(TEST_LABELS, 1)
    index = [int(np.flatnonzero(labels == d)[0]) for d in range(10)]
    return images[index], labels[index]


def test_the_page_shows_the_digit_drawn_on_it(page):
    from selenium.webdriver.common.by import By

    browser, _ = page
    digits, labels = first_of_each_class()
    shown = []
    for digit in digits:
        browser.find_element(By.ID, "clear").click()
        assert serve_screenshot.shown(browser) is None  # a clear pad shows no answer
        serve_screenshot.draw(browser, serve_screenshot.strokes(digit))
        answer = serve_screenshot.shown(browser)
        assert answer is not None, browser.find_element(By.ID, "status").text
        assert abs(sum(answer["probabilities"]) - 1) < 1e-3
        assert answer["digit"] == int(np.argmax(answer["probabilities"]))
        shown.append(answer["digit"])
    print(f"drawn {labels.tolist()}, the page shows {shown}")
    assert sum(s == label for s, label in zip(shown, labels, strict=True)) >= RIGHT


def test_a_chosen_file_gets_the_apis_answer(page, tmp_path):
    from selenium.webdriver.common.by import By

    browser, url = page
    digit = read_real(TEST_IMAGES, 3)[0]
    path = tmp_path / "digit.png"
    Image.fromarray(255 - digit).resize((84, 84), Image.Resampling.BICUBIC).save(path)
    browser.find_element(By.ID, "file").send_keys(str(path))  # as a person choosing the file
    answer = serve_screenshot.shown(browser)
    boundary = "digit-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="digit.png"\r\n\r\n'.encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    with urlopen_post(url + "predict", body, f"multipart/form-data; boundary={boundary}") as response:
        api = json.load(response)
    assert answer is not None and answer["digit"] == api["digit"]
    assert np.allclose(answer["probabilities"], api["probabilities"], atol=1e-6)


def urlopen_post(url: str, body: bytes, content_type: str):
    import urllib.request

    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    return urllib.request.urlopen(request, timeout=60)


def test_the_screenshot_script_draws_a_digit_and_gets_its_answer(tools, onnx_model, tmp_path):
    """docs/serve.png comes from this script (README); here it runs on the small model and a real test digit."""
    digit, label = read_real(TEST_IMAGES, 3)[0], int(read_real(TEST_LABELS, 1)[0])
    image, out = tmp_path / "digit.png", tmp_path / "shot.png"
    Image.fromarray(255 - digit).save(image)
    script = ROOT / "docs" / "serve_screenshot.py"
    command = [sys.executable, str(script), "--image", str(image), "--model", str(onnx_model), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{image}: the page shows {label} ("), result.stdout
    shot = np.asarray(Image.open(io.BytesIO(out.read_bytes())).convert("RGB"))
    committed = Image.open(ROOT / "docs" / "serve.png")
    assert shot.shape[1::-1] == serve_screenshot.WINDOW == committed.size  # the README's picture: this script's
    paper, ink = np.array([251, 250, 247]), np.array([21, 23, 28])  # draw.html's --paper and pen colours
    assert (np.abs(shot - paper).sum(axis=2) < 6).sum() > 20_000  # the pad
    assert (np.abs(shot - ink).sum(axis=2) < 6).sum() > 2_000  # the strokes on it
    assert "docs/serve.png" in (ROOT / "README.md").read_text()
