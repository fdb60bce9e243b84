"""Stage export: the trained model as a portable ONNX file, checked against torch on the prepared test split.

Writes the ONNX file only when onnxruntime's logits on every test image agree with torch's within
onnx_export.TOLERANCE, and the measured difference as a metrics JSON; otherwise it fails in one line
and the old file stays.

Run by dvc repro with the paths in dvc.yaml; `python stages/export.py --help` lists them.
"""

from alexnet_mnist.cli import run_stage, stage_paths


def main() -> None:
    paths = stage_paths(__doc__, "model", "test", "onnx", "metrics")
    from alexnet_mnist import atomic
    from alexnet_mnist.errors import PipelineError
    from alexnet_mnist.model_file import load_model
    from alexnet_mnist.onnx_export import check, compare, export
    from alexnet_mnist.prepare import load_split

    model, normalization = load_model(paths.model)
    test = load_split(paths.test)
    if (test["mean"], test["std"]) != (normalization["mean"], normalization["std"]):
        raise PipelineError(
            f"{paths.model} was trained on images normalized with mean {normalization['mean']}, std "
            f"{normalization['std']}, but {paths.test} uses mean {test['mean']}, std {test['std']}; "
            f"rerun the pipeline so both match: dvc repro"
        )
    with atomic.atomic_path(paths.onnx) as tmp:  # checked before it replaces the old file
        export(model, normalization, tmp)
        comparison = compare(tmp, model, test["images"])
        check(paths.onnx, comparison)
    atomic.write_json(paths.metrics, comparison)
    print(f"wrote {paths.onnx}: onnxruntime's logits within {comparison['max_abs_logit_difference']:.2g} of "
          f"torch's on {comparison['images']} test images (tolerance {comparison['tolerance']:g}); "
          f"wrote {paths.metrics}")


if __name__ == "__main__":
    run_stage(main)
