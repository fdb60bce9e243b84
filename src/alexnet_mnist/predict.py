"""Digit probabilities from a model file: models/model.pt through torch, or its ONNX export through onnxruntime.

Both take the same input, 28x28 digits as `digits.mnist_digit` makes them, in batches, and apply
the model file's own normalization and input size. onnx and onnxruntime are imported only to
open an .onnx file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import PipelineError

BATCH = 64  # images per forward pass
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


class Model:
    """A loaded model: its normalization, its input size (pixels per side) and a function of
    (B, 1, 28, 28) float32 -> (B, 10) logits."""

    def __init__(self, mean: float, std: float, image_size: int, logits: Callable[[np.ndarray], np.ndarray]):
        self.mean, self.std, self.image_size, self.logits = mean, std, image_size, logits

    def probabilities(self, digits: np.ndarray) -> np.ndarray:
        """(N, 28, 28) uint8 digits, white on black -> (N, 10) float64 probabilities, BATCH at a time."""
        out = []
        for start in range(0, len(digits), BATCH):
            x = digits[start : start + BATCH].astype(np.float32)[:, None] / np.float32(255.0)
            x = (x - np.float32(self.mean)) / np.float32(self.std)  # as prepare.normalize
            out.append(softmax(np.asarray(self.logits(x), dtype=np.float64)))
        return np.concatenate(out) if out else np.empty((0, 10))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def file_format(path: Path) -> str:
    """'.pt' or '.onnx', from the file's content (torch.save writes a zip archive, ONNX a protobuf
    message); an error when its name says the other format."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise PipelineError(
            f"{path}: model file not found; run the pipeline (dvc repro) or fetch the model "
            f"(dvc pull), or pass --model FILE"
        ) from None
    except OSError as e:
        raise PipelineError(f"{path}: cannot read the model file ({e.strerror}); pass --model FILE") from None
    is_zip = head == ZIP_MAGIC
    named = path.suffix.lower()
    if named == ".onnx" and is_zip:
        raise PipelineError(
            f"{path}: named as an ONNX model but holds a zip archive, as a PyTorch model file "
            f"(.pt) does; rename it to end in .pt, or give the ONNX export"
        )
    if named == ".pt" and not is_zip:
        raise PipelineError(
            f"{path}: named as a PyTorch model file but is no zip archive, which torch.save "
            f"writes; if it is an ONNX export, rename it to end in .onnx"
        )
    found = ".pt" if is_zip else ".onnx"  # an ONNX file is a protobuf message; onnx checks it
    return found


def load(path: Path, threads: int | None = None) -> Model:
    """The model in `path`, a .pt model file or its .onnx export, running on `threads` CPU threads (default:
    the runtime's choice); errors name the file and the fix."""
    return _load_torch(path, threads) if file_format(path) == ".pt" else _load_onnx(path, threads)


def _load_torch(path: Path, threads: int | None) -> Model:
    import torch

    from .model import to_input
    from .model_file import load_model

    model, normalization, _ = load_model(path)
    model.eval()
    if threads is not None:
        torch.set_num_threads(threads)
    size = model.config.image_size

    @torch.inference_mode()
    def logits(x: np.ndarray) -> np.ndarray:  # (B, 1, 28, 28) -> (B, 1, S, S) -> (B, 10)
        return model(to_input(torch.from_numpy(x), size)).float().numpy()

    return Model(normalization["mean"], normalization["std"], size, logits)


def _load_onnx(path: Path, threads: int | None) -> Model:
    from .onnx_export import METADATA, REMAKE, open_session

    session, metadata = open_session(path, threads)
    try:
        mean, std, size = float(metadata["mean"]), float(metadata["std"]), int(metadata["image_size"])
    except (KeyError, ValueError):
        raise PipelineError(
            f"{path}: an ONNX model without this project's metadata ({', '.join(METADATA)}); {REMAKE}"
        ) from None
    name = session.get_inputs()[0].name

    def logits(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x})[0]

    return Model(mean, std, size, logits)


