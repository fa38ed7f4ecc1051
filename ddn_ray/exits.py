"""Early exit: multi-exit networks answered by confidence, and their compute counted in MACs.

A multi-exit network (BranchyNet, Teerapittayanon et al. 2016, "BranchyNet: Fast Inference via
Early Exiting from Deep Neural Networks"; Shallow-Deep Networks, Kaya et al. 2019, "Shallow-Deep
Networks: Understanding and Mitigating Network Overthinking") adds classifiers part-way through the
network. It is trained jointly on a weighted mean of every exit's loss (:func:`joint_loss`), and each
row is answered by the first exit confident enough (:func:`early_exit`), so an easy row costs only
the layers before its exit. Every row of a batch exits on its own.

**The multi-exit contract** (on top of :mod:`ddn_ray.models`' builder contract): the model is a
:class:`MultiExit`: ``body`` is an ``nn.Sequential`` of *stages*, ``exits`` an ``nn.ModuleList`` with
one module fewer, and ``exits[i]`` maps the output of ``body[i]`` to ``(batch, num_classes)`` logits;
the head, after the last stage, is the last exit. ``forward(x) == head(body(x))`` still holds, so
everything that reads the last exit (scoring, strategies, drift) is unchanged. The built-in ``mlp`` and
``cnn`` are multi-exit when ``model.exits`` places exits; a user's builder declares its own by returning
a :class:`MultiExit`.

Compute is counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix multiplications and
convolutions; one multiply-accumulate is two FLOPs), never by a hand formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "MultiExit",
    "MultiExitCNN",
    "MultiExitMLP",
    "confidence",
    "early_exit",
    "exit_macs",
    "exit_outputs",
    "hidden_layers",
    "joint_loss",
    "num_exits",
]

Criterion = Literal["max_prob", "entropy"]


def hidden_layers(width: int, hidden_sizes: Sequence[int], dropout: float) -> tuple[list[nn.Module], int]:
    """``Linear -> ReLU (-> Dropout)`` per hidden size, from ``width`` inputs; returns the layers and the last width."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    return layers, width


class MultiExit(nn.Module):
    """Base class of a multi-exit network (the module docstring's contract).

    A subclass sets ``body`` (an ``nn.Sequential`` of stages), ``exits`` (one module per stage but the
    last) and ``head`` (an ``nn.Linear``), and may set ``exit_loss_weights`` (one per exit, the head's
    last; equal when ``None``). ``forward`` returns the head's logits; in training mode it also keeps
    every earlier exit's logits in ``exit_logits`` for :func:`joint_loss` (so a DDP-wrapped model trains
    all exits through its own ``forward``).

    Shapes:
        ``x: (batch, num_features) float32 -> logits: (batch, num_classes) float32``.
    """

    body: nn.Sequential
    exits: nn.ModuleList
    head: nn.Linear

    def __init__(self) -> None:
        super().__init__()
        self.exit_loss_weights: tuple[float, ...] | None = None
        self.exit_logits: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.head(self.body(x))
        *early, last = exit_outputs(self, x)
        self.exit_logits = early
        return last


