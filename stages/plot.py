"""Stage plot: PNG images of the loss and accuracy curves (from the training history CSV), of the
test confusion matrix and of the first misclassified test digits (from the evaluate stage's
per-image CSV and the raw test images). Imports neither torch nor torchvision.

Run by dvc repro with the paths in dvc.yaml; `python stages/plot.py --help` lists them.
"""

from alexnet_mnist.cli import run_stage, stage_paths
from alexnet_mnist.errors import PipelineError
from alexnet_mnist.idx import TEST_IMAGES, read_images
from alexnet_mnist.params import PlotParams, load_params
from alexnet_mnist.plot import confusion_figure, curves_figure, misclassified_figure, read_csv, save_png
from alexnet_mnist.storage import CONFUSION_COLUMNS, HISTORY_COLUMNS


def main() -> None:
    paths = stage_paths(__doc__, "history", "confusion", "raw", "curves", "confusion-png", "misclassified")
    (params,) = load_params("params.yaml", plot=PlotParams)
    history = read_csv(paths.history, HISTORY_COLUMNS)
    confusion = read_csv(paths.confusion, CONFUSION_COLUMNS)
    save_png(curves_figure(history, params), paths.curves)
    save_png(confusion_figure(confusion, params), paths.confusion_png)
    test_images = read_images(paths.raw / TEST_IMAGES)
    if len(confusion) > len(test_images):
        raise PipelineError(
            f"{paths.confusion} has {len(confusion)} rows but {paths.raw / TEST_IMAGES} holds "
            f"{len(test_images)} images; rerun the pipeline: dvc repro"
        )
    save_png(misclassified_figure(test_images, confusion, params), paths.misclassified)
    print(f"wrote {paths.curves}, {paths.confusion_png}, {paths.misclassified}")


if __name__ == "__main__":
    run_stage(main)
