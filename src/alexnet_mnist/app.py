"""The `alexnet-mnist` command (a console script of the package): `alexnet-mnist predict PATH...` and
`alexnet-mnist serve`.

predict prints one line per image, `path: digit (probability)`, or a JSON object per image; each
input that cannot be predicted gets one `error: ...` line on stderr, the others are still predicted,
and the exit status is then 1. serve runs the drawing page and the HTTP API (serve.py) until Ctrl-C
or SIGTERM. A bad model file is one `error: ...` line and exit status 1 for both.
`alexnet-mnist COMMAND --help` describes the options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from pathlib import Path

from .errors import PipelineError

PIPE_CLOSED = 141  # exit status: 128 + SIGPIPE, as the shell reports a command killed by a closed pipe
BACKLOG = 2048  # connections waiting to be accepted, as uvicorn's default

PREDICT = """\
Predict the digit in each image: PNG, JPEG, BMP, GIF, WebP, TIFF, ..., any size, one digit per image,
dark on light or light on dark. Each is prepared as MNIST's digits were (grayscale, ink made bright,
cropped to the ink, longer side scaled to 20 pixels, centred by its centre of mass in 28x28).
A folder stands for every image file in it (not its subfolders). Nothing is written."""

SERVE = """\
Serve the model over HTTP: a page to draw a digit on (GET /) and the API, POST /predict with an image
(the raw body with an image/* Content-Type, or the multipart form field 'file'), which answers the
JSON object of `predict --json` (?top=K as --top K), and GET /healthz. Ctrl-C or SIGTERM stops it."""


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
    predict.add_argument("--top", type=int, metavar="K", help="print the K most likely digits (1-10; default 1)")
    predict.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per image: path, digit, probabilities (of 0..9); with --top, top: the K likeliest",
    )
    serve = commands.add_parser("serve", help="the drawing page and the HTTP API", description=SERVE)
    serve.add_argument(
        "--model",
        type=Path,
        metavar="FILE",
        help="the ONNX export (.onnx) or a model file (.pt); default: the ONNX path in dvc.yaml of the "
        "current folder (models/model.onnx)",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0: any free port)")
    args = parser.parse_args(argv)
    if args.command == "predict" and args.top is not None and not 1 <= args.top <= 10:
        predict.error(f"--top: {args.top} is not in 1..10")
    try:
        if args.command == "serve":
            sys.exit(run_serve(args.model, args.host, args.port))
        sys.exit(run_predict(args.paths, args.model, args.top, args.json))
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # the reader stopped early (`| head`): end quietly, as a command killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail again
        sys.exit(PIPE_CLOSED)


def run_predict(paths: list[Path], model_path: Path | None, top: int | None, as_json: bool) -> int:
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
            print(json.dumps(to_json(path, result, top)), flush=True)
        else:
            print(f"{path}: {describe(result, top or 1)}", flush=True)
    return 1 if failed else 0


def run_serve(model_path: Path | None, host: str, port: int) -> int:
    """Serve until Ctrl-C or SIGTERM; 0 then. The app's lifespan loads the model before the URL is printed,
    so a bad model file raises PipelineError here, as in predict."""
    import uvicorn

    from .predict import default_model
    from .serve import create_app

    model_path = model_path or default_model(key="onnx")

    listening = listen(host, port)
    app = create_app(model_path)
    # uvicorn serves on the socket bound here (a taken port is one error line) and leaves the lifespan to
    # this function, so that a bad model file raises PipelineError before anything is served
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning"))

    async def run() -> None:
        async with app.router.lifespan_context(app):
            bound_host, bound_port = listening.getsockname()[:2]
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            print(f"serving {model_path} on http://{shown}:{bound_port}/ (Ctrl-C stops)", flush=True)
            await server.serve(sockets=[listening])

    asyncio.run(run())
    return 0


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on (host, port), for uvicorn to serve on: connections wait in its backlog until
    then. PipelineError when that address is taken or not this machine's."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listening = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise PipelineError(f"{host}: not an address to listen on ({e.strerror or e}); pass another --host") from None
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        listening.bind((host, port))
        listening.listen(BACKLOG)
    except OSError as e:
        listening.close()
        raise PipelineError(
            f"{host}:{port}: cannot listen there ({e.strerror or e}); pass another --port, or a --host of this machine"
        ) from None
    return listening
