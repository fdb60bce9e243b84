"""Stage plot: plots/accuracy.png from metrics/accuracy.csv and plots/confusion.png from
metrics/confusion.csv. Imports neither torch nor torchvision.

Run: python stages/plot.py (from the project root; dvc repro does this).
"""

from pathlib import Path

from alexnet_mnist.cli import run_stage
from alexnet_mnist.params import load_params
from alexnet_mnist.plot import accuracy_figure, confusion_figure, read_csv, save_png

HISTORY = Path("metrics/accuracy.csv")
CONFUSION = Path("metrics/confusion.csv")
ACCURACY_PNG = Path("plots/accuracy.png")
CONFUSION_PNG = Path("plots/confusion.png")


def main() -> None:
    (params,) = load_params("params.yaml", "plot")
    save_png(accuracy_figure(read_csv(HISTORY, ("epoch", "train_accuracy", "val_accuracy")), params), ACCURACY_PNG)
    save_png(confusion_figure(read_csv(CONFUSION, ("actual", "predicted")), params), CONFUSION_PNG)
    print(f"wrote {ACCURACY_PNG}, {CONFUSION_PNG}")


if __name__ == "__main__":
    run_stage(main)
