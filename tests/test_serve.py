"""The web app of `alexnet-mnist serve` on a real uvicorn server (127.0.0.1, a free port), sent real HTTP requests.

An untrained model (67x67) serves: these tests check the server, not the model's accuracy. Every
refused request gets a 4xx status with a JSON error, and the next good request still succeeds.
"""

from __future__ import annotations

import http.client
import io
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import uvicorn
from conftest import ROOT, fail_line, png_of_size
from PIL import Image

from alexnet_mnist.predict import as_json, load, predict_files
from alexnet_mnist.serve import MAX_BODY, MAX_PIXELS, create_app

sys.path.insert(0, str(ROOT / "benchmarks"))  # common.serve: the command on a free port, as the benchmarks run it
import common


class Server:
    """uvicorn serving the app in a thread of this process, on a free port of 127.0.0.1."""

    def __init__(self, model: Path):
        self.model = model
        self.uvicorn = uvicorn.Server(
            uvicorn.Config(create_app(model), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.uvicorn.started:
            assert self.thread.is_alive() and time.time() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.port = self.uvicorn.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, headers, parsed JSON or text) of one request on a new connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        kind = response.getheader("Content-Type", "")
        return response.status, response, json.loads(data) if kind.startswith("application/json") else data.decode()

    def post_image(self, data: bytes, content_type: str = "image/png", query: str = ""):
        return self.request("POST", f"/predict{query}", data, {"Content-Type": content_type})

    def post_file(self, data: bytes, filename: str = "digit.png", field: str = "file", query: str = ""):
        boundary = "----digit-boundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return self.request(
            "POST", f"/predict{query}", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )


def bar_digit(row: int, col: int, size: int = 60) -> bytes:
    """A PNG of a dark bar (a made-up digit) on white, placed by (row, col) so that each image differs."""
    image = np.full((28, 28), 255, np.uint8)
    image[3 + row : 17 + row, 4 + col : 9 + col] = 0
    out = io.BytesIO()
    Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC).save(out, "PNG")
    return out.getvalue()


GOOD = bar_digit(0, 0)


@pytest.fixture(scope="module")
def server(untrained):
    running = Server(untrained)
    yield running
    running.stop()


def expect_good(server: Server) -> None:
    status, _, answer = server.post_image(GOOD)
    assert status == 200 and answer["digit"] in range(10), (status, answer)


def test_an_image_gets_what_predict_json_prints(server, untrained, tmp_path):
    path = tmp_path / "digit.png"
    path.write_bytes(GOOD)
    ((_, expected),) = predict_files(load(untrained), [path])  # the command's own code
    status, response, raw = server.post_image(GOOD)
    assert status == 200 and response.getheader("Content-Type") == "application/json"
    assert raw == as_json(None, expected)
    status, _, form = server.post_file(GOOD, filename="digit.png")
    assert status == 200 and form == as_json("digit.png", expected)  # the form's file name is the path


def test_each_answer_says_where_its_time_went(server):
    """Server-Timing (shown by browsers' developer tools; read by benchmarks/serve_load.py): preparation, the
    wait for the model and the forward pass in ms, and the pass's batch size."""
    status, response, _ = server.post_image(GOOD)
    header = response.getheader("Server-Timing")
    assert status == 200 and header.startswith("prepare;dur="), header
    timing = common.server_timing(header)
    assert set(timing) == {"prepare", "wait", "model", "batch"}
    assert timing["prepare"] > 0 and timing["wait"] >= 0 and timing["model"] > 0 and timing["batch"] == 1
    assert "Server-Timing" not in dict(server.post_image(b"not an image")[1].getheaders())  # errors: no pass


def test_top_lists_the_likeliest_digits_as_predict_top_does(server):
    _, _, plain = server.post_image(GOOD)
    status, _, top = server.post_image(GOOD, query="?top=3")
    assert status == 200 and {k: v for k, v in top.items() if k != "top"} == plain and "top" not in plain
    ranked = sorted(range(10), key=lambda d: -plain["probabilities"][d])[:3]
    assert [t["digit"] for t in top["top"]] == ranked
    assert [t["probability"] for t in top["top"]] == [plain["probabilities"][d] for d in ranked]


