"""Is the training loop data-bound? Full training step vs the model's forward+backward on preloaded tensors.

    python experiments/accuracy/throughput.py +experiment=cpu_budget data.root=../shared/data/fer2013.zip \
        [--batches 150] [any other training override]

Three numbers, in training images per second, for the same config (model, optimizer, batch size, precision):
1. ``model_only``: forward, backward and optimizer step on one preloaded batch of the right shape, repeated;
2. ``loader_only``: iterating the training DataLoader (decode cache -> albumentations -> collate), no model;
3. ``full``: ``Trainer.fit`` for ``--batches`` batches with validation off, timed by the EpochTimer callback.
``overhead = 1 - full / model_only`` is what loading and augmentation cost the loop; above 15% the loop is
data-bound and the data path needs fixing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch
from hydra.utils import instantiate

import fer_lightning  # noqa: F401  (resolvers)
from fer_lightning.callbacks.timing import EpochTimer
from fer_lightning.config import compose_config
from fer_lightning.data.datamodule import resolve_num_workers

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def model_only(cfg, batches: int) -> float:
    model = instantiate(cfg.model)
    model.train()
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    size, batch = cfg.model.input_size, cfg.data.batch_size
    x = torch.randn(batch, cfg.model.in_chans, size, size)
    y = torch.randint(0, cfg.model.num_classes, (batch,))
    if cfg.model.speed.channels_last:  # as the module does inside the Trainer's loops
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    for step in range(batches + 10):
        if step == 10:
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return batches * batch / (time.perf_counter() - start)


def loader_only(cfg, batches: int) -> float:
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    count, images = 0, 0
    for i, (x, _) in enumerate(loader):
        if i == 5:
            start = time.perf_counter()
        if i >= 5:
            images += len(x)
            count += 1
        if count >= batches:
            break
    return images / (time.perf_counter() - start)


def full(cfg, batches: int) -> float:
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    timer = EpochTimer()
    trainer = instantiate(cfg.trainer, callbacks=[timer], logger=False, limit_train_batches=batches,
                          limit_val_batches=0, num_sanity_val_steps=0, max_epochs=1, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=datamodule)
    return batches * cfg.data.batch_size / timer.total_train_time_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--out", default=None)
    args, overrides = parser.parse_known_args()
    cfg = compose_config("train", overrides + ["logger=none"], Path("outputs/throughput"))
    torch.manual_seed(0)
    results = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
        "overrides": overrides, "batch_size": cfg.data.batch_size,
        "num_workers": resolve_num_workers(cfg.data.num_workers),
        "torch_threads": torch.get_num_threads(), "batches": args.batches,
        "model_only_img_s": round(model_only(cfg, args.batches), 1),
        "loader_only_img_s": round(loader_only(cfg, args.batches), 1),
        "full_img_s": round(full(cfg, args.batches), 1),
    }
    results["overhead"] = round(1 - results["full_img_s"] / results["model_only_img_s"], 3)
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
