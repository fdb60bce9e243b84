"""Stage train: train AlexNet on the prepared training split, validating after every epoch.

After every epoch it writes the history so far (CSV) and the last epoch's metrics on the training and
validation splits (JSON), so the curve of a long run shows while it trains, and a checkpoint that a
rerun with the same params, data and code resumes from. At the end it writes the model file, which
also records the metrics and where the run trained (device, precision, versions). With train.nproc
above 1 it starts itself under torchrun; DistributedDataParallel averages the gradients and process 0
writes.

Run by dvc repro with the paths in dvc.yaml; `python stages/train.py --help` lists them.
"""

import sys
from pathlib import Path

from alexnet_mnist.cli import run_stage, stage_paths
from alexnet_mnist.model import ModelConfig
from alexnet_mnist.params import TrainParams, load_params


def main() -> None:
    paths = stage_paths(__doc__, "train", "val", "model", "checkpoint", "history", "train-metrics", "val-metrics")
    config, train_params = load_params("params.yaml", model=ModelConfig, train=TrainParams)
    from alexnet_mnist import device as dev
    from alexnet_mnist import distributed, memory, storage
    from alexnet_mnist.checkpoint import code_digest, file_digest
    from alexnet_mnist.model_file import save_model
    from alexnet_mnist.train import fit, summarize_history

    if train_params.nproc > 1 and not distributed.under_torchrun():
        sys.exit(distributed.launch(train_params.nproc, __file__, sys.argv[1:]))
    device = dev.resolve_device(train_params.device, "train.device")
    dev.choose_kernels(device, train_params.deterministic)
    device = distributed.setup(device)  # this process's GPU when started by torchrun
    dev.tune_cpu()
    precision = dev.resolve_precision(train_params.precision, device)
    train_set, val_set = storage.load_split(paths.train), storage.load_split(paths.val)
    main_process, processes = distributed.is_main(), distributed.world()
    share = memory.batch_share(train_params.batch_size, len(train_set["labels"]), processes)  # images per step here
    memory.require_fits(config, "train.batch_size", train_params.batch_size, share, device, precision, training=True)
    if main_process:
        print(
            f"training on {len(train_set['labels'])} images, validating on {len(val_set['labels'])}; "
            f"device {device}, precision {precision}, {processes} process(es)"
        )
    # a checkpoint is reused only with the same data and the same code (the stage's deps in dvc.yaml)
    inputs = file_digest(paths.train, paths.val) + code_digest(Path(__file__))

    def write_metrics(run) -> dict:  # after every epoch, and at the end; the metrics it wrote, by split
        training, validation = summarize_history(run.history, len(train_set["labels"]))
        storage.write_csv(paths.history, run.history, storage.HISTORY_COLUMNS)
        storage.write_json(paths.train_metrics, training)
        storage.write_json(paths.val_metrics, validation)
        return {"train": training, "val": validation}

    try:
        with memory.out_of_memory("train", device, config.image_size, "train.batch_size", train_params.batch_size):
            run = fit(
                train_set,
                val_set,
                config,
                train_params,
                device,
                precision,
                checkpoint=paths.checkpoint,
                inputs_digest=inputs,
                on_epoch=write_metrics,
            )
    finally:
        distributed.teardown()
    if not main_process:
        return  # process 0 writes the outputs
    metrics = write_metrics(run)  # also when the checkpoint already held every epoch
    facts = {**dev.describe(device, precision), "processes": processes, "epochs": len(run.history)}
    normalization = {"mean": train_set["mean"], "std": train_set["std"]}
    save_model(paths.model, run.model, normalization, {**metrics, "run": facts})
    print(f"wrote {paths.model}, {paths.history}, {paths.train_metrics}, {paths.val_metrics}")


if __name__ == "__main__":
    run_stage(main)
