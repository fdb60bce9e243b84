"""Typed loader for params.yaml: one frozen dataclass per section, strict keys, types and ranges."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, PipelineError, require

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


class ParamsError(PipelineError):
    pass


def _positive_int(value: int, key: str) -> None:
    require(value >= 1, key, f"must be a positive integer, got {value}")


def _one_of(value: str, choices: tuple[str, ...], key: str) -> None:
    require(value in choices, key, f"{value!r} is not one of {', '.join(choices)}")


def _within(value: float, low: float, high: float, key: str) -> None:
    require(low <= value <= high, key, f"must be in [{low:g}, {high:g}], got {value}")


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
        require(self.val_size >= 1, "data.val_size", f"must be at least 1, got {self.val_size}")
        require(
            self.train_size is None or self.train_size >= 1,
            "data.train_size",
            f"must be null (all) or at least 1, got {self.train_size}",
        )
        require(
            self.test_size is None or self.test_size >= 1,
            "data.test_size",
            f"must be null (all) or at least 1, got {self.test_size}",
        )
        require(self.std > 0, "data.std", f"must be positive, got {self.std}")


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
    lr_decay: float
    shift: float
    rotate: float

    def __post_init__(self) -> None:
        _positive_int(self.epochs, "train.epochs")
        _positive_int(self.batch_size, "train.batch_size")
        require(self.lr > 0, "train.lr", f"must be positive, got {self.lr}")
        require(0 < self.lr_decay <= 1, "train.lr_decay", f"must be in (0, 1], got {self.lr_decay}")
        _within(self.shift, 0, 8, "train.shift")
        _within(self.rotate, 0, 45, "train.rotate")
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
        require(self.dpi >= 10, "plot.dpi", f"must be at least 10, got {self.dpi}")
        require(
            self.width > 0 and self.height > 0,
            "plot.width/plot.height",
            f"must be positive, got {self.width} x {self.height}",
        )


SECTIONS = ("data", "model", "train", "evaluate", "plot")  # model: model.ModelConfig, the model's own


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` (a number, an int, a str, a bool, an optional or a
    tuple of those); return it in the dataclass's form (lists become tuples)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = [t for t in options if t is not type(None)]
        return _convert(value, inner, key)
    if origin is tuple:
        require(isinstance(value, list), key, f"must be a list, got {value!r}")
        (item,) = [t for t in typing.get_args(tp) if t is not Ellipsis]
        return tuple(_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        require(ok, key, f"must be a number, got {value!r}")
        return float(value)
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        require(ok, key, f"must be an integer, got {value!r}")
        return value
    require(isinstance(value, tp), key, f"must be of type {_type_name(tp)}, got {value!r}")
    return value


def parse_section(name: str, raw: Any, cls: type) -> object:
    """Build dataclass `cls` from section `name`'s raw YAML mapping; ConfigError names the bad key."""
    require(isinstance(raw, dict), name, f"must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(fields))
    require(
        not unknown,
        f"{name}.{unknown[0]}" if unknown else name,
        f"unknown key; the keys of {name} are: {', '.join(fields)}",
    )
    missing = [f for f in fields if f not in raw]
    require(not missing, f"{name}.{missing[0]}" if missing else name, "missing key")
    return cls(**{f: _convert(raw[f], hints[f], f"{name}.{f}") for f in fields})


def load_params(path: str | Path, **sections: type) -> tuple:
    """The sections of `path` asked for, each built as its dataclass, in order:
    `load_params("params.yaml", model=ModelConfig, train=TrainParams)`.

    Each is checked strictly (unknown and missing keys, types, ranges). Only the sections asked
    for are built: each stage checks what it uses, and one that does not ask for the model's
    config never imports the model (nor torch).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project root, where params.yaml lives") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).replace("\n", " ")
        raise ParamsError(
            f"{path}: malformed YAML{where}: {problem}; fix it, or restore it: git checkout {path}"
        ) from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: must be a mapping of sections ({', '.join(SECTIONS)}), got {raw!r}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{path}: unknown section {unknown[0]!r}; the sections are: {', '.join(SECTIONS)}")
    missing = [s for s in SECTIONS if s not in raw]
    if missing:
        raise ParamsError(f"{path}: missing section {missing[0]!r}")
    try:
        return tuple(parse_section(name, raw[name], cls) for name, cls in sections.items())
    except ConfigError as e:
        raise ParamsError(f"{path}: {e}") from None
