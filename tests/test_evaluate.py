"""Evaluation on known predictions: accuracy, per-class accuracy, loss, confusion rows; the normalization check."""

import math

import pytest
import torch

from alexnet_mnist.errors import PipelineError
from alexnet_mnist.evaluate import check_normalization, confusion_rows, per_class_rows, predict, summarize
from alexnet_mnist.model import AlexNet, ModelConfig


def test_summarize_known_predictions():
    labels = torch.tensor([0, 1, 2, 2, 1])
    predicted = torch.tensor([0, 1, 1, 2, 1])
    assert summarize(0.5, predicted, labels) == {"accuracy": 0.8, "loss": 0.5}
    assert per_class_rows(predicted, labels, num_classes=4) == [
        {"digit": 0, "accuracy": 1.0, "images": 1},
        {"digit": 1, "accuracy": 1.0, "images": 2},
        {"digit": 2, "accuracy": 0.5, "images": 2},
        {"digit": 3, "accuracy": None, "images": 0},
    ]


def test_predict_with_a_model_of_known_output():
    """An AlexNet whose logits are its last layer's bias: it always says 3, with a known cross-entropy."""
    model = AlexNet(ModelConfig(image_size=67, dropout=0.5))
    last = model.classifier[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0, 0, 2.0, 0, 0, 0, 0, 0, 0]))
    images = torch.randn(7, 1, 28, 28)
    labels = torch.tensor([3, 3, 3, 0, 1, 2, 3])
    loss, predicted = predict(model, images, labels, batch_size=3, precision="fp32")
    assert predicted.tolist() == [3] * 7
    p3 = math.exp(2) / (math.exp(2) + 9)
    expected = (4 * -math.log(p3) + 3 * -math.log(1 / (math.exp(2) + 9))) / 7
    assert math.isclose(loss, expected, rel_tol=1e-6)
    assert summarize(loss, predicted, labels)["accuracy"] == round(4 / 7, 6)


def test_confusion_rows_pair_each_label_with_its_prediction_in_order():
    rows = confusion_rows(torch.tensor([0, 1, 2]), torch.tensor([0, 7, 2]))
    assert rows == [{"actual": 0, "predicted": 0}, {"actual": 1, "predicted": 7}, {"actual": 2, "predicted": 2}]


def test_a_model_normalized_otherwise_than_the_split_is_refused_naming_both_files():
    check_normalization("model.pt", {"mean": 0.1307, "std": 0.3081}, "test.pt", {"mean": 0.1307, "std": 0.3081})
    with pytest.raises(
        PipelineError,
        match=r"^model.pt was trained on images normalized with mean 0.1307, std "
        r"0.3081, but test.pt uses mean 0.5, std 0.3081; ",
    ):
        check_normalization("model.pt", {"mean": 0.1307, "std": 0.3081}, "test.pt", {"mean": 0.5, "std": 0.3081})
