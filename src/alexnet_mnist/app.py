"""The `alexnet-mnist` command (a console script of the package): `alexnet-mnist predict PATH...`.

Prints one line per image, `path: digit (probability)`, or a JSON object per image; each input that
cannot be predicted gets one `error: ...` line on stderr, the others are still predicted, and the
exit status is then 1. `alexnet-mnist predict --help` describes the options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import PipelineError

PIPE_CLOSED = 141  # exit status: 128 + SIGPIPE, as the shell reports a command killed by a closed pipe

PREDICT = """\
Predict the digit in each image: PNG, JPEG, BMP, GIF, WebP, TIFF, ..., any size, one digit per image,
dark on light or light on dark. Each is prepared as MNIST's digits were (grayscale, ink made bright,
cropped to the ink, longer side scaled to 20 pixels, centred by its centre of mass in 28x28).
A folder stands for every image file in it (not its subfolders). Nothing is written."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="alexnet-mnist", description="Use the AlexNet MNIST model.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser("predict", help="the digit in each image", description=PREDICT)
    predict.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="an image file or a folder of images")
    predict.add_argument(
        "--model",
        type=Path,
        metavar="FILE",
        help="a model file (.pt) or its ONNX export (.onnx); default: the model path in "
        "dvc.yaml of the current folder (models/model.pt)",
    )
    predict.add_argument("--top", type=int, default=1, metavar="K", help="print the K most likely digits (1-10)")
    predict.add_argument(
        "--json", action="store_true", help="one JSON object per image: path, digit, probabilities (of 0..9)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.top <= 10:
        predict.error(f"--top: {args.top} is not in 1..10")
    try:
        sys.exit(run_predict(args.paths, args.model, args.top, args.json))
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # the reader stopped early (`| head`): end quietly, as a command killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail again
        sys.exit(PIPE_CLOSED)


def run_predict(paths: list[Path], model_path: Path | None, top: int, as_json: bool) -> int:
    """Print each image's prediction, or its error; 1 if any failed, else 0. A bad model raises PipelineError."""
    from .predict import as_json as to_json
    from .predict import default_model, describe, load, predict_files

    model = load(model_path or default_model())
    failed = False
    for path, result in predict_files(model, paths):
        if isinstance(result, PipelineError):
            print(f"error: {result}", file=sys.stderr, flush=True)
            failed = True
        elif as_json:
            assert path is not None  # only errors come without a path
            print(json.dumps(to_json(path, result)), flush=True)
        else:
            print(f"{path}: {describe(result, top)}", flush=True)
    return 1 if failed else 0
