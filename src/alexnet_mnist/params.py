"""Typed loader for params.yaml: one frozen dataclass per section, strict keys, types and ranges."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import PipelineError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
MIN_IMAGE_SIZE = 67  # pixels: the smallest input whose last max-pool still yields 1x1


class ParamsError(PipelineError):
    pass


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ParamsError(f"params.yaml: {key}: {message}")


def _positive_int(value: int, key: str) -> None:
    _require(value >= 1, key, f"must be a positive integer, got {value}")


def _one_of(value: str, choices: tuple[str, ...], key: str) -> None:
    _require(value in choices, key, f"{value!r} is not one of {', '.join(choices)}")


@dataclass(frozen=True)
class DataParams:
    mirrors: tuple[str, ...]
    val_size: int
    train_size: int | None
    test_size: int | None
    seed: int
    mean: float
    std: float

    def __post_init__(self) -> None:
        _require(self.val_size >= 1, "data.val_size", f"must be at least 1, got {self.val_size}")
        _require(self.train_size is None or self.train_size >= 1, "data.train_size",
                 f"must be null (all) or at least 1, got {self.train_size}")
        _require(self.test_size is None or self.test_size >= 1, "data.test_size",
                 f"must be null (all) or at least 1, got {self.test_size}")
        _require(self.std > 0, "data.std", f"must be positive, got {self.std}")


@dataclass(frozen=True)
class ModelParams:
    image_size: int
    dropout: float

    def __post_init__(self) -> None:
        _require(self.image_size >= MIN_IMAGE_SIZE, "model.image_size",
                 f"{self.image_size} is too small for AlexNet: the minimum is {MIN_IMAGE_SIZE} (the seed uses 227)")
        _require(0.0 <= self.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int
    lr: float
    seed: int
    device: str
    precision: str
    compile: bool
    deterministic: bool
    nproc: int

    def __post_init__(self) -> None:
        _positive_int(self.epochs, "train.epochs")
        _positive_int(self.batch_size, "train.batch_size")
        _require(self.lr > 0, "train.lr", f"must be positive, got {self.lr}")
        _positive_int(self.nproc, "train.nproc")
        _one_of(self.device, DEVICES, "train.device")
        _one_of(self.precision, PRECISIONS, "train.precision")


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int
    device: str
    precision: str

    def __post_init__(self) -> None:
        _positive_int(self.batch_size, "evaluate.batch_size")
        _one_of(self.device, DEVICES, "evaluate.device")
        _one_of(self.precision, PRECISIONS, "evaluate.precision")


@dataclass(frozen=True)
class PlotParams:
    dpi: int
    width: float
    height: float

    def __post_init__(self) -> None:
        _require(self.dpi >= 10, "plot.dpi", f"must be at least 10, got {self.dpi}")
        _require(self.width > 0 and self.height > 0, "plot.width/plot.height",
                 f"must be positive, got {self.width} x {self.height}")


SECTIONS = {
    "data": DataParams,
    "model": ModelParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "plot": PlotParams,
}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value, tp, key: str):
    """Check `value` against the annotation `tp`; return it in the dataclass's form (lists become tuples)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = [t for t in options if t is not type(None)]
        return _convert(value, inner, key)
    if origin is tuple:
        _require(isinstance(value, list), key, f"must be a list, got {value!r}")
        (item,) = [t for t in typing.get_args(tp) if t is not Ellipsis]
        return tuple(_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _require(isinstance(value, dict), key, f"must be a mapping, got {value!r}")
        key_type, value_type = typing.get_args(tp)
        return {_convert(k, key_type, key): _convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        _require(ok, key, f"must be a number, got {value!r}")
        return float(value)
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        _require(ok, key, f"must be an integer, got {value!r}")
        return value
    _require(isinstance(value, tp), key, f"must be of type {_type_name(tp)}, got {value!r}")
    return value


def parse_section(name: str, raw) -> object:
    """Build the dataclass of section `name` from its raw YAML mapping."""
    cls = SECTIONS[name]
    _require(isinstance(raw, dict), name, f"must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(fields))
    _require(not unknown, f"{name}.{unknown[0]}" if unknown else name,
             f"unknown key; the keys of {name} are: {', '.join(fields)}")
    missing = [f for f in fields if f not in raw]
    _require(not missing, f"{name}.{missing[0]}" if missing else name, "missing key")
    return cls(**{f: _convert(raw[f], hints[f], f"{name}.{f}") for f in fields})


def load_params(path: str | Path = "params.yaml", *sections: str):
    """Load and validate every section of `path`; return the dataclasses of `sections`, in order."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project root, where params.yaml lives") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).replace("\n", " ")
        raise ParamsError(f"{path}: malformed YAML{where}: {problem}; fix it, or restore it: git checkout {path}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: must be a mapping of sections ({', '.join(SECTIONS)}), got {raw!r}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{path}: unknown section {unknown[0]!r}; the sections are: {', '.join(SECTIONS)}")
    missing = [s for s in SECTIONS if s not in raw]
    if missing:
        raise ParamsError(f"{path}: missing section {missing[0]!r}")
    parsed = {name: parse_section(name, raw[name]) for name in SECTIONS}
    return tuple(parsed[s] for s in sections)
