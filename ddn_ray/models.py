"""Model builders. A model is rebuilt anywhere (worker, replica, driver) from its spec."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from ddn_ray.config import ModelConfig

__all__ = ["CNN", "MLP", "build", "build_for_inference", "fresh", "load_numpy_state", "state_to_numpy"]


def _hidden(width: int, hidden_sizes: tuple[int, ...], dropout: float) -> tuple[list[nn.Module], int]:
    """``Linear -> ReLU (-> Dropout)`` per hidden size, from ``width`` inputs; returns the layers and the last width."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    return layers, width


class MLP(nn.Module):
    """A multilayer perceptron classifier.

    Args:
        num_features: input width.
        num_classes: output width (logits).
        hidden_sizes: width of each hidden layer, e.g. ``(64, 64)``.
        dropout: dropout probability after each hidden activation.

    Shapes:
        ``x: (batch, num_features) float32 -> logits: (batch, num_classes) float32``.
    """

    def __init__(
        self, num_features: int, num_classes: int, hidden_sizes: tuple[int, ...], dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers, width = _hidden(num_features, hidden_sizes, dropout)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class CNN(nn.Module):
    """A small convolutional classifier on flattened image rows (LeNet-style blocks).

    Each block is ``Conv2d(3x3, padding 1) -> ReLU -> MaxPool2d(2)``; then the hidden
    linear layers of :class:`MLP`. Rows stay flat everywhere else (streams, Ray Datasets,
    HTTP), so the model reshapes them itself.

    Args:
        image_shape: ``(channels, height, width)`` of one image.
        num_classes: output width (logits).
        channels: output channels of each conv block, e.g. ``(16, 32)``.
        hidden_sizes: width of each hidden linear layer after the conv blocks.
        dropout: dropout probability after each hidden activation.

    Shapes:
        ``x: (batch, C*H*W) float32 -> logits: (batch, num_classes) float32``;
        ``body(x): (batch, hidden_sizes[-1])`` (the embedding the drift tests use).
    """

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, channels: tuple[int, ...],
                 hidden_sizes: tuple[int, ...], dropout: float = 0.0) -> None:
        super().__init__()
        c, h, w = image_shape
        layers: list[nn.Module] = [nn.Unflatten(1, (c, h, w))]
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        layers.append(nn.Flatten())
        hidden, width = _hidden(c * h * w, hidden_sizes, dropout)
        self.body = nn.Sequential(*layers, *hidden)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build(cfg: ModelConfig, num_features: int, num_classes: int, seed: int | None = None) -> nn.Module:
    """Build the model a config describes; with ``seed`` the initial weights are reproducible.

    Raises:
        ValueError: a ``cnn`` whose ``image_shape`` does not hold ``num_features`` values.
    """
    if seed is not None:
        torch.manual_seed(seed)
    if cfg.kind == "cnn":
        c, h, w = cfg.image_shape
        if c * h * w != num_features:
            raise ValueError(f"model.image_shape {tuple(cfg.image_shape)} holds {c * h * w} values; rows have {num_features}")
        return CNN(tuple(cfg.image_shape), num_classes, tuple(cfg.channels), tuple(cfg.hidden_sizes), cfg.dropout)
    return MLP(num_features, num_classes, tuple(cfg.hidden_sizes), cfg.dropout)


def fresh(cfg: ModelConfig, num_features: int, num_classes: int, seed: int) -> Callable[[int], nn.Module]:
    """``fresh(k)`` builds the ``k``-th fresh model of a run (seed ``seed + 1000 * k``), the same on every rank.

    A policy's reset (:class:`~ddn_ray.learner.OnlineLearner`) takes its new weights from it.
    """
    return lambda k: build(cfg, num_features, num_classes, seed=seed + 1000 * k)


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """Copy a model's ``state_dict`` to numpy arrays (Ray stores these zero-copy)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_numpy_state(model: nn.Module, state: Mapping[str, np.ndarray]) -> nn.Module:
    """Load numpy weights into ``model`` in place and return it.

    Raises:
        RuntimeError: (from torch) a key or shape does not match the model.
    """
    # torch.from_numpy warns on read-only (object-store) buffers; load_state_dict copies anyway.
    tensors = {k: torch.as_tensor(np.array(v, copy=not v.flags.writeable)) for k, v in state.items()}
    model.load_state_dict(tensors)
    return model


def build_for_inference(
    cfg: ModelConfig, num_features: int, num_classes: int, state: Mapping[str, np.ndarray]
) -> nn.Module:
    """Build a model in eval mode whose parameters *are* ``state``'s arrays (no init, no copy).

    The model is created on the meta device (no allocation, no random init) and the
    arrays are assigned as parameters. Arrays read from Ray's object store are
    read-only, so the model is for inference only: never train or modify it in place.

    Raises:
        RuntimeError: (from torch) a key or shape does not match the config.
    """
    with torch.device("meta"):
        model = build(cfg, num_features, num_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    model.load_state_dict(tensors, assign=True)
    return model.eval()
