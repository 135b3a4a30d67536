"""Peer baselines for the census-income benchmark: torch-rechub and DeepCTR-Torch MMoE / PLE.

Runs ONE (library, model, seed) per process, so peak RSS and thread settings are per run::

    python -m benchmarks.peers_census --lib deepctr --model mmoe --data census.npz \\
        --seed 0 --out result.json [--epochs 10 --batch-size 1024 --emb-dim 16 --lr 1e-3 \\
        --patience 2 --threads 2]

The npz holds the split already encoded by shoprec (so every library sees the same rows):
``cat_{train,valid,test}`` int64 (N, F) ids below ``vocab_sizes[f]``, ``num_*`` float32 (N, D)
standardised numerics, ``y_*`` float32 (N, 2) labels (income > 50K, never married),
``vocab_sizes`` int64 (F,), ``cat_names`` and ``num_names`` (unicode string arrays).

Each categorical becomes the peer's sparse feature with an ``--emb-dim`` embedding, each
numeric the peer's dense feature of width 1. Models are built at equal dimensions: MMoE with
``--experts`` experts of one hidden layer ``--expert-dim`` and towers ``[--tower-dim]``; PLE with
``--ple-levels`` CGC levels of ``--ple-task-experts`` experts per task plus
``--ple-shared-experts`` shared ones, same expert/tower widths. Gates are one linear layer and
a softmax in both libraries. Training is Adam at ``--lr`` with no weight decay or L2 penalty,
early stopping on the MEAN validation AUC of the two tasks (``--patience`` epochs without
improvement), best weights restored, then test AUC once.

Both peers are driven through their own trainers, as a user would (``MTLTrainer.fit`` and
``BaseModel.compile``/``fit``), with the least wrapping needed to monitor the mean AUC, time
the training passes alone and restore the best weights; ``trainer_used`` in the JSON says
exactly how. ``samples_per_s`` counts training passes only (no validation, no data set-up);
``cpu_samples_per_s`` does the same per second of this process's CPU time (all its threads),
which a busy, shared machine disturbs far less than the wall clock.
Peer libraries come from requirements-bench.txt and are imported only when needed.
"""

from __future__ import annotations

import os

# Both peers wrap their loops in tqdm, and tqdm reads TQDM_* once, when first imported
# (already by `import torch`, through torch.hub): silence the bars before importing anything.
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse
import json
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from benchmarks._results import peak_rss_mib_now

TASKS = ("income", "never_married")  # column order of y_*


@dataclass
class Split:
    cat: np.ndarray  # (N, F) int64
    num: np.ndarray  # (N, D) float32
    y: np.ndarray  # (N, 2) float32

    def __len__(self) -> int:
        return len(self.y)

    def columns(self, cat_keys: list[str], num_keys: list[str]) -> dict[str, np.ndarray]:
        """One contiguous array per feature, keyed by the peer-facing feature name."""
        cols = {k: np.ascontiguousarray(self.cat[:, i]) for i, k in enumerate(cat_keys)}
        cols.update({k: np.ascontiguousarray(self.num[:, i]) for i, k in enumerate(num_keys)})
        return cols


@dataclass
class Data:
    train: Split
    valid: Split
    test: Split
    vocab_sizes: list[int]
    cat_keys: list[str]
    num_keys: list[str]


def _key(prefix: str, i: int, name: str) -> str:
    # Peers keep embeddings in nn.ModuleDict, whose keys may not contain "." (and names
    # must not clash between categoricals and numerics): prefix + position + safe name.
    return f"{prefix}{i:02d}_{re.sub(r'[^0-9A-Za-z_]', '_', name)}"


def load_npz(path: str) -> Data:
    z = np.load(path, allow_pickle=False)
    splits = {
        s: Split(
            cat=z[f"cat_{s}"].astype(np.int64, copy=False),
            num=z[f"num_{s}"].astype(np.float32, copy=False),
            y=z[f"y_{s}"].astype(np.float32, copy=False),
        )
        for s in ("train", "valid", "test")
    }
    vocab = [int(v) for v in z["vocab_sizes"]]
    cat_names = [str(n) for n in z["cat_names"]]
    num_names = [str(n) for n in z["num_names"]]
    for s, sp in splits.items():
        if sp.cat.shape[1] != len(vocab) or sp.num.shape[1] != len(num_names):
            raise ValueError(f"{s}: feature count does not match vocab_sizes / num_names")
        if sp.y.shape != (len(sp.cat), len(TASKS)) or len(sp.num) != len(sp.cat):
            raise ValueError(f"{s}: y must be (N, {len(TASKS)}) with N rows as cat/num")
        if len(sp.cat) and ((sp.cat < 0).any() or (sp.cat >= np.asarray(vocab)).any()):
            raise ValueError(f"{s}: a categorical id is outside [0, vocab_size)")
    return Data(
        **splits,
        vocab_sizes=vocab,
        cat_keys=[_key("c", i, n) for i, n in enumerate(cat_names)],
        num_keys=[_key("n", i, n) for i, n in enumerate(num_names)],
    )


