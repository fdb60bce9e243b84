"""Shared test fixtures: small MNIST-format files made here, and a temp DVC project of this repo."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import gzip
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from alexnet_mnist.idx import TRAIN_IMAGES, TRAIN_LABELS, encode_idx, parse_idx
from alexnet_mnist.params import TrainParams, load_params

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's python, dvc and pytest
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PATHS = DVC_YAML["vars"][0]["paths"]  # every path the pipeline reads or writes, as dvc.yaml names it


def stage_command(name: str) -> list[str]:
    """The `cmd` of stage `name` in dvc.yaml, with its ${paths.*} filled in, run by this venv's python."""
    command = re.sub(r"\$\{paths\.(\w+)\}", lambda m: PATHS[m[1]], DVC_YAML["stages"][name]["cmd"])
    program, *args = shlex.split(command)
    assert program == "python", command
    return [str(BIN / "python"), *args]


def train_params(**changes) -> TrainParams:
    """params.yaml's train section with `changes`: the one way tests and benchmarks spell out TrainParams."""
    (train,) = load_params(ROOT / "params.yaml", train=TrainParams)
    return dataclasses.replace(train, **changes)


# The real MNIST files, for the tests that need them (.ci/run sets MNIST_MIRROR); skipped without.
# Absolute, as the dvc projects of the tests run in other folders.
REAL_MIRROR = Path(os.environ["MNIST_MIRROR"]).resolve() if os.environ.get("MNIST_MIRROR") else None
needs_real_mnist = pytest.mark.skipif(
    not (REAL_MIRROR and REAL_MIRROR.is_dir()), reason="MNIST_MIRROR does not name a folder"
)
MEAN, STD = 0.1307, 0.3081  # params.yaml's data.mean and data.std
TRAINED_IMAGES, TRAINED_EPOCHS = 16000, 3  # the `trained` fixture's real training images and passes over them


def read_real(name: str, ndim: int) -> np.ndarray:
    """The real MNIST file `name` (in REAL_MIRROR, plain or gzipped), parsed."""
    plain = REAL_MIRROR / name
    data = plain.read_bytes() if plain.exists() else gzip.decompress((REAL_MIRROR / f"{name}.gz").read_bytes())
    return parse_idx(data, ndim, name)


