"""Stage export: the trained model as a portable ONNX file, checked against torch on the prepared test split.

Writes the ONNX file only when onnxruntime's logits on every test image agree with torch's within
onnx_export.TOLERANCE, and the share of test images on which both predict the same digit as a metrics
JSON; otherwise it fails in one line and the old file stays.

Run by dvc repro with the paths in dvc.yaml; `python stages/export.py --help` lists them.
"""

from alexnet_mnist.cli import run_stage, stage_paths


def main() -> None:
    paths = stage_paths(__doc__, "model", "test", "onnx", "metrics")
    from alexnet_mnist import storage
    from alexnet_mnist.evaluate import check_normalization
    from alexnet_mnist.model_file import load_model
    from alexnet_mnist.onnx_export import export_checked

    model, normalization, _ = load_model(paths.model)
    test = storage.load_split(paths.test)
    check_normalization(paths.model, normalization, paths.test, test)
    comparison = export_checked(model, normalization, test["images"], paths.onnx)
    storage.write_json(paths.metrics, {"agreement": comparison["agreement"]})
    print(
        f"wrote {paths.onnx}: onnxruntime's logits within {comparison['max_abs_logit_difference']:.2g} of "
        f"torch's on {comparison['images']} test images (tolerance {comparison['tolerance']:g}), the same digit "
        f"on {comparison['agreement']:.2%}; wrote {paths.metrics}"
    )


if __name__ == "__main__":
    run_stage(main)
