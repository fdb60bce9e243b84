"""`alexnet-mnist predict` for real: the installed console script on image files, with a .pt model or its ONNX export.

The bad-input tests use an untrained model (any model prints a digit); the agreement tests train a
small model on the real MNIST files (MNIST_MIRROR) and write real test digits out as PNG files.
"""

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BIN, MEAN, STD, fail_line, needs_real_mnist, png_of_size, read_real
from PIL import Image

from alexnet_mnist.idx import TEST_IMAGES, TEST_LABELS
from alexnet_mnist.model import to_input
from alexnet_mnist.prepare import normalize

pytestmark = pytest.mark.slow  # each test runs the installed command in a new process (about 2 s)
LINE = re.compile(r"^(?P<path>.+): (?P<digit>\d) \((?P<probability>[01]\.\d{3})\)$")


def predict(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed command, run as a user runs it."""
    return subprocess.run(
        [str(BIN / "alexnet-mnist"), "predict", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def mnist_png(path: Path, digit: np.ndarray) -> None:
    Image.fromarray(255 - digit).resize((60, 60), Image.Resampling.BICUBIC).save(path)


@pytest.fixture
def good_digits(tmp_path) -> Path:
    """A folder of three made-up digit images (dark on light)."""
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, (top, left) in enumerate([(4, 4), (10, 2), (2, 12)]):
        image = np.zeros((28, 28), np.uint8)
        image[top : top + 14, left : left + 5] = 255
        mnist_png(folder / f"digit-{i}.png", image)
    return folder


def test_a_folder_with_one_bad_file_predicts_the_others_and_exits_1(untrained, good_digits):
    torn = good_digits / "digit-1.png"
    torn.write_bytes(torn.read_bytes()[:100])
    before = sorted(good_digits.iterdir())
    result = predict(str(good_digits), "--model", str(untrained))
    assert fail_line(result) == (
        f"error: {torn}: cannot be read as an image (image file is truncated); the file may be truncated or damaged"
    )
    assert len(result.stderr.strip().splitlines()) == 1
    lines = result.stdout.splitlines()
    assert [LINE.match(line)["path"] for line in lines] == [str(good_digits / f"digit-{i}.png") for i in (0, 2)]
    assert sorted(good_digits.iterdir()) == before  # nothing written beside the images


def test_top_and_json(untrained, good_digits):
    top = predict(str(good_digits / "digit-0.png"), "--model", str(untrained), "--top", "3")
    assert top.returncode == 0, top.stderr
    assert re.fullmatch(r".+digit-0\.png: \d \(\d\.\d{3}\), \d \(\d\.\d{3}\), \d \(\d\.\d{3}\)\n", top.stdout)
    as_json = predict(str(good_digits), "--model", str(untrained), "--json")
    assert as_json.returncode == 0, as_json.stderr
    objects = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [o["path"] for o in objects] == [str(p) for p in sorted(good_digits.iterdir())]
    for o in objects:
        assert len(o["probabilities"]) == 10 and abs(sum(o["probabilities"]) - 1) < 1e-4
        assert o["digit"] == int(np.argmax(o["probabilities"]))


def test_a_reader_that_stops_early_ends_the_command_quietly(untrained, good_digits):
    """`alexnet-mnist predict folder | head -1`: the closed pipe stops the command without a traceback."""
    many = [str(good_digits)] * 200  # more lines than a pipe buffers, so a write meets the closed pipe
    with subprocess.Popen(
        [str(BIN / "alexnet-mnist"), "predict", *many, "--model", str(untrained)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as command:
        first = command.stdout.readline()
        command.stdout.close()
        err = command.stderr.read()
        status = command.wait(timeout=300)
    assert LINE.match(first.rstrip("\n")), first
    assert err == "" and status == 141, (status, err)  # 128 + SIGPIPE, as `yes | head -1` ends


BAD_IMAGES = {
    "missing": ("missing.png", "not found; give an image file or a folder of images"),
    "not an image": ("notes.png", "not an image Pillow can read"),
    "truncated": ("torn.jpg", "cannot be read as an image"),
    "blank": ("blank.png", "no digit found: the image is blank or one colour"),
    "one colour": ("green.bmp", "no digit found: the image is blank or one colour"),
    "over twice the bomb limit": ("huge.png", "image too large to read safely"),
    "over the bomb limit": ("large.png", "image too large to read safely"),
    "empty folder": ("empty", "folder holds no image files"),
}


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_each_bad_image_gives_one_error_line_and_exit_1(tmp_path, untrained, case):
    name, expected = BAD_IMAGES[case]
    path = tmp_path / name
    if case == "not an image":
        path.write_text("a shopping list, not a digit\n")
    elif case == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), np.uint8)).save(path, quality=90)
        path.write_bytes(path.read_bytes()[:2000])
    elif case == "blank":
        Image.new("L", (64, 64), 255).save(path)
    elif case == "one colour":
        Image.new("RGB", (64, 48), (30, 160, 60)).save(path)
    elif case == "over twice the bomb limit":  # Pillow refuses it (DecompressionBombError)
        path.write_bytes(png_of_size(20_000, 20_000))  # 400 million pixels, > 2 x Image.MAX_IMAGE_PIXELS (89.5 million)
    elif case == "over the bomb limit":  # Pillow only warns; predict refuses it too
        path.write_bytes(png_of_size(10_000, 10_000))
    elif case == "empty folder":
        path.mkdir()
    if path.is_file():
        assert path.stat().st_size < 200_000
    result = predict(str(path), "--model", str(untrained))
    line = fail_line(result)
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert line.startswith(f"error: {path}: ") and expected in line, line


BAD_MODELS = {
    "not a model": ("model.pt", "cannot be read as an AlexNet model file"),
    "not an onnx model": ("model.onnx", "cannot be read as an ONNX model"),
    "a .pt named .onnx": ("model.onnx", "named as an ONNX model but holds a zip archive"),
    "not a .pt": ("model.pt", "named as a PyTorch model file but is no zip archive"),
    "missing": ("gone.pt", "model file not found"),
}


@pytest.mark.parametrize("case", BAD_MODELS)
def test_each_bad_model_file_gives_one_error_line_and_exit_1(tmp_path, untrained, good_digits, case):
    name, expected = BAD_MODELS[case]
    model = tmp_path / name
    if case == "not a model":  # a zip archive, as torch.save writes, but torn
        model.write_bytes(untrained.read_bytes()[:50_000])
    elif case == "not an onnx model":
        model.write_bytes(b"\x08\x07" + bytes(range(256)) * 10)
    elif case == "a .pt named .onnx":
        model.write_bytes(untrained.read_bytes())
    elif case == "not a .pt":
        model.write_text("weights, surely\n")
    result = predict(str(good_digits), "--model", str(model))
    line = fail_line(result)
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert line.startswith(f"error: {model}: ") and expected in line, line


def test_without_model_and_dvc_yaml_says_to_pass_model(tmp_path, good_digits):
    line = fail_line(predict(str(good_digits), cwd=tmp_path))
    assert "no dvc.yaml" in line and "pass --model FILE" in line


# ---- on the real MNIST files: a small trained model, real test digits written out as images ----


def variant(kind: str, digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """An MNIST digit (white on black, 28x28) as a person's image of the given kind."""
    if kind == "light on dark":
        return Image.fromarray(digit)
    if kind == "dark on light":
        return Image.fromarray(255 - digit)
    if kind == "enlarged":
        return Image.fromarray(255 - digit).resize((200, 200), Image.Resampling.BICUBIC)
    if kind == "off-centre":
        canvas = np.full((90, 120), 255, np.uint8)
        top, left = rng.integers(0, 90 - 28), rng.integers(0, 120 - 28)
        canvas[top : top + 28, left : left + 28] = 255 - digit
        return Image.fromarray(canvas)
    if kind == "rgb, noisy background":
        ink = digit[..., None] / 255.0
        background = np.array([225.0, 215.0, 170.0]) + rng.normal(0, 10, (28, 28, 3))
        rgb = background * (1 - ink) + np.array([25.0, 35.0, 110.0]) * ink
        return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    assert kind == "alpha"  # black strokes on a transparent background
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = digit
    return Image.fromarray(rgba, "RGBA")


KINDS = ("light on dark", "dark on light", "enlarged", "off-centre", "rgb, noisy background", "alpha")
AGREEMENT = 0.95  # fraction of the 200 PNG digits predicted as the model predicts their MNIST tensors


@pytest.fixture(scope="module")
def real_pngs(tmp_path_factory) -> tuple[Path, list[str], np.ndarray]:
    """(folder, kind of each file, MNIST tensors) of the first 200 real test digits written as PNG files,
    each in one of KINDS in turn."""
    digits = read_real(TEST_IMAGES, 3)[:200]
    folder, rng = tmp_path_factory.mktemp("real") / "pngs", np.random.default_rng(0)
    folder.mkdir()
    kinds = [KINDS[i % len(KINDS)] for i in range(len(digits))]
    for i, (digit, kind) in enumerate(zip(digits, kinds, strict=True)):
        variant(kind, digit, rng).save(folder / f"{i:03d}.png")
    return folder, kinds, digits


@needs_real_mnist
def test_real_digits_as_png_files_get_the_models_predictions(trained, real_pngs):
    path, model = trained
    folder, kinds, digits = real_pngs
    with torch.inference_mode():
        expected = model(to_input(normalize(digits, MEAN, STD), model.config.image_size)).argmax(1).numpy()
    result = predict(str(folder), "--model", str(path), "--json")
    assert result.returncode == 0, result.stderr
    got = np.array([json.loads(line)["digit"] for line in result.stdout.splitlines()])
    same = got == expected
    by_kind = {kind: float(np.mean([s for s, k in zip(same, kinds, strict=True) if k == kind])) for kind in KINDS}
    labels = read_real(TEST_LABELS, 1)[:200]
    print(
        f"same prediction as the tensors: {same.mean():.3f} of 200 {by_kind}; model accuracy on the "
        f"tensors {np.mean(expected == labels):.3f}, on the PNG files {np.mean(got == labels):.3f}"
    )
    assert same.mean() >= AGREEMENT


@needs_real_mnist
def test_the_onnx_export_predicts_as_the_model_file(tmp_path, trained, real_pngs):
    from alexnet_mnist.onnx_export import TOLERANCE, check, compare, export

    path, model = trained
    onnx = tmp_path / "model.onnx"
    export(model, {"mean": MEAN, "std": STD}, onnx)
    comparison = compare(onnx, model, normalize(read_real(TEST_IMAGES, 3)[:1000], MEAN, STD))
    assert comparison["max_abs_logit_difference"] <= TOLERANCE and comparison["agreement"] == 1.0
    check(onnx, comparison)

    folder, _, _ = real_pngs
    outputs = [predict(str(folder), "--model", str(m), "--json") for m in (path, onnx)]
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    with_torch, with_onnx = ([json.loads(line) for line in o.stdout.splitlines()] for o in outputs)
    assert [o["path"] for o in with_torch] == [o["path"] for o in with_onnx]
    assert [o["digit"] for o in with_torch] == [o["digit"] for o in with_onnx]
    assert (
        np.abs(
            np.array([o["probabilities"] for o in with_torch]) - np.array([o["probabilities"] for o in with_onnx])
        ).max()
        <= 1e-4
    )
