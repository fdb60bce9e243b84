"""Stage train: train AlexNet on data/prepared/ and write models/model.pt, the per-epoch history
metrics/accuracy.csv and the summary metrics/train.json. Saves models/checkpoint.pt after every
epoch and resumes from it when rerun with the same params. With train.nproc above 1 it starts
itself under torchrun; DistributedDataParallel averages the gradients and process 0 writes.

Run: python stages/train.py (from the project root; dvc repro does this).
"""

import sys
from pathlib import Path

from alexnet_mnist.cli import run_stage
from alexnet_mnist.params import load_params

PREPARED = Path("data/prepared")
MODEL = Path("models/model.pt")
CHECKPOINT = Path("models/checkpoint.pt")
HISTORY = Path("metrics/accuracy.csv")
SUMMARY = Path("metrics/train.json")


def main() -> None:
    model_params, train_params = load_params("params.yaml", "model", "train")
    # torch loads only once the params are valid, so a typo fails in a blink
    import alexnet_mnist
    from alexnet_mnist import atomic, device as dev, distributed
    from alexnet_mnist.checkpoint import file_digest
    from alexnet_mnist.model_file import save_model
    from alexnet_mnist.prepare import load_split
    from alexnet_mnist.train import HISTORY_COLUMNS, fit, summarize_history

    if train_params.nproc > 1 and not distributed.under_torchrun():
        sys.exit(distributed.launch(train_params.nproc, __file__))
    device = dev.resolve_device(train_params.device, "train.device")
    if train_params.deterministic:
        dev.make_deterministic(device)
    device = distributed.setup(device)  # this process's GPU when started by torchrun
    dev.tune_cpu()
    precision = dev.resolve_precision(train_params.precision, device)
    train_set, val_set = load_split(PREPARED / "train.pt"), load_split(PREPARED / "val.pt")
    main_process = distributed.is_main()
    if main_process:
        print(f"training on {len(train_set['labels'])} images, validating on {len(val_set['labels'])}; "
              f"device {device}, precision {precision}, {distributed.world()} process(es)")
    # a checkpoint is reused only with the same data and the same code
    code = sorted(Path(alexnet_mnist.__file__).parent.glob("*.py")) + [Path(__file__)]
    inputs = file_digest(PREPARED / "train.pt", PREPARED / "val.pt", *code)
    processes = distributed.world()
    try:
        run = fit(train_set, val_set, model_params, train_params, device, precision, checkpoint=CHECKPOINT,
                  inputs_digest=inputs)
    finally:
        distributed.teardown()
    if not main_process:
        return  # process 0 writes the outputs
    summary = {**summarize_history(run.history, len(train_set["labels"])), "processes": processes,
               **dev.describe(device, precision)}
    normalization = {"mean": train_set["mean"], "std": train_set["std"]}
    save_model(MODEL, run.model, normalization, summary)
    atomic.write_csv(HISTORY, run.history, HISTORY_COLUMNS)
    atomic.write_json(SUMMARY, summary)
    print(f"wrote {MODEL}, {HISTORY}, {SUMMARY}")


if __name__ == "__main__":
    run_stage(main)
