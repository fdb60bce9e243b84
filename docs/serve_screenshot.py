"""Screenshot of the page of `alexnet-mnist serve` with a digit drawn on it by pointer events (docs/serve.png).

    python docs/serve_screenshot.py --image DIGIT.png [--model FILE] [--out docs/serve.png]

Starts the installed `alexnet-mnist serve` on a free port of 127.0.0.1, opens the page in headless
Chromium through Debian's chromedriver (WebDriver; nothing is downloaded), draws the ink of
DIGIT.png as pen strokes, waits for the page's answer, prints it and saves the window as a PNG.
The browser tests (tests/test_serve_browser.py) draw with the same functions.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # serve(): the server, as benchmarks run it
from common import HEADLESS, serve

SIDE = 280  # CSS pixels: the drawing pad's side in draw.html
WINDOW = (820, 620)  # CSS pixels: the page's card and footer, with a margin
PEN = 18  # CSS pixels: the pen's width in draw.html
INK = 160  # of 255: pixels of the enlarged digit at least this bright are the pen's path


def strokes(digit: np.ndarray, side: float = SIDE, rows: int = 56) -> list[list[tuple[float, float]]]:
    """The ink of a (28, 28) white-on-black digit (as MNIST's) as pen strokes on a side x side pad, in CSS pixels
    from its top left: the digit is enlarged to rows x rows (bilinear), and each run of inked pixels in a row
    is one stroke along it, top row first, as a pen that fills the digit's shape in would draw it: its ends
    half a pen's width inside the run, so that the ink keeps the digit's width. The rows, 5 px apart, join
    into the digit's strokes."""
    enlarged = np.asarray(Image.fromarray(digit).resize((rows, rows), Image.Resampling.BILINEAR))
    cell = side / rows
    found = []
    for row, line in enumerate(enlarged >= INK):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], line.astype(np.int8), [0]])))  # run starts and ends
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            y, left, right = (row + 0.5) * cell, start * cell + PEN / 2, end * cell - PEN / 2
            if right < left:  # a run narrower than the pen: one dot at its middle
                left = right = (start + end) * cell / 2
            found.append([(left, y), (right, y)])
    return found


def driver(profile: Path, window: tuple[int, int] = WINDOW):
    """Headless Chromium under Debian's chromedriver, with a fresh profile in `profile`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in [*HEADLESS, "--hide-scrollbars", f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    browser = webdriver.Chrome(
        options=options, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    )
    # the viewport itself (a window's size would include its frame), one CSS pixel per screenshot pixel
    metrics = {"width": window[0], "height": window[1], "deviceScaleFactor": 1, "mobile": False}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return browser


def draw(browser, lines: list[list[tuple[float, float]]]) -> None:
    """Draw `lines` on the pad with a pen: pointerdown, pointermoves along each line, pointerup."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    pad = browser.find_element(By.ID, "pad")
    actions = ActionBuilder(browser, mouse=PointerInput(interaction.POINTER_PEN, "pen"), duration=0)
    for line in lines:
        (x, y), *rest = line
        # WebDriver places the pointer relative to the element's centre
        actions.pointer_action.move_to(pad, round(x - SIDE / 2), round(y - SIDE / 2)).pointer_down()
        for x, y in rest:
            actions.pointer_action.move_to(pad, round(x - SIDE / 2), round(y - SIDE / 2))
        actions.pointer_action.pointer_up()
    actions.perform()


def shown(browser, timeout: float = 30) -> dict | None:
    """The answer the page shows once it is up to date with the pad ({'digit', 'probabilities'}), None if it
    shows none (an empty pad, or an error: then its status line says why)."""
    from selenium.webdriver.common.by import By

    deadline = time.time() + timeout
    while True:
        state = browser.execute_script("return [document.body.dataset.drawn, document.body.dataset.shown]")
        if state[0] == state[1]:
            break
        if time.time() > deadline:
            raise TimeoutError(f"the page showed no answer to its drawing within {timeout} s (drawn, shown: {state})")
        time.sleep(0.05)
    digit = browser.find_element(By.ID, "digit").text
    if not digit.isdigit():
        return None
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars li")
    return {"digit": int(digit), "probabilities": [float(b.get_attribute("data-p")) for b in bars]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, required=True, help="an image of one digit, any format Pillow reads")
    parser.add_argument("--model", type=Path, help="default: the command's (dvc.yaml's ONNX export)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "serve.png")
    args = parser.parse_args()
    from alexnet_mnist.digits import mnist_digit
    from alexnet_mnist.storage import atomic_path

    with Image.open(args.image) as image:
        lines = strokes(mnist_digit(image))
    with serve(args.model) as (url, _), tempfile.TemporaryDirectory() as profile:
        browser = driver(Path(profile))
        try:
            browser.get(url)
            draw(browser, lines)
            answer = shown(browser)
            if answer is None:
                raise SystemExit(f"error: the page shows no answer for {args.image}; its status line says why")
            time.sleep(0.5)  # the bars' 0.18 s transition
            picture = browser.get_screenshot_as_png()
        finally:
            browser.quit()
    with atomic_path(args.out) as tmp:
        tmp.write_bytes(picture)
    print(f"{args.image}: the page shows {answer['digit']} ({max(answer['probabilities']):.3f}); wrote {args.out}")


if __name__ == "__main__":
    main()
