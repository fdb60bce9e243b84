"""Stage evaluate: test accuracy of the trained model on the prepared test split, written as a
metrics JSON; the accuracy per digit as a CSV for `dvc plots`; a CSV of (actual, predicted) per test
image for DVC's confusion plot and the plot stage's gallery of misclassified digits; and the run's
facts (where and how the model was trained and tested) as a JSON beside the metrics.

Run by dvc repro with the paths in dvc.yaml; `python stages/evaluate.py --help` lists them.
"""

from alexnet_mnist.cli import run_stage, stage_paths
from alexnet_mnist.params import EvaluateParams, load_params


def main() -> None:
    paths = stage_paths(__doc__, "model", "test", "metrics", "per-class", "confusion", "run-info")
    (params,) = load_params("params.yaml", evaluate=EvaluateParams)
    import torch  # loads only once params are valid

    from alexnet_mnist import device as dev
    from alexnet_mnist import memory, storage
    from alexnet_mnist.evaluate import check_normalization, confusion_rows, per_class_rows, predict, summarize
    from alexnet_mnist.model import NUM_CLASSES
    from alexnet_mnist.model_file import load_model

    device = dev.resolve_device(params.device, "evaluate.device")
    dev.tune_cpu()
    precision = dev.resolve_precision(params.precision, device)
    model, normalization, training = load_model(paths.model)
    test = storage.load_split(paths.test)
    check_normalization(paths.model, normalization, paths.test, test)
    config, images = model.config, memory.batch_share(params.batch_size, len(test["labels"]))
    memory.require_fits(config, "evaluate.batch_size", params.batch_size, images, device, precision, training=False)
    with memory.out_of_memory("evaluate", device, config.image_size, "evaluate.batch_size", params.batch_size):
        model = model.to(device, memory_format=torch.channels_last)
        loss, predicted = predict(model, test["images"], test["labels"], params.batch_size, precision, progress="test")
    metrics = summarize(loss, predicted, test["labels"])
    run_info = {
        "train": training.get("run", {}),  # what the train stage recorded in the model file
        "evaluate": {**dev.describe(device, precision), "test_images": len(test["labels"])},
    }
    storage.write_csv(paths.confusion, confusion_rows(test["labels"], predicted), storage.CONFUSION_COLUMNS)
    storage.write_csv(
        paths.per_class, per_class_rows(predicted, test["labels"], NUM_CLASSES), storage.PER_CLASS_COLUMNS
    )
    storage.write_json(paths.run_info, run_info)
    storage.write_json(paths.metrics, metrics)
    print(
        f"test accuracy {metrics['accuracy']:.4f} on {len(test['labels'])} images "
        f"(loss {metrics['loss']:.4f}); wrote {paths.metrics}, {paths.per_class}, {paths.confusion}, {paths.run_info}"
    )


if __name__ == "__main__":
    run_stage(main)