class MultiExitMLP(MultiExit):
    """:class:`~ddn_ray.models.MLP` with an exit (``nn.Linear`` to the classes) after each hidden layer in ``exits``.

    Args:
        num_features: input width.
        num_classes: output width (logits) of every exit.
        hidden_sizes: width of each hidden layer.
        exits: 0-based hidden layers to exit after (increasing, not the last: the head follows it).
        dropout: dropout probability after each hidden activation.
        exit_loss_weights: each exit's weight in :func:`joint_loss`, the head's last (``None``: equal).
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        hidden_sizes: Sequence[int],
        exits: Sequence[int],
        dropout: float = 0.0,
        exit_loss_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        cuts = [*(e + 1 for e in exits), len(hidden_sizes)]
        stages: list[nn.Module] = []
        width, begin = num_features, 0
        exit_heads: list[nn.Module] = []
        for i, cut in enumerate(cuts):
            layers, width = hidden_layers(width, hidden_sizes[begin:cut], dropout)
            stages.append(nn.Sequential(*layers))
            if i < len(cuts) - 1:
                exit_heads.append(nn.Linear(width, num_classes))
            begin = cut
        self.body = nn.Sequential(*stages)
        self.exits = nn.ModuleList(exit_heads)
        self.head = nn.Linear(width, num_classes)
        self.exit_loss_weights = tuple(exit_loss_weights) if exit_loss_weights is not None else None


class MultiExitCNN(MultiExit):
    """:class:`~ddn_ray.models.CNN` with an exit after each conv block in ``exits``.

    An exit is ``MaxPool2d(2) -> Flatten -> Linear`` (a small classifier on the block's feature maps,
    as in BranchyNet's side branches).

    Args:
        image_shape: ``(channels, height, width)`` of one image.
        num_classes: output width (logits) of every exit.
        channels: output channels of each conv block.
        hidden_sizes: width of each hidden linear layer after the conv blocks.
        exits: 0-based conv blocks to exit after (increasing).
        dropout: dropout probability after each hidden activation.
        exit_loss_weights: each exit's weight in :func:`joint_loss`, the head's last (``None``: equal).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        channels: Sequence[int],
        hidden_sizes: Sequence[int],
        exits: Sequence[int],
        dropout: float = 0.0,
        exit_loss_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        stages: list[nn.Module] = []
        exit_heads: list[nn.Module] = []
        layers: list[nn.Module] = [nn.Unflatten(1, (c, h, w))]
        for i, out in enumerate(channels):
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
            if i in exits:
                stages.append(nn.Sequential(*layers))
                layers = []
                pooled = c * max(h // 2, 1) * max(w // 2, 1)
                pool = nn.MaxPool2d(2) if h >= 2 and w >= 2 else nn.Identity()
                exit_heads.append(nn.Sequential(pool, nn.Flatten(), nn.Linear(pooled, num_classes)))
        hidden, width = hidden_layers(c * h * w, hidden_sizes, dropout)
        stages.append(nn.Sequential(*layers, nn.Flatten(), *hidden))
        self.body = nn.Sequential(*stages)
        self.exits = nn.ModuleList(exit_heads)
        self.head = nn.Linear(width, num_classes)
        self.exit_loss_weights = tuple(exit_loss_weights) if exit_loss_weights is not None else None


def num_exits(model: nn.Module) -> int:
    """How many exits ``model`` answers from: ``len(exits) + 1`` for a :class:`MultiExit`, else 1.

    Raises:
        TypeError: a :class:`MultiExit` whose ``body`` does not have one stage more than it has exits.
    """
    if not isinstance(model, MultiExit):
        return 1
    if not isinstance(model.body, nn.Sequential) or len(model.body) != len(model.exits) + 1:
        raise TypeError(
            f"{type(model).__name__}: a MultiExit's body is an nn.Sequential of len(exits) + 1 stages "
            f"({len(model.exits)} exits)"
        )
    return len(model.exits) + 1


def exit_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every exit's logits for every row, the head's last: ``num_exits(model)`` tensors ``(batch, num_classes)``.

    A model that is not a :class:`MultiExit` has one exit, its ``forward``.
    """
    if num_exits(model) == 1:
        return [model(x)]
    assert isinstance(model, MultiExit)
    outs: list[torch.Tensor] = []
    h = x
    for i, stage in enumerate(model.body):
        h = stage(h)
        if i < len(model.exits):
            outs.append(model.exits[i](h))
    outs.append(model.head(h))
    return outs


def joint_loss(model: nn.Module, losses: Sequence[torch.Tensor]) -> torch.Tensor:
    """The weighted mean of the exits' losses (BranchyNet's joint objective), the head's loss last.

    Args:
        model: the (unwrapped) model; its ``exit_loss_weights`` give the weights (``None``: equal).
        losses: one scalar loss per exit.

    Raises:
        ValueError: the weights are not one per loss.
    """
    if len(losses) == 1:
        return losses[0]
    weights = getattr(model, "exit_loss_weights", None) or (1.0,) * len(losses)
    if len(weights) != len(losses):
        raise ValueError(f"{len(weights)} exit loss weights for {len(losses)} exits")
    return sum((w * loss for w, loss in zip(weights, losses)), torch.zeros((), device=losses[0].device)) / sum(weights)


def confidence(logits: torch.Tensor, criterion: Criterion = "max_prob") -> torch.Tensor:
    """Each row's confidence in ``[0, 1]``: the largest softmax probability, or ``1 - H(p) / log(C)``.

    Args:
        logits: ``(batch, C)`` float32.
        criterion: ``max_prob`` or ``entropy`` (normalised entropy, Teerapittayanon et al. 2016).

    Returns:
        ``(batch,)`` float32.
    """
    probs = torch.softmax(logits, dim=1)
    if criterion == "max_prob":
        return probs.max(dim=1).values
    if logits.shape[1] < 2:
        return torch.ones(logits.shape[0], device=logits.device)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=1)
    return 1.0 - entropy / math.log(logits.shape[1])


def early_exit(
    model: nn.Module, x: torch.Tensor, threshold: float, criterion: Criterion = "max_prob"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer each row from the first exit whose confidence exceeds ``threshold`` (the head answers the rest).

    Rows that exit stop there: later stages run only on the rows still going, so a batch costs what
    its rows need. No gradients; the model should be in eval mode.

    Args:
        model: a :class:`MultiExit` (any other model answers every row from its head).
        x: ``(batch, num_features)`` float32.
        threshold: a row exits at exit ``i`` when its :func:`confidence` there is ``> threshold``
            (so 1 keeps every row to the head).
        criterion: see :func:`confidence`.

    Returns:
        ``(logits, exit_index)``: ``(batch, C)`` float32 logits of the exit that answered each row and
        ``(batch,)`` int64 that exit's index (``num_exits(model) - 1`` for the head).
    """
    k = num_exits(model)
    with torch.no_grad():
        if k == 1 or x.shape[0] == 0:  # one exit, or no rows (a window whose every row was quarantined)
            out = model(x)
            return out, torch.full((x.shape[0],), k - 1, dtype=torch.int64, device=x.device)
        assert isinstance(model, MultiExit)
        exit_of = torch.full((x.shape[0],), k - 1, dtype=torch.int64, device=x.device)
        going = torch.arange(x.shape[0], device=x.device)
        h = x
        answered: list[tuple[torch.Tensor, torch.Tensor]] = []  # (row indices, logits)
        for i, stage in enumerate(model.body):
            h = stage(h)
            if i == k - 1:
                answered.append((going, model.head(h)))
                break
            logits = model.exits[i](h)
            done = confidence(logits, criterion) > threshold
            if bool(done.any()):
                answered.append((going[done], logits[done]))
                exit_of[going[done]] = i
                keep = ~done
                going, h = going[keep], h[keep]
            if going.numel() == 0:
                break
        width = answered[0][1].shape[1]
        out = torch.empty((x.shape[0], width), dtype=answered[0][1].dtype, device=x.device)
        for rows, logits in answered:
            out[rows] = logits
    return out, exit_of


def exit_macs(model: nn.Module, num_features: int) -> tuple[int, ...]:
    """The multiply-accumulates (MACs) to answer one row at each exit, counted by ``FlopCounterMode``.

    Exit ``i`` costs the stages up to ``i`` and exit ``i``'s own classifier; the last entry is the whole
    network (a model that is not a :class:`MultiExit` has that one entry). Matrix multiplications and
    convolutions are counted (FLOPs / 2); activations, pooling and normalisation are not.

    Args:
        model: the model (any device; counted on a zero row of its parameters' dtype and device).
        num_features: the row width.

    Returns:
        One int per exit, non-decreasing in practice.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None and param.device.type != "meta" else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros((1, num_features), dtype=dtype, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if num_exits(model) == 1:
                with FlopCounterMode(display=False) as counter:
                    model(x)
                return (counter.get_total_flops() // 2,)
            assert isinstance(model, MultiExit)
            costs, spent, h = [], 0, x
            for i, stage in enumerate(model.body):
                with FlopCounterMode(display=False) as counter:
                    h = stage(h)
                spent += counter.get_total_flops()
                last = model.head if i == len(model.exits) else model.exits[i]
                with FlopCounterMode(display=False) as counter:
                    last(h)
                costs.append((spent + counter.get_total_flops()) // 2)
            return tuple(costs)
    finally:
        model.train(was_training)
