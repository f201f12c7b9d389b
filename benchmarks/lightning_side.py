"""The PyTorch Lightning side of benchmarks/vs_lightning.py; runs in .venv-lightning.

It trains what a visionops config describes the way a Lightning user would: a
LightningModule, a DataLoader over the same per-image augmentation, ``MLFlowLogger`` with a
metric point every step and ``ModelCheckpoint`` after every epoch. Model, data split,
augmentation, optimizer and schedule come from visionops' own code (installed with
``--no-deps``), so the two sides differ only in the training framework.

    .venv-lightning/bin/python benchmarks/lightning_side.py CONFIG.json OUTDIR

CONFIG.json is ``{"config": <a TrainConfig as a dict>}``; the last line printed is a JSON
object: end-to-end and per-step images/s, the final validation accuracy, and the versions.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from torch.utils.data import DataLoader

from visionops.config import TrainConfig
from visionops.data import build_data, create_eval_loader
from visionops.data.sampling import AugmentedDataset
from visionops.data.transforms import build_transform
from visionops.models import ImageClassifier, create_model
from visionops.training.optim import create_optimizer, create_scheduler

# visionops' precision names as Lightning spells them.
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


class Classifier(L.LightningModule):
    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, steps_per_epoch: int) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.memory_format = (
            torch.channels_last if cfg.channels_last == "on" else torch.contiguous_format
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.contiguous(memory_format=self.memory_format))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.optim.label_smoothing)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("train_accuracy", accuracy, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        images, labels = batch
        logits = self(images)
        self.log("val_loss", F.cross_entropy(logits, labels), on_epoch=True)
        self.log("val_accuracy", (logits.argmax(dim=1) == labels).float().mean(), on_epoch=True)

    def configure_optimizers(self) -> Any:
        optimizer = create_optimizer(self.model, self.cfg.optim, self.cfg.data.batch_size)
        scheduler = create_scheduler(
            optimizer, self.cfg.optim, self.steps_per_epoch, self.cfg.epochs
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class StepTimer(Callback):
    """images/s of every step, from the end of the previous one: data loading, forward,
    backward, optimizer and Lightning's per-step logging, as visionops' images_per_sec."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.images = 0
        self.last = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.last = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, _: int
    ) -> None:
        now = time.perf_counter()
        size = len(batch[1])
        self.rates.append(size / max(now - self.last, 1e-9))
        self.images += size
        self.last = now


def run(cfg: TrainConfig, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data, cfg.seed)
    train_set = AugmentedDataset(data.train, build_transform(cfg.data, data.image_size), seed=0)
    loader = DataLoader(
        train_set,
        batch_size=cfg.data.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.data.num_workers,
        persistent_workers=cfg.data.num_workers > 0,
    )
    # The same un-augmented batches visionops validates on (the classic loader's DataLoader).
    classic = cfg.data.model_copy(update={"loader": "classic"})
    val_loader = create_eval_loader(data, "val", classic, torch.device("cpu"))
    backbone = create_model(
        cfg.model.name,
        data.num_classes,
        small_input_stem=cfg.model.small_input_stem,
        width_multiplier=cfg.model.width_multiplier,
    )
    model = ImageClassifier(backbone, data.mean, data.std)
    if model.needs_data_init:
        model.init_from_data(data.sample_images(5000))
    if cfg.channels_last == "on":
        model = model.to(memory_format=torch.channels_last)

    timer = StepTimer()
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        accelerator="cpu" if cfg.device == "cpu" else "auto",
        devices=1,
        precision=PRECISIONS[cfg.precision if cfg.precision != "auto" else "fp32"],
        logger=MLFlowLogger(
            experiment_name="vs-lightning",
            tracking_uri=f"sqlite:///{out_dir / 'mlflow.db'}",
        ),
        log_every_n_steps=1,
        callbacks=[ModelCheckpoint(dirpath=out_dir / "checkpoints", every_n_epochs=1), timer],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=cfg.deterministic,
    )
    trainer.fit(Classifier(model, cfg, len(loader)), loader, val_loader)
    elapsed = time.perf_counter() - start
    return {
        "end_to_end_images_per_sec": timer.images / elapsed,
        "per_step_images_per_sec": timer.rates,
        "val_accuracy": float(trainer.callback_metrics["val_accuracy"]),
        "seconds": elapsed,
        "lightning": L.__version__,
        "torch": torch.__version__,
    }


def main() -> None:
    config_path, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = TrainConfig.model_validate(json.loads(config_path.read_text())["config"])
    print(json.dumps(run(cfg, out_dir)))


if __name__ == "__main__":
    main()
