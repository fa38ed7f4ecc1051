"""Model builders: a registry of ``"module:function"`` names. A model is rebuilt anywhere
(worker, replica, driver) from its spec.

**The builder contract.** A builder is ``function(num_features, num_classes, cfg) -> nn.Module``
(``cfg``: the :class:`~ddn_ray.config.ModelConfig`; a user's settings are in ``cfg.options``).
The module maps ``(batch, num_features)`` float32 to ``(batch, num_classes)`` float32 logits (or
regression outputs) as ``forward(x) == head(body(x))``, where

* ``body`` is the module that gives the embedding ``(batch, d)`` float32 (the drift monitor's
  MMD test reads it), and
* ``head`` is an ``nn.Linear(d, num_classes)``: the parameters the policy's ``head`` retraining
  level trains, and the layer that :func:`grow_head` widens when a new class appears.

The built-in ``mlp`` and ``cnn`` follow it and are registered in :data:`BUILDERS` the same way
(``model.kind: mlp`` is ``model.builder: ddn_ray.models:mlp``). A user's module is imported by
name wherever the model is built: installed, on ``PYTHONPATH``, in the current directory, or
shipped with ``ray job submit --working-dir``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from ddn_ray import registry
from ddn_ray.config import ModelConfig
from ddn_ray.exits import MultiExitCNN, MultiExitMLP, hidden_layers

__all__ = [
    "BUILDERS",
    "CNN",
    "MLP",
    "build",
    "build_for_inference",
    "cnn",
    "fresh",
    "grow_head",
    "load_numpy_state",
    "mlp",
    "output_width",
    "predict",
    "quantized",
    "resolve",
    "state_to_numpy",
]

Builder = Callable[[int, int, ModelConfig], nn.Module]


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
        layers, width = hidden_layers(num_features, hidden_sizes, dropout)
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

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        channels: tuple[int, ...],
        hidden_sizes: tuple[int, ...],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        layers: list[nn.Module] = [nn.Unflatten(1, (c, h, w))]
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        layers.append(nn.Flatten())
        hidden, width = hidden_layers(c * h * w, hidden_sizes, dropout)
        self.body = nn.Sequential(*layers, *hidden)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def mlp(num_features: int, num_classes: int, cfg: ModelConfig) -> MLP | MultiExitMLP:
    """The built-in ``mlp``: :class:`MLP` with ``cfg.hidden_sizes`` and ``cfg.dropout``; with ``cfg.exits``, the
    multi-exit :class:`~ddn_ray.exits.MultiExitMLP`."""
    if cfg.exits:
        return MultiExitMLP(num_features, num_classes, cfg.hidden_sizes, cfg.exits, cfg.dropout, cfg.exit_loss_weights)
    return MLP(num_features, num_classes, tuple(cfg.hidden_sizes), cfg.dropout)


def cnn(num_features: int, num_classes: int, cfg: ModelConfig) -> CNN | MultiExitCNN:
    """The built-in ``cnn``: :class:`CNN` on rows of ``cfg.image_shape`` images; with ``cfg.exits``, the
    multi-exit :class:`~ddn_ray.exits.MultiExitCNN`.

    Raises:
        ValueError: ``image_shape`` does not hold ``num_features`` values.
    """
    c, h, w = cfg.image_shape
    if c * h * w != num_features:
        raise ValueError(
            f"model.image_shape {tuple(cfg.image_shape)} holds {c * h * w} values; rows have {num_features}"
        )
    if cfg.exits:
        return MultiExitCNN(
            (c, h, w), num_classes, cfg.channels, cfg.hidden_sizes, cfg.exits, cfg.dropout, cfg.exit_loss_weights
        )
    return CNN((c, h, w), num_classes, tuple(cfg.channels), tuple(cfg.hidden_sizes), cfg.dropout)


BUILDERS: dict[str, str] = {"mlp": "ddn_ray.models:mlp", "cnn": "ddn_ray.models:cnn"}


def resolve(name: str) -> Builder:
    """The builder a ``"package.module:function"`` name (or a built-in kind of :data:`BUILDERS`) names.

    The module is imported as is; if that fails, once more with the current directory on ``sys.path``
    (a user's ``my_models.py`` beside the config, or a job's ``--working-dir``).

    Raises:
        ValueError: the name is not of that form, or the module cannot be imported.
        TypeError: the module has no such callable.
    """
    name = BUILDERS.get(name, name)
    fn = registry.load(name, what="model.builder")
    if not callable(fn):
        raise TypeError(f"model.builder {name!r}: {name.partition(':')[0]} has no callable {name.partition(':')[2]!r}")
    return fn


def build(cfg: ModelConfig, num_features: int, num_classes: int, seed: int | None = None) -> nn.Module:
    """Build the model a config describes (``cfg.builder``, else the built-in ``cfg.kind``); with ``seed`` the
    initial weights are reproducible.

    Raises:
        ValueError: the builder cannot be imported, its head has not ``num_classes`` outputs, or a ``cnn``
            whose ``image_shape`` does not hold ``num_features`` values.
        TypeError: the name is not callable, or its module breaks the contract (no ``body`` / ``head``,
            a head that is not an ``nn.Linear``).
    """
    if seed is not None:
        torch.manual_seed(seed)
    name = cfg.builder or cfg.kind
    model = resolve(name)(num_features, num_classes, cfg)
    try:
        if not isinstance(model, nn.Module):
            raise TypeError(type(model).__name__)
        body_of(model)
        outputs = head_of(model).out_features
    except TypeError:
        raise TypeError(
            f"model.builder {name!r} must return an nn.Module with a .body module and an nn.Linear "
            f".head (forward(x) == head(body(x))); got {type(model).__name__}"
        ) from None
    if outputs != num_classes:
        raise ValueError(f"model.builder {name!r}: head has {outputs} outputs; expected {num_classes}")
    return model


def body_of(model: nn.Module) -> nn.Module:
    """``model.body``, the part before the head (the builder contract: ``forward(x) == head(body(x))``).

    Raises:
        TypeError: the model has no ``.body`` module.
    """
    body = getattr(model, "body", None)
    if not isinstance(body, nn.Module):
        raise TypeError(f"{type(model).__name__} has no .body module")
    return body


def head_of(model: nn.Module) -> nn.Linear:
    """``model.head``, the model's last ``nn.Linear`` (its ``out_features`` is the number of classes or targets).

    Raises:
        TypeError: the model has no ``.head`` ``nn.Linear``.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{type(model).__name__} has no .head nn.Linear")
    return head