def test_healthz_names_the_model_and_its_size(server, untrained):
    status, _, health = server.request("GET", "/healthz")
    assert status == 200 and health == {"status": "ok", "model": str(untrained), "image_size": 67}


def test_the_page_is_self_contained(server):
    status, response, page = server.request("GET", "/")
    assert status == 200 and response.getheader("Content-Type").startswith("text/html")
    assert '<canvas id="pad"' in page and 'id="clear"' in page and 'type="file"' in page
    assert "://" not in page  # no script, style, font or image from the network


def test_concurrent_requests_each_get_their_own_answer(server, untrained):
    """Requests at once share forward passes (serve.Batcher); each still gets its own image's answer."""
    images = [bar_digit(row, col) for row in range(0, 8, 2) for col in range(0, 12, 2)]  # 24 different digits
    model = load(untrained)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(server.post_image, images))
    for data, (status, _, answer) in zip(images, answers, strict=True):
        assert status == 200, answer
        expected = model.probabilities(np.stack([digit_of(data)]))[0]
        assert np.allclose(answer["probabilities"], expected, atol=1e-5)
    assert len({tuple(a["probabilities"]) for _, _, a in answers}) > 12  # not one answer for all


def digit_of(data: bytes) -> np.ndarray:
    from alexnet_mnist.predict import digit

    return digit(io.BytesIO(data), "test image")


def test_nothing_is_written_to_disk(server, monkeypatch, tmp_path):
    """A file part near the body limit stays in memory: with no temp folder to write to, it is still predicted."""
    image = np.full((1700, 1700), 250, np.uint8)  # an uncompressed BMP of 2.9 MB
    image[300:1400, 700:1000] = 10
    out = io.BytesIO()
    Image.fromarray(image).save(out, "BMP")
    assert 2**20 < len(out.getvalue()) < MAX_BODY  # over Starlette's 1 MB spool: its files would roll to disk
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    for status, _, answer in (
        server.post_file(out.getvalue(), "big.bmp"),
        server.post_image(out.getvalue(), "image/bmp"),
    ):
        assert status == 200, answer


