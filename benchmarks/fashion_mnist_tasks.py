"""Forgetting on Fashion-MNIST task sequences: each strategy's ACC / BWT / FWT (GEM metrics).

Two sequences of 5 tasks (van de Ven & Tolias 2019, "Three scenarios for continual learning"):

* **permuted** (domain-incremental): task t is Fashion-MNIST with the pixels shuffled by
  a fixed permutation (task 0: none); one 10-way output layer.
* **split** (class-incremental): task t holds classes {2t, 2t+1}; one 10-way output
  layer, and the test set of task j asks for any of the 10 classes.

Each strategy (``ddn_ray.strategy``, the classes the job's workers use) learns the tasks
in order: per task ``--epochs`` passes of mini-batches through ``strategy.batch`` and
``strategy.penalty``, then ``strategy.after_window`` once with the task's rows (Fisher,
reservoir, teacher). After each task every task's test set is scored, giving
``R[i, j]``; ``b[j]`` is the accuracy at random initialisation. ``joint`` trains one
model on all tasks' rows shuffled together: the upper bound (ACC only).

Run:  python benchmarks/fashion_mnist_tasks.py [--train-per-task 10000 --epochs 2]
Data: Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) or $DDN_RAY_DATA_DIR.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddn_ray import config, evaluate, models, strategy
from ddn_ray.learner import fit, make_optimizer
from ddn_ray.stream import Table
from ddn_ray.usecases import datasets

Task = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # x_train, y_train, x_test, y_test


def make_tasks(kind: str, train: Table, test: Table, per_task: int, seed: int) -> list[Task]:
    rng = np.random.default_rng(seed)
    tasks = []
    for t in range(5):
        if kind == "permuted":
            perm = np.arange(784) if t == 0 else rng.permutation(784)
            idx = rng.choice(len(train), per_task, replace=False)
            xtr, ytr = train.features[idx][:, perm], train.labels[idx]
            xte, yte = test.features[:, perm], test.labels
        else:
            keep_tr = np.isin(train.labels, (2 * t, 2 * t + 1))
            keep_te = np.isin(test.labels, (2 * t, 2 * t + 1))
            idx = rng.permutation(np.flatnonzero(keep_tr))[:per_task]
            xtr, ytr = train.features[idx], train.labels[idx]
            xte, yte = test.features[keep_te], test.labels[keep_te]
        tasks.append(tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (xtr, ytr, xte, yte)))
    return tasks


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def run_sequence(cfg, tasks: list[Task], epochs: int, fisher_rows: int) -> tuple[np.ndarray, np.ndarray]:
    model = models.build(cfg.model, 784, 10, seed=cfg.train.seed)
    learner = strategy.build(cfg.strategy, seed=cfg.train.seed)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    b = np.array([accuracy(model, t[2], t[3]) for t in tasks])
    r = np.zeros((len(tasks), len(tasks)))
    for i, (x, y, _, _) in enumerate(tasks):
        fit(model, make_optimizer(cfg.train, model.parameters()), x, y, cfg.train.batch_size, epochs, gen, learner)
        learner.after_window(model, x[:fisher_rows], y[:fisher_rows])
        r[i] = [accuracy(model, t[2], t[3]) for t in tasks]
    return r, b


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-per-task", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ewc-lambda", type=float, default=100.0)
    parser.add_argument("--memory", type=int, default=2000, help="replay rows in total")
    parser.add_argument("--fisher-rows", type=int, default=2000, help="rows given to after_window (Fisher, reservoir)")
    parser.add_argument("--kinds", nargs="+", default=["permuted", "split"])
    parser.add_argument("--strategies", nargs="+", default=["finetune", "ewc", "online_ewc", "replay", "lwf", "joint"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    train, test = datasets.load_fashion_mnist(split="train"), datasets.load_fashion_mnist(split="test")
    cfg0 = config.load(
        overrides={
            "model": {"hidden_sizes": args.hidden},
            "train": {"lr": args.lr, "batch_size": 64, "seed": args.seed},
            "strategy": {
                "memory_size": args.memory,
                "replay_ratio": 1.0,
                "class_balanced": True,
                "ewc_lambda": args.ewc_lambda,
                "ewc_decay": 1.0,
                "ewc_max_anchors": 5,
                "temperature": 2.0,
            },
        }
    )
    print(
        f"Fashion-MNIST, 5 tasks, {args.train_per_task} training rows per task, {args.epochs} epochs, "
        f"MLP {args.hidden}, adam lr {args.lr}, batch 64; EWC lambda {args.ewc_lambda:g}; replay memory {args.memory}"
    )
    for kind in args.kinds:
        tasks = make_tasks(kind, train, test, args.train_per_task, args.seed)
        rows = []
        for name in args.strategies:
            t0 = time.perf_counter()
            if name == "joint":
                cfg = cfg0.model_copy(update={"strategy": cfg0.strategy.model_copy(update={"name": "finetune"})})
                model = models.build(cfg.model, 784, 10, seed=args.seed)
                x, y = torch.cat([t[0] for t in tasks]), torch.cat([t[1] for t in tasks])
                fit(
                    model,
                    make_optimizer(cfg.train, model.parameters()),
                    x,
                    y,
                    cfg.train.batch_size,
                    args.epochs,
                    torch.Generator().manual_seed(args.seed),
                    strategy.Finetune(),
                )
                acc = float(np.mean([accuracy(model, t[2], t[3]) for t in tasks]))
                rows.append((name, {"ACC": acc, "BWT": float("nan"), "FWT": float("nan")}, time.perf_counter() - t0))
            else:
                cfg = cfg0.model_copy(update={"strategy": cfg0.strategy.model_copy(update={"name": name})})
                r, b = run_sequence(cfg, tasks, args.epochs, args.fisher_rows)
                rows.append((name, evaluate.gem_metrics(r, b), time.perf_counter() - t0))
            print(f"  {kind} {name}: {rows[-1][1]} ({rows[-1][2]:.0f} s)", file=sys.stderr, flush=True)
        print(f"\n{kind} ({'domain' if kind == 'permuted' else 'class'}-incremental)")
        print("| strategy | ACC | BWT | FWT | wall s |")
        print("|---|---|---|---|---|")
        fmt = lambda v: "—" if np.isnan(v) else f"{100 * v:+.1f}"
        for name, m, dt in rows:
            print(f"| {name} | {100 * m['ACC']:.1f} | {fmt(m['BWT'])} | {fmt(m['FWT'])} | {dt:.0f} |")


if __name__ == "__main__":
    main()
