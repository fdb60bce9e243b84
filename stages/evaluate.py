"""Stage evaluate: test accuracy of models/model.pt on data/prepared/test.pt, written to
metrics/eval.json, plus metrics/confusion.csv (actual, predicted) for DVC's confusion plot.

Run: python stages/evaluate.py (from the project root; dvc repro does this).
"""

from pathlib import Path

from alexnet_mnist.cli import run_stage
from alexnet_mnist.params import load_params

MODEL = Path("models/model.pt")
TEST = Path("data/prepared/test.pt")
METRICS = Path("metrics/eval.json")
CONFUSION = Path("metrics/confusion.csv")


def main() -> None:
    (params,) = load_params("params.yaml", "evaluate")
    import torch  # loads only once params are valid

    from alexnet_mnist import atomic, device as dev
    from alexnet_mnist.errors import PipelineError
    from alexnet_mnist.evaluate import predict, summarize
    from alexnet_mnist.model_file import load_model
    from alexnet_mnist.prepare import load_split

    device = dev.resolve_device(params.device, "evaluate.device")
    dev.tune_cpu()
    precision = dev.resolve_precision(params.precision, device)
    model, normalization = load_model(MODEL)
    test = load_split(TEST)
    if (test["mean"], test["std"]) != (normalization["mean"], normalization["std"]):
        raise PipelineError(
            f"{MODEL} was trained on images normalized with mean {normalization['mean']}, std "
            f"{normalization['std']}, but {TEST} uses mean {test['mean']}, std {test['std']}; "
            f"rerun the pipeline so both match: dvc repro"
        )
    model = model.to(device, memory_format=torch.channels_last)
    loss, predicted = predict(model, test["images"], test["labels"], model.config.image_size,
                              params.batch_size, precision)
    metrics = {**summarize(loss, predicted, test["labels"], model.config.num_classes),
               **dev.describe(device, precision)}
    rows = [{"actual": int(a), "predicted": int(p)} for a, p in zip(test["labels"], predicted, strict=True)]
    atomic.write_csv(CONFUSION, rows, ("actual", "predicted"))
    atomic.write_json(METRICS, metrics)
    print(f"test accuracy {metrics['accuracy']:.4f} on {metrics['samples']} images "
          f"(loss {metrics['loss']:.4f}); wrote {METRICS}, {CONFUSION}")


if __name__ == "__main__":
    run_stage(main)
