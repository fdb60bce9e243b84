"""Stage evaluate: test accuracy of the trained model on the prepared test split, written as a
metrics JSON, plus a CSV of (actual, predicted) per test image for DVC's confusion plot and the
plot stage's gallery of misclassified digits.

Run by dvc repro with the paths in dvc.yaml; `python stages/evaluate.py --help` lists them.
"""

from alexnet_mnist.cli import run_stage, stage_paths
from alexnet_mnist.params import EvaluateParams, load_params


def main() -> None:
    paths = stage_paths(__doc__, "model", "test", "metrics", "confusion")
    (params,) = load_params("params.yaml", evaluate=EvaluateParams)
    import torch  # loads only once params are valid

    from alexnet_mnist import device as dev
    from alexnet_mnist import memory, storage
    from alexnet_mnist.evaluate import check_normalization, confusion_rows, predict, summarize
    from alexnet_mnist.model import NUM_CLASSES
    from alexnet_mnist.model_file import load_model

    device = dev.resolve_device(params.device, "evaluate.device")
    dev.tune_cpu()
    precision = dev.resolve_precision(params.precision, device)
    model, normalization = load_model(paths.model)
    test = storage.load_split(paths.test)
    check_normalization(paths.model, normalization, paths.test, test)
    config, images = model.config, memory.batch_share(params.batch_size, len(test["labels"]))
    memory.require_fits(config, "evaluate.batch_size", params.batch_size, images, device, precision, training=False)
    with memory.out_of_memory("evaluate", device, config.image_size, "evaluate.batch_size", params.batch_size):
        model = model.to(device, memory_format=torch.channels_last)
        loss, predicted = predict(model, test["images"], test["labels"], params.batch_size, precision, progress="test")
    metrics = {**summarize(loss, predicted, test["labels"], NUM_CLASSES), **dev.describe(device, precision)}
    storage.write_csv(paths.confusion, confusion_rows(test["labels"], predicted), storage.CONFUSION_COLUMNS)
    storage.write_json(paths.metrics, metrics)
    print(
        f"test accuracy {metrics['accuracy']:.4f} on {metrics['samples']} images "
        f"(loss {metrics['loss']:.4f}); wrote {paths.metrics}, {paths.confusion}"
    )


if __name__ == "__main__":
    run_stage(main)