def task_aucs(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    pred = np.asarray(pred, dtype=np.float64).reshape(len(y), len(TASKS))
    aucs = {t: float(roc_auc_score(y[:, k], pred[:, k])) for k, t in enumerate(TASKS)}
    return {**aucs, "mean": float(np.mean(list(aucs.values())))}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class RunLog:
    """What each peer run reports back to :func:`main`."""

    valid_history: list[dict[str, float]]  # per epoch, in order
    valid_restored: dict[str, float]  # validation AUC re-measured after restoring the best
    epoch_train_seconds: list[float]  # training pass alone, per epoch
    epoch_cpu_seconds: list[float]  # process CPU time of the same passes
    best_epoch: int  # 1-based
    test_auc: dict[str, float]
    n_params: int
    model_kwargs: dict[str, Any]
    trainer_used: str
    notes: list[str]


# --------------------------------------------------------------------------- torch-rechub


def run_torch_rechub(args: argparse.Namespace, data: Data) -> RunLog:
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models.multi_task import MMOE, PLE
    from torch_rechub.trainers import MTLTrainer
    from torch_rechub.utils.data import DataGenerator

    features = [
        SparseFeature(k, vocab_size=v, embed_dim=args.emb_dim)
        for k, v in zip(data.cat_keys, data.vocab_sizes, strict=True)
    ] + [DenseFeature(k) for k in data.num_keys]
    task_types = ["classification"] * len(TASKS)
    expert_params = {"dims": [args.expert_dim]}
    towers = [{"dims": [args.tower_dim]} for _ in TASKS]
    if args.model == "mmoe":
        kwargs: dict[str, Any] = {"n_expert": args.experts}
        model = MMOE(features, task_types, args.experts, expert_params, towers)
    else:
        kwargs = {
            "n_level": args.ple_levels,
            "n_expert_specific": args.ple_task_experts,
            "n_expert_shared": args.ple_shared_experts,
        }
        model = PLE(
            features, task_types, **kwargs, expert_params=expert_params, tower_params_list=towers
        )
    kwargs.update(expert_params=expert_params, tower_params_list=towers, task_types=task_types)

    history: list[dict[str, float]] = []
    epoch_seconds: list[float] = []
    epoch_cpu: list[float] = []

    class Trainer(MTLTrainer):
        """MTLTrainer.fit monitors one task's score (``earlystop_taskid``); we append the mean
        AUC as an extra score and point ``earlystop_taskid`` at it, and time each training
        pass. Everything else is the library's own fit."""

        in_fit = True

        def train_one_epoch(self, data_loader):  # type: ignore[no-untyped-def]
            start, cpu = time.perf_counter(), time.process_time()
            out = super().train_one_epoch(data_loader)
            epoch_seconds.append(time.perf_counter() - start)
            epoch_cpu.append(time.process_time() - cpu)
            return out

        def evaluate(self, model, data_loader):  # type: ignore[no-untyped-def]
            scores = list(super().evaluate(model, data_loader))
            scores.append(float(np.mean(scores)))
            if self.in_fit:
                history.append({**dict(zip(TASKS, scores, strict=False)), "mean": scores[-1]})
            return scores

    gen = DataGenerator(data.train.columns(data.cat_keys, data.num_keys), data.train.y)
    train_dl, valid_dl, test_dl = gen.generate_dataloader(
        x_val=data.valid.columns(data.cat_keys, data.num_keys),
        y_val=data.valid.y,
        x_test=data.test.columns(data.cat_keys, data.num_keys),
        y_test=data.test.y,
        batch_size=args.batch_size,
    )
    with tempfile.TemporaryDirectory() as tmp:  # fit always writes a .pth into model_path
        trainer = Trainer(
            model,
            task_types=task_types,
            optimizer_fn=torch.optim.Adam,
            optimizer_params={"lr": args.lr, "weight_decay": 0.0},  # default has 1e-5
            n_epoch=args.epochs,
            earlystop_taskid=len(TASKS),  # the appended mean AUC
            earlystop_patience=args.patience,
            device="cpu",
            model_path=tmp,
        )
        trainer.fit(train_dl, valid_dl, seed=args.seed)
    # fit restores the best weights only when patience runs out; if all epochs ran, do it.
    if trainer.early_stopper.best_weights is not None:
        trainer.model.load_state_dict(trainer.early_stopper.best_weights)
    trainer.in_fit = False
    restored = trainer.evaluate(trainer.model, valid_dl)
    test_scores = trainer.evaluate(trainer.model, test_dl)
    test = {t: float(s) for t, s in zip(TASKS, test_scores, strict=False)}
    means = [h["mean"] for h in history]
    return RunLog(
        valid_history=history,
        valid_restored={**dict(zip(TASKS, restored, strict=False)), "mean": restored[-1]},
        epoch_train_seconds=epoch_seconds,
        epoch_cpu_seconds=epoch_cpu,
        best_epoch=int(np.argmax(means)) + 1,  # first max, as EarlyStopper's strict ">"
        test_auc=test,
        n_params=sum(p.numel() for p in trainer.model.parameters()),
        model_kwargs=kwargs,
        trainer_used=(
            "torch_rechub.trainers.MTLTrainer.fit (DataGenerator.generate_dataloader "
            "loaders), subclassed only to append the mean validation AUC as an extra score "
            f"with earlystop_taskid={len(TASKS)} (MTLTrainer can early-stop on one task's "
            "score only) and to time train_one_epoch; best weights re-loaded from "
            "trainer.early_stopper.best_weights after fit (fit restores them only when "
            "patience runs out); test AUC via MTLTrainer.evaluate"
        ),
        notes=[
            "torch-rechub's MLP puts BatchNorm1d after every hidden Linear: experts, towers "
            "and even the gates (Linear -> BatchNorm1d -> softmax); not switchable",
            "MTLTrainer's default optimizer_params carry weight_decay=1e-5; set to 0 here",
            "embeddings initialised N(0, 1e-4) (SparseFeature default initializer)",
            "loss: mean over tasks of BCELoss (mean over the batch)",
        ],
    )


# --------------------------------------------------------------------------- DeepCTR-Torch


def _block_version_check() -> None:
    """``import deepctr_torch`` starts a non-daemon thread that GETs PyPI to nag about
    upgrades (no timeout). A benchmark must not phone home or hang at exit on a network that
    drops packets, so make ``requests.get`` fail at once in this process (we never use it)."""
    import requests

    def offline_get(*_a: object, **_k: object) -> None:
        raise requests.ConnectionError("network disabled by benchmarks.peers_census")

    requests.get = offline_get  # type: ignore[assignment]


def run_deepctr(args: argparse.Namespace, data: Data) -> RunLog:
    _block_version_check()
    from deepctr_torch.callbacks import Callback, EarlyStopping
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models import MMOE, PLE

    columns = [
        SparseFeat(k, vocabulary_size=v, embedding_dim=args.emb_dim, dtype="int64")
        for k, v in zip(data.cat_keys, data.vocab_sizes, strict=True)
    ] + [DenseFeat(k, 1) for k in data.num_keys]
    common: dict[str, Any] = {
        "expert_dnn_hidden_units": (args.expert_dim,),
        "gate_dnn_hidden_units": (),  # gate = one Linear + softmax, as in torch-rechub
        "tower_dnn_hidden_units": (args.tower_dim,),
        "l2_reg_linear": 0.0,  # defaults 1e-5 (unused: no linear part in MTL models)
        "l2_reg_embedding": 0.0,  # default 1e-5
        "l2_reg_dnn": 0.0,
        "dnn_use_bn": False,  # library default
        "task_types": ("binary",) * len(TASKS),
        "task_names": TASKS,
        "seed": args.seed,
        "device": "cpu",
    }
    notes = [
        "fit concatenates every input into ONE float64 array (categorical ids as floats, "
        "cast back with .long() in the embedding lookup) and feeds float32 batches",
        "loss: sum over tasks of binary_crossentropy with reduction='sum' (summed over the "
        "batch, not averaged); Adam is nearly invariant to that scale",
        "DNN Linear weights and embeddings initialised N(0, 1e-4) (init_std default)",
        "fit(verbose=0): verbose>=1 computes the compiled metrics on every training batch "
        "(and shows tqdm), which would slow training; validation is done by our callback",
        "fit calls model.train() once before the epoch loop, and predict() switches to eval(), "
        "so with validation_data later epochs would train in eval mode; our callback "
        "switches back to train() (no dropout/BN here, so no numerical effect either way)",
    ]
    if args.model == "mmoe":
        kwargs: dict[str, Any] = {"num_experts": args.experts, **common}
        model = MMOE(columns, **kwargs)
    else:
        if args.ple_shared_experts != args.ple_task_experts:
            # deepctr_torch 0.3.0 PLE builds its shared experts with specific_expert_num
            # (multi_module_list(..., self.specific_expert_num, ...)): differing counts give
            # an IndexError or unused experts, so only equal counts are a faithful PLE.
            raise SystemExit("deepctr PLE needs --ple-shared-experts == --ple-task-experts")
        kwargs = {
            "shared_expert_num": args.ple_shared_experts,
            "specific_expert_num": args.ple_task_experts,
            "num_levels": args.ple_levels,
            **common,
        }
        model = PLE(columns, **kwargs)
        notes.append(
            "PLE builds shared experts with specific_expert_num (bug), so shared == specific "
            "is required; its last CGC level still computes the shared gate/output, unused"
        )
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}

    model.compile(
        torch.optim.Adam(model.parameters(), lr=args.lr),
        loss=["binary_crossentropy"] * len(TASKS),
    )

    x_train = data.train.columns(data.cat_keys, data.num_keys)
    x_valid = data.valid.columns(data.cat_keys, data.num_keys)
    history: list[dict[str, float]] = []
    epoch_seconds: list[float] = []
    epoch_cpu: list[float] = []

    class MeanValidAUC(Callback):
        """Times the training pass (epoch begin -> epoch end, before validating), then puts
        the per-task and mean validation AUC into the epoch logs for EarlyStopping."""

        def on_epoch_begin(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            epoch_seconds.append(time.perf_counter() - self.start)
            epoch_cpu.append(time.process_time() - self.cpu)
            aucs = task_aucs(data.valid.y, self.model.predict(dict(x_valid), args.eval_batch_size))
            self.model.train()
            history.append(aucs)
            if logs is not None:
                logs.update({f"val_auc_{k}": v for k, v in aucs.items()})

    stopper = EarlyStopping(
        monitor="val_auc_mean", mode="max", patience=args.patience, restore_best_weights=True
    )
    model.fit(
        x_train,
        data.train.y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=0,
        shuffle=True,
        callbacks=[MeanValidAUC(), stopper],  # order matters: AUC first, then the stopper
    )
    # EarlyStopping restores only when it stops training; if all epochs ran, do it here.
    if stopper.best_weights is not None:
        model.load_state_dict(stopper.best_weights)
    restored = task_aucs(data.valid.y, model.predict(dict(x_valid), args.eval_batch_size))
    pred = model.predict(data.test.columns(data.cat_keys, data.num_keys), args.eval_batch_size)
    test = task_aucs(data.test.y, pred)
    test.pop("mean")
    means = [h["mean"] for h in history]
    return RunLog(
        valid_history=history,
        valid_restored=restored,
        epoch_train_seconds=epoch_seconds,
        epoch_cpu_seconds=epoch_cpu,
        best_epoch=int(np.argmax(means)) + 1,
        test_auc=test,
        n_params=sum(p.numel() for p in model.parameters()),
        model_kwargs=kwargs,
        trainer_used=(
            "deepctr_torch BaseModel.compile(Adam)/fit(verbose=0) with the library's "
            "deepctr_torch.callbacks.EarlyStopping(monitor='val_auc_mean', mode='max', "
            f"patience={args.patience}, restore_best_weights=True); our callback (runs "
            "before it) computes per-task validation AUC via model.predict and times the "
            "training pass, since fit's own validation pools both tasks into one metric; "
            "best weights re-loaded after fit (the callback restores only when it stops "
            "training); test AUC via model.predict"
        ),
        notes=notes,
    )


# --------------------------------------------------------------------------- main

RUNNERS = {"torch_rechub": run_torch_rechub, "deepctr": run_deepctr}
DISTRIBUTIONS = {"torch_rechub": "torch-rechub", "deepctr": "deepctr-torch"}
GATES = {
    "torch_rechub": "Linear -> BatchNorm1d -> softmax (MLP with dims [n_experts])",
    "deepctr": "Linear (no bias) -> softmax (gate_dnn_hidden_units=())",
}
BATCHNORM = {
    "torch_rechub": "after every hidden Linear in experts, gates and towers (hard-wired)",
    "deepctr": "none (dnn_use_bn=False, the default)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lib", required=True, choices=sorted(RUNNERS))
    p.add_argument("--model", required=True, choices=["mmoe", "ple"])
    p.add_argument("--data", required=True, help="npz with the encoded split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="where to write the result JSON")
    p.add_argument("--epochs", type=int, default=10, help="upper bound; early stopping")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--eval-batch-size", type=int, default=8192, help="deepctr predict only")
    p.add_argument("--emb-dim", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--experts", type=int, default=8, help="MMoE experts")
    p.add_argument("--expert-dim", type=int, default=64, help="width of each expert's layer")
    p.add_argument("--tower-dim", type=int, default=32, help="width of each task tower")
    p.add_argument("--ple-levels", type=int, default=1)
    p.add_argument("--ple-task-experts", type=int, default=4, help="per task, per level")
    p.add_argument("--ple-shared-experts", type=int, default=4, help="per level")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.patience < 1:
        p.error("--epochs and --patience must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    data = load_npz(args.data)

    t0 = time.perf_counter()
    log = RUNNERS[args.lib](args, data)
    wall_seconds = time.perf_counter() - t0  # import, build, fit, validation, test

    epochs_run = len(log.epoch_train_seconds)
    train_seconds = float(sum(log.epoch_train_seconds))
    cpu_seconds = float(sum(log.epoch_cpu_seconds))
    best = log.valid_history[log.best_epoch - 1]
    restored_ok = all(abs(log.valid_restored[k] - best[k]) < 1e-6 for k in best)
    if not restored_ok:
        print(f"warning: restored model scores {log.valid_restored}, best epoch {best}")
    peak_rss_mib = peak_rss_mib_now()
    if args.model == "mmoe":
        arch = {"experts": args.experts}
    else:
        arch = {
            "levels": args.ple_levels,
            "task_experts_per_task": args.ple_task_experts,
            "shared_experts": args.ple_shared_experts,
        }
    result = {
        "lib": args.lib,
        "lib_version": version(DISTRIBUTIONS[args.lib]),
        "model": args.model,
        "config": {
            **arch,
            "expert_dims": [args.expert_dim],
            "tower_dims": [args.tower_dim],
            "gate": GATES[args.lib],
            "batchnorm": BATCHNORM[args.lib],
            "emb_dim": args.emb_dim,
            "n_categorical": len(data.cat_keys),
            "n_numeric": len(data.num_keys),
            "input_dim": args.emb_dim * len(data.cat_keys) + len(data.num_keys),
            "n_params": log.n_params,
            "optimizer": "Adam",
            "lr": args.lr,
            "weight_decay": 0.0,
            "batch_size": args.batch_size,
            "max_epochs": args.epochs,
            "patience": args.patience,
            "monitor": "mean validation AUC of the two tasks (min_delta 0)",
            "threads": args.threads,
            "n_train": len(data.train),
            "n_valid": len(data.valid),
            "n_test": len(data.test),
            "peer_model_kwargs": log.model_kwargs,
            "notes": log.notes,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "seed": args.seed,
        "epochs_run": epochs_run,
        "best_epoch": log.best_epoch,
        "test_auc": log.test_auc,
        "valid_auc": log.valid_history[log.best_epoch - 1],
        # Same AUC re-measured on the restored model: equal unless restoring failed.
        "best_weights_restored": restored_ok,
        "valid_history": log.valid_history,
        "samples_per_s": epochs_run * len(data.train) / train_seconds if train_seconds else 0.0,
        "train_seconds": train_seconds,
        "epoch_train_seconds": log.epoch_train_seconds,
        "cpu_samples_per_s": epochs_run * len(data.train) / cpu_seconds if cpu_seconds else 0.0,
        "epoch_cpu_seconds": log.epoch_cpu_seconds,
        "load_avg_end": list(os.getloadavg()),
        "wall_seconds": wall_seconds,
        "peak_rss_mib": peak_rss_mib,
        "trainer_used": log.trainer_used,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.lib} {args.model} seed {args.seed}: test AUC "
        + " / ".join(f"{t} {log.test_auc[t]:.4f}" for t in TASKS)
        + f", best epoch {log.best_epoch}/{epochs_run}, {result['samples_per_s']:.0f} samples/s,"
        f" peak RSS {peak_rss_mib:.0f} MiB -> {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
