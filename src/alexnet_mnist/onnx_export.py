"""The model as a portable ONNX file (torch.onnx.export with dynamo), and its check against torch with onnxruntime.

The exported graph takes normalized 28x28 digits, (B, 1, 28, 28) float32 with any batch size B,
and resizes them to the model's input size itself (bilinear, as `model.to_input`), so that the
file alone, with the normalization in its metadata, is all a user needs. onnx and onnxruntime
are imported here only, inside the functions that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import storage
from .errors import PipelineError
from .idx import MNIST_SIDE
from .model import NUM_CLASSES, AlexNet, to_input

INPUT, OUTPUT = "digits", "logits"
METADATA = ("mean", "std", "image_size", "input")  # the metadata_props keys every export carries
REMAKE = "export it again: dvc repro export"
# Largest absolute difference allowed between onnxruntime's and torch's logits (fp32, CPU).
# Trained models' logits reach tens; the two runtimes' kernels sum in different orders, which
# moves them by about 1e-5 (metrics/export.json records the measured maximum), so 1e-3 leaves
# room for other CPUs while any change to the graph or a weight exceeds it.
TOLERANCE = 1e-3
BATCH = 250  # test images per forward pass in the check


class Digits(nn.Module):
    """What the ONNX file computes: normalized (B, 1, 28, 28) digits -> (B, 10) logits."""

    def __init__(self, model: AlexNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(to_input(x, self.model.config.image_size))  # (B, 1, 28, 28) -> (B, 1, S, S) -> (B, 10)


def export(model: AlexNet, normalization: dict, path: Path) -> None:
    """Write `model` to `path` as one self-contained ONNX file with a dynamic batch dimension.

    Its metadata_props record the normalization (mean, std of the 0..1 pixels), the model's
    input size and what the input is.
    """
    model = model.cpu().eval()
    sample = torch.zeros(2, 1, MNIST_SIDE, MNIST_SIDE)
    with torch.no_grad():
        program = torch.onnx.export(
            Digits(model).eval(),
            (sample,),
            dynamo=True,
            verbose=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    assert program is not None  # dynamo=True always returns an ONNXProgram
    program.model.metadata_props.update(
        {
            "mean": repr(float(normalization["mean"])),
            "std": repr(float(normalization["std"])),
            "image_size": str(model.config.image_size),
            "input": "(batch, 1, 28, 28) float32 digits, white on black, pixels/255 then (x - mean) / std; "
            "resized to image_size inside the graph",
        }
    )
    program.save(path, external_data=False)  # weights inside the one file, not beside it


def open_session(path: Path, threads: int | None = None) -> tuple[Any, dict[str, str]]:
    """(onnxruntime session on the CPU with `threads` threads per operator (default: onnxruntime's choice),
    the file's metadata_props); errors name the file."""
    import onnxruntime

    try:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: they come back as exceptions, reported in one line
        if threads is not None:
            options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own types (InvalidProtobuf, Fail, ...) for a bad file
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PipelineError(f"{path}: cannot be read as an ONNX model ({message}); {REMAKE}") from None
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    expected_input, expected_output = [1, MNIST_SIDE, MNIST_SIDE], [NUM_CLASSES]  # past the batch dimension
    if (
        len(inputs) != 1
        or inputs[0].shape[1:] != expected_input
        or len(outputs) != 1
        or outputs[0].shape[1:] != expected_output
    ):
        raise PipelineError(
            f"{path}: an ONNX model, but not of (B, {', '.join(map(str, expected_input))}) digits "
            f"to (B, {NUM_CLASSES}) logits; {REMAKE}"
        )
    return session, metadata


def compare(path: Path, model: AlexNet, images: torch.Tensor) -> dict:
    """Logits of the ONNX file at `path` (onnxruntime) against `model`'s (torch, fp32, CPU) on `images`,
    normalized (N, 1, 28, 28): the largest absolute difference and how often the predictions agree."""
    session, _ = open_session(path)
    digits = Digits(model.cpu()).eval()
    largest, agree = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(images), BATCH):
            x = images[start : start + BATCH].float().contiguous()
            expected = digits(x).numpy()
            got = session.run([OUTPUT], {INPUT: x.numpy()})[0]
            largest = max(largest, float(np.abs(got - expected).max()))
            agree += int((got.argmax(1) == expected.argmax(1)).sum())
    return {
        "max_abs_logit_difference": largest,
        "tolerance": TOLERANCE,
        "images": len(images),
        "agreement": round(agree / max(len(images), 1), 6),  # fraction of images with the same prediction
    }


def check(path: Path, comparison: dict) -> None:
    """Raise PipelineError naming the file when its logits differ from torch's by more than TOLERANCE."""
    difference = comparison["max_abs_logit_difference"]
    if not difference <= TOLERANCE:  # also NaN
        raise PipelineError(
            f"{path}: onnxruntime's logits differ from torch's by up to {difference:.3g} on "
            f"{comparison['images']} test images, over the tolerance {TOLERANCE:g}; the export is wrong: "
            f"check the model code and onnx/onnxruntime versions, then {REMAKE}"
        )


def export_checked(model: AlexNet, normalization: dict, images: torch.Tensor, path: Path) -> dict:
    """Export `model` to `path`, atomically, only once its logits agree with torch's on `images`
    (normalized test digits); the comparison. On a failed check the old file stays."""
    with storage.atomic_path(path) as tmp:
        export(model, normalization, tmp)
        comparison = compare(tmp, model, images)
        check(path, comparison)
    return comparison
