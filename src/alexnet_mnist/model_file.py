"""The model file models/model.pt: weights plus everything needed to rebuild and feed the network."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import storage
from .errors import PipelineError
from .model import AlexNet, ModelConfig

REMAKE = "rerun the train stage: dvc repro -f train"


def save_model(path: Path, model: AlexNet, normalization: dict, training: dict) -> None:
    """Write the weights with the model config and the input normalization they were trained with, and
    `training`: how the run went and where it ran (the train stage's metrics, device, precision, versions)."""
    storage.save(
        path,
        {
            "config": dataclasses.asdict(model.config),
            "state_dict": model.state_dict(),
            "normalization": normalization,  # {'mean', 'std'} of the 0..1 pixels, as in params data.*
            "train": training,
        },
    )


def load_model(path: Path) -> tuple[AlexNet, dict, dict]:
    """(model rebuilt from the file's own config, its normalization, how it was trained: save_model's
    `training`); errors name the file."""
    saved = storage.load(path, "an AlexNet model file", REMAKE, keys=("config", "state_dict", "normalization"))
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    config = saved["config"]
    if not isinstance(config, dict) or set(config) != fields:
        raise PipelineError(f"{path}: model config {config!r} does not have the keys {sorted(fields)}; {REMAKE}")
    try:
        model = AlexNet(ModelConfig(**config))
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, PipelineError, TypeError) as e:
        raise PipelineError(f"{path}: weights do not fit the model config {config}: {e}; {REMAKE}") from None
    return model, saved["normalization"], saved.get("train", {})