def grow_head(model: nn.Module, num_classes: int, seed: int) -> None:
    """Widen ``model.head`` (an ``nn.Linear``) to ``num_classes`` outputs in place, keeping the rows it had.

    The new rows get ``nn.Linear``'s default initialisation, seeded by ``seed + num_classes``, so every
    rank grows alike. A rebuilt optimizer must follow (the head's parameters are new tensors).

    Raises:
        ValueError: ``num_classes`` is smaller than the head's output width.
    """
    old = head_of(model)
    if num_classes < old.out_features:
        raise ValueError(f"cannot shrink the head from {old.out_features} to {num_classes} outputs")
    if num_classes == old.out_features:
        return
    torch.manual_seed(seed + num_classes)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        new.weight[: old.out_features] = old.weight
        if old.bias is not None:
            new.bias[: old.out_features] = old.bias
    model.head = new


def fresh(cfg: ModelConfig, num_features: int, num_classes: int, seed: int) -> Callable[..., nn.Module]:
    """``fresh(k)`` builds the ``k``-th fresh model of a run (seed ``seed + 1000 * k``), the same on every rank.

    A policy's reset (:class:`~ddn_ray.learner.OnlineLearner`) takes its new weights from it.
    """
    return lambda k, classes=num_classes: build(cfg, num_features, classes, seed=seed + 1000 * k)


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """Copy a model's ``state_dict`` to numpy arrays (Ray stores these zero-copy): one host copy per tensor, the
    device-to-host transfer for a GPU's, a copy of the memory the model keeps training for a CPU's."""
    return {
        k: v.detach().numpy().copy() if v.device.type == "cpu" else v.detach().cpu().numpy()
        for k, v in model.state_dict().items()
    }


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


def output_width(weights: Mapping[str, np.ndarray]) -> int:
    """The output width of a state dict of the builder contract: rows of ``head.weight``."""
    return int(weights["head.weight"].shape[0])


def predict(model: nn.Module, x: np.ndarray, task: str) -> np.ndarray:
    """A model's answers for ``x`` ``(n, num_features)`` float32: ``(n,)`` int64 classes, or ``(n, k)`` float64
    outputs for ``task == "regression"`` (no gradients; the model should be in eval mode)."""
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
    return out.double().numpy() if task == "regression" else out.argmax(1).numpy()


def quantized(model: nn.Module) -> nn.Module:
    """A dynamically quantised copy of ``model`` for inference: every ``nn.Linear`` with int8 weights, activations
    quantised per batch at run time (``torch.ao.quantization.quantize_dynamic``; Jacob et al. 2018,
    "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference").

    ``model`` is left as it was; convolutions stay float. The copy is for eval-mode CPU inference only.
    Shapes are the model's: ``(batch, num_features)`` float32 in, float32 logits out.
    """
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch 2.13 marks eager-mode quantisation as moving to torchao; it is the API the project pins.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8, inplace=False)
