"""Download: local folders and URL bases (a real HTTP server on 127.0.0.1), verification, fallbacks."""

import functools
import gzip
import http.server
import os
import re
import signal
import subprocess
import threading
import time

import pytest
from conftest import PATHS, make_project, stage_command, tiny_params, write_mnist

from alexnet_mnist.download import DownloadError, download, read_checksums, sources


@pytest.fixture
def http_mirror(tmp_path):
    """Serve a folder over HTTP on 127.0.0.1; yields (folder, url base)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_from_a_local_folder_of_gz_files(tmp_path, mnist_mirror):
    mirror, checksums = mnist_mirror
    written = download(tmp_path / "raw", checksums, sources(str(mirror), []))
    assert sorted(p.name for p in written) == sorted(checksums)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(checksums)  # nothing else left


def test_from_uncompressed_files_over_http(tmp_path, http_mirror):
    folder, url = http_mirror
    checksums = write_mnist(folder, gz=False)
    download(tmp_path / "raw", checksums, sources(None, [url]))
    for name in checksums:
        assert (tmp_path / "raw" / name).read_bytes() == (folder / name).read_bytes()


def test_a_corrupted_file_is_discarded_and_the_next_source_used(tmp_path, http_mirror, mnist_mirror):
    good, checksums = mnist_mirror
    folder, url = http_mirror
    write_mnist(folder)
    name = "train-images-idx3-ubyte"
    data = bytearray(gzip.decompress((folder / f"{name}.gz").read_bytes()))
    data[100] ^= 0xFF  # one flipped byte: still a valid gzip, wrong content
    (folder / f"{name}.gz").write_bytes(gzip.compress(bytes(data)))
    truncated = "t10k-images-idx3-ubyte.gz"
    (folder / truncated).write_bytes((folder / truncated).read_bytes()[:500])
    download(tmp_path / "raw", checksums, [url, str(good)])
    assert (tmp_path / "raw" / name).read_bytes() == gzip.decompress((good / f"{name}.gz").read_bytes())


def test_every_source_failing_lists_each_and_says_how_to_run_offline(tmp_path, http_mirror):
    _, url = http_mirror  # serves an empty folder
    empty = tmp_path / "empty"
    empty.mkdir()
    checksums = write_mnist(tmp_path / "unused")
    with pytest.raises(DownloadError) as error:
        download(tmp_path / "raw", checksums, [str(empty), url])
    message = str(error.value)
    assert str(empty) in message and url in message
    assert "No such file" in message and "HTTP 404" in message
    assert "MNIST_MIRROR=/path/to/mnist" in message
    assert not list((tmp_path / "raw").iterdir())


def test_a_missing_mirror_directory_is_an_error(tmp_path):
    with pytest.raises(DownloadError, match=r"MNIST_MIRROR=.*nowhere: no such directory"):
        sources(str(tmp_path / "nowhere"), ["http://127.0.0.1:9/"])


def test_the_stage_reports_failure_without_traceback(tmp_path, mnist_mirror):
    _, checksums = mnist_mirror
    project = make_project(tmp_path / "p", tmp_path / "nowhere", checksums, tiny_params())
    result = project.stage("download")
    assert result.returncode == 1
    assert "error: MNIST_MIRROR=" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_killed_mid_download_leaves_no_partial_file_and_a_rerun_succeeds(tmp_path):
    """A source that sends part of a file and then stalls; the stage is killed while it waits."""
    import socket

    checksums = write_mnist(tmp_path / "mirror")
    payload = (tmp_path / "mirror" / "train-images-idx3-ubyte.gz").read_bytes()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def stall():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload[: len(payload) // 2])
        time.sleep(30)
        conn.close()

    threading.Thread(target=stall, daemon=True).start()
    params = tiny_params()
    params["data"]["mirrors"] = [f"http://127.0.0.1:{port}/"]
    project = make_project(tmp_path / "p", tmp_path / "mirror", checksums, params)
    env = {k: v for k, v in project.env.items() if k != "MNIST_MIRROR"}
    proc = subprocess.Popen(
        stage_command("download"), cwd=project.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    raw = project.path / PATHS["raw"]
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not raw.exists():
        time.sleep(0.1)
    time.sleep(1.0)  # now inside the stalled read
    assert proc.poll() is None, f"the stage ended before it was killed:\n{proc.communicate()[1][-3000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not raw.exists() or not list(raw.iterdir())
    listener.close()
    assert project.stage("download").returncode == 0  # MNIST_MIRROR set again: the folder
    assert sorted(p.name for p in raw.iterdir()) == sorted(checksums)


def test_the_project_checksums_are_the_published_ones():
    from conftest import ROOT

    checksums = read_checksums(ROOT / "mnist.sha256")
    assert checksums["train-images-idx3-ubyte"] == "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    assert checksums["t10k-labels-idx1-ubyte"] == "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    assert len(checksums) == 4


@pytest.mark.parametrize(
    "text, message",
    [
        ("abc  train-images-idx3-ubyte\n", "line 1: 'abc  train-images-idx3-ubyte' is not"),
        ("0" * 64 + "  train-images-idx3-ubyte\n", "must list exactly"),
    ],
)
def test_bad_checksum_files_are_named(tmp_path, text, message):
    path = tmp_path / "mnist.sha256"
    path.write_text(text)
    with pytest.raises(DownloadError, match=re.escape(message)):
        read_checksums(path)
