"""`alexnet-mnist serve`'s web app (Starlette, run by uvicorn): the drawing page and the prediction API.

GET / is the page (draw.html beside this module); POST /predict takes one image, as the raw body
with an image/* Content-Type or as the multipart form field `file`, and answers what
`predict --json` prints for it; GET /healthz says which model is loaded. A thin edge over
predict.py: each image is read and prepared by `predict.digit`, as the command does, and the
model is loaded once, by `predict.load`, in the app's lifespan. Limits are checked before any
work; every refusal is a 4xx status with a JSON {"error": "..."} that says what was wrong.
Nothing of a request is written to disk.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from anyio import CapacityLimiter, to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .digits import NoInkError
from .errors import PipelineError
from .images import TooLargeError
from .predict import BATCH, Model, as_json, digit, load

MAX_BODY = 4 * 2**20  # bytes of one request's body: a photo of a digit fits; refused with 413 above it
# pixels of one image: its preparation holds about 40 bytes per pixel (float64 copies), so a 12-megapixel
# photo takes about 0.5 GB while it is prepared; refused with 413 above it, read from the header before decoding
MAX_PIXELS = 12_000_000
FIELD = "file"  # the multipart form field that holds the image
RAW_NAME = "request body"  # how errors name an image posted as the raw body
USAGE = "POST /predict with an image: the raw body with Content-Type image/png (or image/jpeg, ...), or the "
USAGE += f"multipart form field '{FIELD}'"


class RequestError(Exception):
    """A request refused with `status` and a JSON {"error": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class InMemoryParser(MultiPartParser):
    """Starlette's multipart parser, its uploads kept in memory: a file part is never larger than the body,
    so its spooled file never rolls over to disk."""

    spool_max_size = MAX_BODY


def cpus() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Answer:
    """A digit's probabilities and how its forward pass went: the seconds it waited for the model (while
    earlier passes ran), the seconds of its own pass, and how many digits that pass held."""

    probabilities: np.ndarray  # (10,)
    waited: float
    ran: float
    batch: int


class Batcher:
    """Runs the model on the digits of concurrent requests together: one forward pass at a time, in one
    worker thread, on every digit that queued while the previous pass ran (up to predict.BATCH).

    No request waits for others to arrive: a lone digit runs at once. Under load the passes grow,
    and a batch costs less per digit than single digits (the fully connected layers' weights are
    read once per pass).
    """

    def __init__(self, model: Model):
        self.model = model
        # (digit, when it was queued, by time.perf_counter, the future of its Answer)
        self.queue: asyncio.Queue[tuple[np.ndarray, float, asyncio.Future]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.worker: asyncio.Task | None = None

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def answer(self, digit_: np.ndarray) -> Answer:
        """(28, 28) uint8 digit -> its probabilities, with its pass's timing."""
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((digit_, time.perf_counter(), future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            batch = [entry for entry in batch if not entry[2].done()]  # a client that left cancels its future
            if not batch:
                continue
            began = time.perf_counter()
            try:
                found = await loop.run_in_executor(
                    self.executor, self.model.probabilities, np.stack([d for d, _, _ in batch])
                )
            except Exception as e:  # noqa: BLE001 -- each waiting request answers it; the worker goes on
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            ran = time.perf_counter() - began
            for (_, queued, future), p in zip(batch, found, strict=True):
                if not future.done():
                    future.set_result(Answer(p, began - queued, ran, len(batch)))


def create_app(model_path: Path) -> Starlette:
    """The app serving the model in `model_path` (.pt or .onnx); its lifespan loads it, once."""
    page = resources.files(__package__).joinpath("draw.html").read_text(encoding="utf8")
    preparing = CapacityLimiter(cpus())  # images prepared at once: bounds the memory large images hold

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        model = await run_in_threadpool(load, model_path, cpus())
        app.state.model, app.state.batcher = model, Batcher(model)
        app.state.batcher.start()
        try:
            yield
        finally:
            await app.state.batcher.stop()

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def healthz(request: Request) -> Response:
        model: Model = request.app.state.model
        return JSONResponse({"status": "ok", "model": str(model_path), "image_size": model.image_size})

    async def predict(request: Request) -> Response:
        try:
            top = top_param(request.query_params.get("top"))
            path, data = await image_of(request)
            began = time.perf_counter()
            found = await to_thread.run_sync(digit, io.BytesIO(data), path or RAW_NAME, MAX_PIXELS, limiter=preparing)
            prepared = time.perf_counter() - began
        except RequestError as e:
            return error(e.status, str(e))
        except NoInkError as e:
            return error(422, str(e))
        except TooLargeError as e:
            return error(413, str(e))
        except PipelineError as e:  # not an image, truncated, damaged
            return error(400, str(e))
        answer = await request.app.state.batcher.answer(found)
        return JSONResponse(as_json(path, answer.probabilities, top), headers=server_timing(prepared, answer))

    async def http_error(request: Request, e: Exception) -> Response:
        assert isinstance(e, HTTPException)
        if e.status_code == 404:
            message = f"no such path: {request.url.path}; the page is GET /, the API {USAGE}, and GET /healthz"
        elif e.status_code == 405:
            allowed = ", ".join(sorted((e.headers or {}).get("Allow", "").split(", ")))
            message = f"{request.method} {request.url.path}: method not allowed; use {allowed}"
        else:
            message = str(e.detail)
        return error(e.status_code, message, e.headers)

    async def server_error(request: Request, e: Exception) -> Response:
        return error(500, f"internal error ({type(e).__name__}: {e})")

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/predict", predict, methods=["POST"]),
    ]
    return Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error, Exception: server_error}
    )


def server_timing(prepared: float, answer: Answer) -> dict[str, str]:
    """The Server-Timing header (W3C; browsers' developer tools show it) of a prediction, in milliseconds:
    the image's reading and preparation, the wait for the model, and the forward pass with its batch size."""
    return {
        "Server-Timing": f"prepare;dur={prepared * 1000:.2f}, wait;dur={answer.waited * 1000:.2f}, "
        f'model;dur={answer.ran * 1000:.2f};desc="batch of {answer.batch}"'
    }


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def top_param(value: str | None) -> int | None:
    """The `top` query parameter: None when absent, else an integer in 1..10 (as predict's --top)."""
    if value is None:
        return None
    if not (value.isdigit() and 1 <= int(value) <= 10):
        raise RequestError(400, f"top: {value!r} is not an integer in 1..10; give e.g. ?top=3")
    return int(value)


async def image_of(request: Request) -> tuple[str | None, bytes]:
    """(its file name, or None for a raw body; its bytes) of the image a request carries; RequestError when
    it carries none."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not (kind.startswith("image/") or kind == "multipart/form-data"):
        raise RequestError(415, f"Content-Type {kind or '(none)'} is not an image; {USAGE}")
    body = await bounded_body(request)
    path, data = (None, body) if kind.startswith("image/") else await uploaded(request, body)
    if not data:
        raise RequestError(400, f"empty {'body' if path is None else f'file {path}'}: no image; {USAGE}")
    return path, data


async def bounded_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as its Content-Length or the bytes received pass MAX_BODY."""
    too_large = RequestError(413, f"body over the limit of {MAX_BODY} bytes; post a smaller image")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise too_large  # before reading any of it
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:  # a chunked body, or one longer than its Content-Length said
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def uploaded(request: Request, body: bytes) -> tuple[str, bytes]:
    """(file name, bytes) of the multipart form field FIELD in `body`, parsed in memory."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await InMemoryParser(request.headers, stream(), max_files=1, max_fields=10).parse()
    except MultiPartException as e:
        raise RequestError(400, f"multipart body cannot be read ({e.message}); {USAGE}") from None
    try:
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            raise RequestError(400, f"multipart body without a file in the field '{FIELD}'; {USAGE}")
        return upload.filename or FIELD, await upload.read()
    finally:
        await form.close()
