"""A timm ``resnet18`` at 224 px, random init, ``linear`` exits after every stage, and ``n`` search and ``n``
holdout random images: the larger model the time benchmarks use beside the demo (no weights to fetch)."""
from __future__ import annotations

from typing import Any


def random_resnet18(n: int) -> tuple[Any, dict[str, Any], Any]:
    """(model in eval mode, {"search", "holdout"} datasets, the holdout images); seeded."""
    import torch

    from exits import attach_exits
    from exits.data import TensorDataset
    from exits.model import create_backbone

    torch.manual_seed(0)
    model = attach_exits(create_backbone("resnet18", num_classes=1000), points="stages", heads="linear",
                         input_size=(3, 224, 224)).eval()
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(2 * n, 3, 224, 224, generator=g), torch.randint(0, 1000, (2 * n,), generator=g)
    splits = {"search": TensorDataset(images[:n], labels[:n]), "holdout": TensorDataset(images[n:], labels[n:])}
    return model, splits, images[n:]
