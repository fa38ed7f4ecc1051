"""Continual-learning strategies: how an update learns from a window.

Import as a module: ``from ddn_ray import strategy``; ``strategy.Replay(memory_size=500)``,
``strategy.build(cfg.strategy)``.
"""

from __future__ import annotations

from ddn_ray.config import StrategyConfig
from ddn_ray.strategy.base import Compose, Finetune, Strategy
from ddn_ray.strategy.ewc import EWC, diagonal_fisher
from ddn_ray.strategy.lwf import LwF, distillation_loss
from ddn_ray.strategy.replay import Replay

__all__ = ["EWC", "Compose", "Finetune", "LwF", "Replay", "Strategy", "build", "diagonal_fisher", "distillation_loss"]


def build(cfg: StrategyConfig, seed: int = 0) -> Strategy:
    """The strategy ``cfg.name`` names (``"ewc+replay"`` composes several), with its settings from ``cfg``."""
    names = cfg.name.split("+")
    if len(names) > 1:
        return Compose([build(cfg.model_copy(update={"name": n}), seed) for n in names])
    if cfg.name == "replay":
        return Replay(cfg.memory_size, cfg.replay_ratio, cfg.class_balanced, seed=seed)
    if cfg.name in ("ewc", "online_ewc"):
        return EWC(
            cfg.ewc_lambda, "online" if cfg.name == "online_ewc" else "separate", cfg.ewc_decay, cfg.ewc_max_anchors
        )
    if cfg.name == "lwf":
        return LwF(cfg.lwf_alpha, cfg.temperature)
    return Finetune()