@pytest.fixture(scope="session")
def untrained(tmp_path_factory) -> Path:
    """A model file of an untrained AlexNet (67x67): enough to predict a digit for any image."""
    from alexnet_mnist.model import AlexNet, ModelConfig
    from alexnet_mnist.model_file import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("untrained") / "model.pt"
    save_model(path, AlexNet(ModelConfig(image_size=67, dropout=0.5)), {"mean": MEAN, "std": STD}, {})
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(model file, model) of AlexNet at 67x67 trained on TRAINED_IMAGES real images for TRAINED_EPOCHS epochs,
    without augmentation (the digits it is shown are centred as MNIST's), in the precision `auto` picks: a
    small real model for the tests of predict and of the served page (about 96% test accuracy at 8,000 images,
    which drew only 8 of the page test's 10 digits right on an Intel Xeon's AMX kernels; 16,000 drew 10 there;
    one to a few minutes on a 2-core CPU)."""
    from alexnet_mnist.device import resolve_precision
    from alexnet_mnist.model import ModelConfig
    from alexnet_mnist.model_file import save_model
    from alexnet_mnist.prepare import normalize
    from alexnet_mnist.train import fit

    images, labels = read_real(TRAIN_IMAGES, 3), read_real(TRAIN_LABELS, 1)

    def split(part):
        return {"images": normalize(images[part], MEAN, STD), "labels": torch.from_numpy(labels[part].astype(np.int64))}

    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    params = train_params(
        epochs=TRAINED_EPOCHS, lr_decay=0.6, batch_size=64, device="cpu", precision=precision, shift=0.0, rotate=0.0
    )
    config = ModelConfig(image_size=67, dropout=0.5)
    run = fit(split(slice(0, TRAINED_IMAGES)), split(slice(-500, None)), config, params, device, precision)
    path = tmp_path_factory.mktemp("trained") / "model.pt"
    save_model(path, run.model, {"mean": MEAN, "std": STD}, {})
    return path, run.model.eval()


# Small settings every end-to-end test starts from; the real defaults take hours on a CPU.
TINY = {
    "data": {"val_size": 64, "train_size": 256, "test_size": 100},
    "model": {"image_size": 67},
    "train": {"epochs": 1, "batch_size": 32, "device": "cpu"},
    "evaluate": {"batch_size": 50, "device": "cpu"},
}


def synthetic_mnist(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 images and (n,) labels; digit c is a bright 8x8 square at a place set by c."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels, strict=True):
        row, col = divmod(int(label), 5)
        image[2 + row * 12 : 10 + row * 12, 1 + col * 5 : 9 + col * 5] = 230
    return images, labels


def write_mnist(folder: Path, n_train: int = 400, n_test: int = 100, gz: bool = True) -> dict[str, str]:
    """Write the four MNIST files (made up, real format) to `folder`; return name -> SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = synthetic_mnist(n_train, seed=1)
    test_images, test_labels = synthetic_mnist(n_test, seed=2)
    arrays = {
        "train-images-idx3-ubyte": train_images,
        "train-labels-idx1-ubyte": train_labels,
        "t10k-images-idx3-ubyte": test_images,
        "t10k-labels-idx1-ubyte": test_labels,
    }
    checksums = {}
    for name, array in arrays.items():
        data = encode_idx(array)
        checksums[name] = hashlib.sha256(data).hexdigest()
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return checksums


def saved_weights(path) -> dict:
    """The state dict in a model file."""
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def history_without_seconds(path) -> list[dict]:
    """The rows of a history CSV without their (timing) seconds column."""
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def ran(output: str) -> list[str]:
    """The stages a dvc run's output says it ran, in order."""
    return re.findall(r"Running stage '(\w+)'", output)


def fail_line(result) -> str:
    """The one error line of a stage or dvc run that must fail with exit 1 and no traceback."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def assert_same_weights(a: dict, b: dict) -> None:
    """Two state dicts hold the same keys and bitwise-equal tensors."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def determinism_settings() -> dict:
    """The process-wide settings that device.make_deterministic and choose_kernels change."""
    import torch._inductor.config as inductor  # torch.compile's; use_deterministic_algorithms sets `deterministic`

    return {
        "algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "compile": inductor.deterministic,
        "cudnn.deterministic": torch.backends.cudnn.deterministic,
        "cudnn.benchmark": torch.backends.cudnn.benchmark,
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


@contextlib.contextmanager
def kept_determinism():
    """Inside, a test may switch deterministic kernels or cuDNN's benchmark on; after, each setting is as before."""
    import torch._inductor.config as inductor

    before = determinism_settings()
    try:
        yield before
    finally:
        torch.use_deterministic_algorithms(before["algorithms"], warn_only=before["warn_only"])
        inductor.deterministic = before["compile"]
        torch.backends.cudnn.deterministic = before["cudnn.deterministic"]
        torch.backends.cudnn.benchmark = before["cudnn.benchmark"]
        if before["CUBLAS_WORKSPACE_CONFIG"] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = before["CUBLAS_WORKSPACE_CONFIG"]


@pytest.fixture
def restore_determinism():
    with kept_determinism() as before:
        yield before


@pytest.fixture
def mnist_mirror(tmp_path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "mirror"
    return folder, write_mnist(folder)


def deep_update(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict):
            deep_update(base.setdefault(key, {}), value)
        else:
            base[key] = value
    return base


def params_at(params: dict, dotted: str):
    """params["train"]["lr"] for "train.lr": a key as dvc.lock and `-S` spell it."""
    value = params
    for key in dotted.split("."):
        value = value[key]
    return value


def tiny_params(**changes) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    deep_update(params, TINY)
    params["data"]["mirrors"] = []
    return deep_update(params, changes)


def set_limits(limits: dict) -> None:
    """Lower this process's resource limits, e.g. {"RLIMIT_FSIZE": 1000}; run in a child before exec.

    Writes beyond RLIMIT_FSIZE then fail with EFBIG, as a full disk fails with ENOSPC: SIGXFSZ is
    ignored (and stays so across exec) so that the write returns the error instead of killing the process.
    """
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    for name, limit in limits.items():
        resource.setrlimit(getattr(resource, name), (limit, limit))


# Terminal widths the two result tables must fit: `dvc metrics show` at 100 columns, the README's
# `dvc exp show` at 120, with no column folded into "…" (a new metric column has to earn its place)
METRICS_WIDTH = 100
EXP_SHOW_WIDTH = 120


def assert_fits(table: str, width: int) -> None:
    """`table` (a dvc command's output) has no line wider than `width` and no column folded into "…"."""
    lines = table.splitlines()
    assert lines and max(len(line) for line in lines) <= width, table
    assert "…" not in table, table


def png_of_size(width: int, height: int) -> bytes:
    """A real, valid 1-bit PNG of width x height white pixels, made row by row: a few bytes per row at any size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    compressor, row = zlib.compressobj(9), b"\x00" + b"\xff" * ((width + 7) // 8)  # filter byte 0, then pixels
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])  # 1 bit, gray
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


class Project:
    """A temp git + DVC repo holding this project's pipeline, run through the real CLIs."""

    def __init__(self, path: Path, mirror: Path):
        self.path = path
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "MNIST_MIRROR": str(mirror),
            # the stages import the project's own src, as an editable install of it would: the code
            # they run is the code dvc hashes, and an edit in the project is an edit of what runs
            "PYTHONPATH": os.pathsep.join(filter(None, [str(path / "src"), os.environ.get("PYTHONPATH")])),
            "DVC_NO_ANALYTICS": "1",
            "COLUMNS": "4000",  # wide enough that `dvc exp show` drops no column (its full table is about 2400 wide)
            "GIT_AUTHOR_NAME": "test",
            "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "test",
            "GIT_COMMITTER_EMAIL": "test@example.com",
        }

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 600,
        limits: dict | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run `args` in the project; `limits` maps resource.RLIMIT_* names to the child's limit, `env`
        overrides variables of the project's environment (e.g. COLUMNS)."""
        result = subprocess.run(
            args,
            cwd=self.path,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=(lambda: set_limits(limits)) if limits else None,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def dvc(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *args, **kwargs)

    def stage(self, name: str, check: bool = False, limits: dict | None = None) -> subprocess.CompletedProcess:
        """Run one stage's command directly, as dvc would."""
        return self.run(*stage_command(name), check=check, limits=limits)

    def write_params(self, params: dict) -> None:
        (self.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def wait_for_queue(self, timeout: float = 600) -> str:
        """Wait until `dvc queue` has nothing queued or running; its last `dvc queue status`."""
        deadline = time.time() + timeout
        while "Queued" in (status := self.dvc("queue", "status").stdout) or "Running" in status:
            if time.time() > deadline:
                raise AssertionError(f"dvc queue still busy after {timeout} s:\n{status}")
            time.sleep(2)
        return status

    def experiments(self) -> dict[str, tuple[dict, dict]]:
        """Each experiment's name -> (its params.yaml, its metrics by file), from `dvc exp show --json`."""
        found = {}
        for commit in json.loads(self.dvc("exp", "show", "--json").stdout):
            for exp in commit.get("experiments") or []:
                (revision,) = exp["revs"]
                data = revision["data"]
                found[exp["name"]] = (
                    data["params"]["params.yaml"]["data"],
                    {path: metrics["data"] for path, metrics in data["metrics"].items()},
                )
        return found


@functools.cache
def html_template() -> str:
    """The page template of `dvc plots`, relative to .dvc/, as this repo's .dvc/config sets it."""
    result = subprocess.run(
        [str(BIN / "dvc"), "config", "plots.html_template"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise AssertionError(
            f"{ROOT / '.dvc/config'} sets no plots.html_template ({result.stderr.strip()}); "
            "set it to the page template's path under .dvc/: dvc config plots.html_template <path>"
        )
    return result.stdout.strip()


def make_project(path: Path, mirror: Path, checksums: dict[str, str], params: dict) -> Project:
    path.mkdir(parents=True)
    for item in ("dvc.yaml", "stages", "src"):
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, path / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, path / item)
    shutil.copy2(ROOT / ".gitignore", path / ".gitignore")
    project = Project(path, mirror)
    project.write_params(params)
    (path / "mnist.sha256").write_text("".join(f"{digest}  {name}\n" for name, digest in checksums.items()))
    project.run("git", "init", "-q")
    project.dvc("init", "-q")
    project.dvc("config", "core.analytics", "false")
    template = html_template()  # the page that draws the charts offline, as in this repo
    (path / ".dvc" / template).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / ".dvc" / template, path / ".dvc" / template)
    project.dvc("config", "plots.html_template", template)
    shutil.copytree(ROOT / ".dvc" / "plots", path / ".dvc" / "plots")  # the vega templates dvc.yaml names
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "tiny pipeline")
    return project


@pytest.fixture
def project(tmp_path, mnist_mirror) -> Project:
    mirror, checksums = mnist_mirror
    return make_project(tmp_path / "project", mirror, checksums, tiny_params())