def predict_files(model: Model, paths: list[Path]) -> Iterator[tuple[Path | None, np.ndarray | PipelineError]]:
    """(path, (10,) probabilities) for each image in `paths` (files, or folders of images), in order, BATCH
    images per forward pass. What cannot be predicted comes as (its path or None, the PipelineError
    naming it and saying why)."""
    from .images import expand

    entries = expand(paths)
    for start in range(0, len(entries), BATCH):
        results: list[tuple[Path | None, np.ndarray | PipelineError]] = []
        for entry in entries[start : start + BATCH]:
            if isinstance(entry, PipelineError):  # a missing path, an empty folder
                results.append((None, entry))
                continue
            try:
                results.append((entry, digit(entry)))
            except PipelineError as e:  # its errors name the file
                results.append((entry, e))
        good = [(i, r) for i, (_, r) in enumerate(results) if isinstance(r, np.ndarray)]  # the prepared digits
        if good:
            probabilities = model.probabilities(np.stack([r for _, r in good]))
            for (i, _), p in zip(good, probabilities, strict=True):
                results[i] = (results[i][0], p)
        yield from results


def digit(source: Path | BinaryIO, name: str | Path | None = None, max_pixels: int | None = None) -> np.ndarray:
    """(28, 28) uint8 MNIST digit of the image in `source`, a file or a binary stream, read as
    `images.read_image` reads it and prepared as `digits.mnist_digit`. Raises PipelineError naming it
    (`name`, default the path): not an image, truncated, too large, or no digit in it (NoInkError)."""
    from .digits import NoInkError, mnist_digit
    from .images import read_image

    try:
        return mnist_digit(read_image(source, name, max_pixels))
    except NoInkError as e:
        raise NoInkError(f"{source if name is None else name}: {e}") from None


def default_model(folder: Path = Path("."), key: str = "model") -> Path:
    """The model path that dvc.yaml in `folder` names (vars' paths.<key>: model, or onnx for the ONNX export),
    for running in the project."""
    import yaml

    spec = folder / "dvc.yaml"
    try:
        return Path(yaml.safe_load(spec.read_text())["vars"][0]["paths"][key])
    except FileNotFoundError:
        raise PipelineError(
            f"no dvc.yaml in {folder.resolve()} to name the model; run in the project's folder "
            f"or pass --model FILE (models/model.pt or models/model.onnx)"
        ) from None
    except (yaml.YAMLError, KeyError, IndexError, TypeError) as e:
        raise PipelineError(
            f"{spec}: names no model path under vars: paths: {key} ({type(e).__name__}); pass --model FILE"
        ) from None


def describe(probabilities: np.ndarray, top: int) -> str:
    """'3 (0.998)' for the most likely digit, or the `top` most likely: '3 (0.998), 8 (0.001)'."""
    return ", ".join(f"{d} ({probabilities[d]:.3f})" for d in likeliest(probabilities, top))


def likeliest(probabilities: np.ndarray, top: int) -> list[int]:
    """The `top` most likely digits, most likely first (the lower digit first on a tie)."""
    return [int(d) for d in np.argsort(-probabilities, kind="stable")[:top]]


def as_json(path: Path | str | None, probabilities: np.ndarray, top: int | None = None) -> dict:
    """{'path', 'digit', 'probabilities': [p0, ..., p9]}, and with `top` the `top` likeliest digits,
    'top': [{'digit', 'probability'}, ...], most likely first."""
    found: dict[str, object] = {
        "path": None if path is None else str(path),
        "digit": int(np.argmax(probabilities)),
        "probabilities": [round(float(p), 6) for p in probabilities],
    }
    if top is not None:
        found["top"] = [
            {"digit": d, "probability": round(float(probabilities[d]), 6)} for d in likeliest(probabilities, top)
        ]
    return found