def torn_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (300, 300), np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, "PNG")
    return out.getvalue()[: len(out.getvalue()) // 2]


BAD = {  # case -> (request, status, what the error says)
    "empty body": (lambda s: s.post_image(b""), 400, "empty body"),
    "empty file": (lambda s: s.post_file(b""), 400, "empty file digit.png"),
    "not an image": (lambda s: s.post_image(b"a shopping list\n"), 400, "request body: not an image Pillow can read"),
    "truncated png": (lambda s: s.post_file(torn_png(), "torn.png"), 400, "torn.png: cannot be read as an image"),
    "decompression bomb": (lambda s: s.post_image(png_of_size(10_000, 10_000)), 413, "image too large to read safely"),
    "over the pixel limit": (
        lambda s: s.post_image(png_of_size(4000, 4000)),
        413,
        f"16000000 pixels, over the limit of {MAX_PIXELS}",
    ),
    "body over the limit": (lambda s: s.post_image(b"\0" * (MAX_BODY + 1)), 413, "body over the limit"),
    "wrong content type": (
        lambda s: s.post_image(GOOD, "application/json"),
        415,
        "Content-Type application/json is not an image",
    ),
    "no content type": (lambda s: s.request("POST", "/predict", GOOD), 415, "Content-Type (none) is not an image"),
    "no file field": (lambda s: s.post_file(GOOD, field="image"), 400, "without a file in the field 'file'"),
    "multipart without boundary": (
        lambda s: s.post_image(GOOD, "multipart/form-data"),
        400,
        "multipart body cannot be read",
    ),
    "unknown path": (lambda s: s.request("GET", "/predict/now"), 404, "no such path: /predict/now"),
    "wrong method": (lambda s: s.request("GET", "/predict"), 405, "GET /predict: method not allowed; use POST"),
    "wrong method on the page": (
        lambda s: s.request("DELETE", "/"),
        405,
        "DELETE /: method not allowed; use GET, HEAD",
    ),
    "no ink": (lambda s: s.post_image(png_of_size(64, 64)), 422, "no digit found: the image is blank or one colour"),
    "top out of range": (lambda s: s.post_image(GOOD, query="?top=11"), 400, "top: '11' is not an integer in 1..10"),
}


@pytest.mark.parametrize("case", BAD)
def test_each_bad_request_gets_a_json_error_and_the_server_goes_on(server, case):
    send, expected_status, expected = BAD[case]
    status, response, answer = send(server)
    assert status == expected_status and response.getheader("Content-Type") == "application/json", (status, answer)
    assert list(answer) == ["error"] and expected in answer["error"], answer
    expect_good(server)


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """(status, JSON body) of the response on a raw socket: its head, then Content-Length bytes of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = int(next(line.split(":", 1)[1] for line in lines if line.lower().startswith("content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), json.loads(body)


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nContent-Length: {50 * MAX_BODY}"
            "\r\n\r\n".encode()
            + GOOD
        )
        status, answer = read_response(sock)  # the answer comes while 99% of the declared body is unsent
    assert status == 413 and "body over the limit" in answer["error"]
    expect_good(server)


def test_a_chunked_body_is_refused_once_its_bytes_pass_the_limit(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"\0" * 2**20
        for _ in range(MAX_BODY // len(chunk) + 1):  # just over the limit, and no end: the server must stop reading
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        status, answer = read_response(sock)
    assert status == 413 and "body over the limit" in answer["error"]
    expect_good(server)


# ---- the command: `alexnet-mnist serve` in its own process, as a user runs it ----

ALEXNET_MNIST = Path(sys.executable).parent / "alexnet-mnist"


def serve_command(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(ALEXNET_MNIST), "serve", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "not an onnx model", "no dvc.yaml"])
def test_a_bad_model_file_is_one_error_line_and_exit_1(tmp_path, case):
    if case == "no dvc.yaml":  # no --model, run outside the project: nothing names the model
        line = fail_line(serve_command("--port", "0", cwd=tmp_path))
        assert "no dvc.yaml" in line and "pass --model FILE" in line, line
        return
    model = tmp_path / ("gone.onnx" if case == "missing" else "model.onnx")
    if case == "not an onnx model":
        model.write_bytes(b"\x08\x07" + bytes(range(256)) * 10)
    result = serve_command("--model", str(model), "--port", "0")
    line = fail_line(result)
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    expected = "model file not found" if case == "missing" else "cannot be read as an ONNX model"
    assert line.startswith(f"error: {model}: ") and expected in line, line


@pytest.mark.slow
def test_a_taken_port_is_one_error_line_and_exit_1(untrained):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = fail_line(serve_command("--model", str(untrained), "--port", str(port)))
    assert line.startswith(f"error: 127.0.0.1:{port}: cannot listen there (Address already in use)"), line


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_the_command_prints_its_url_serves_and_stops_on_a_signal(untrained, tmp_path, stop):
    """It answers as the command-line predict does (same JSON for the same file), and a signal ends it
    without a traceback: Ctrl-C with status 130, SIGTERM as killed by it, once open requests are answered."""
    path = tmp_path / "digit.png"
    path.write_bytes(GOOD)
    cli = subprocess.run(
        [str(ALEXNET_MNIST), "predict", str(path), "--model", str(untrained), "--json", "--top", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    with common.serve(untrained) as (url, server):
        port = urlsplit(url).port
        assert url == f"http://127.0.0.1:{port}/"
        running = Server.__new__(Server)  # its request helpers, on the command's port
        running.port = port
        status, _, health = running.request("GET", "/healthz")
        assert status == 200 and health["model"] == str(untrained)
        status, _, answer = running.post_file(GOOD, filename=str(path), query="?top=3")
        assert status == 200 and answer == json.loads(cli.stdout)
        server.send_signal(stop)
        _, err = server.communicate(timeout=60)
    assert "Traceback" not in err and err.strip() == "", err
    assert server.returncode == (130 if stop == signal.SIGINT else -signal.SIGTERM)
