"""The original tutorial's training loop, the one the benchmarks measure the project's against.

torchvision's MNIST dataset with per-sample Resize + ToTensor + Normalize in a DataLoader, fp32,
the default memory layout, torch.nn's LocalResponseNorm and Dropout, and loss.item() every step;
(here) no final Softmax, so both loops train the same network.
"""

from __future__ import annotations

from pathlib import Path

import torch
from common import reference_model


def loader(root: Path, data, size: int, train_size: int | None, test: bool, batch_size: int, seed: int):
    """Batches of the training images the prepare stage picks (data.val_size, data.seed; `train_size`
    of them, None: all) or of the test images, resized per sample to `size`."""
    import torchvision.transforms as T
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import MNIST

    from alexnet_mnist.prepare import split_indices

    transform = T.Compose([T.Resize(size), T.ToTensor(), T.Normalize((data.mean,), (data.std,))])
    dataset = MNIST(str(root), train=not test, download=False, transform=transform)
    if not test:
        available = len(dataset) - data.val_size
        train_idx, _ = split_indices(len(dataset), data.val_size, train_size or available, data.seed)
        dataset = Subset(dataset, train_idx.tolist())
    return DataLoader(dataset, batch_size=batch_size, shuffle=not test, generator=torch.Generator().manual_seed(seed))


class ReferenceLoop:
    """The reference network, Adam and cross-entropy on `device`, trained and evaluated as the tutorial does."""

    def __init__(self, config, lr: float, device: torch.device):
        self.device = device
        self.model = reference_model(config).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.criterion = torch.nn.CrossEntropyLoss()

    def train(self, batches, steps: int | None = None) -> None:
        """Train on `batches`, stopping after `steps` of them (None: all)."""
        self.model.train()
        for step, (images, labels) in enumerate(batches):
            if step == steps:
                break
            images, labels = images.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            loss = self.criterion(self.model(images), labels)
            loss.backward()
            self.optimizer.step()
            loss.item()  # the tutorial's running-loss bookkeeping: a host sync every step

    @torch.no_grad()
    def evaluate(self, batches, limit: int | None = None) -> tuple[float, int]:
        """(accuracy, images seen) over `batches`, stopping once `limit` images are seen (None: all)."""
        self.model.eval()
        correct = seen = 0
        for images, labels in batches:
            predicted = self.model(images.to(self.device)).argmax(1).cpu()
            correct, seen = correct + (predicted == labels).sum().item(), seen + len(labels)
            if limit is not None and seen >= limit:
                break
        return correct / max(seen, 1), seen
