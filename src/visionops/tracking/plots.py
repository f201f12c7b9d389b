"""Figures logged as run artifacts: training curves, the confusion matrix, sweep curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on training machines

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from visionops import names


def training_curves(history: Sequence[Mapping[str, float]]) -> Figure:
    """Loss and accuracy per epoch, train against validation (train alone in a run without a
    val split, ``val_fraction=0``)."""
    epochs = [int(row[names.EPOCH_KEY]) for row in history]
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    splits = [s for s in ("train", "val") if names.split_metric(s, "loss") in history[0]]
    for split in splits:
        for axis, quantity in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            values = [row[names.split_metric(split, quantity)] for row in history]
            axis.plot(epochs, values, marker="o", label=split)
    for axis, title in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return figure


def confusion_matrix(confusion: torch.Tensor, classes: Sequence[str]) -> Figure:
    """Counts with true classes as rows; cells annotated when the matrix is small enough."""
    size = max(4.0, 0.5 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(confusion.numpy(), cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(classes) <= 20:
        threshold = confusion.max().item() / 2
        for row, counts in enumerate(confusion.tolist()):
            for col, count in enumerate(counts):
                color = "white" if count > threshold else "black"
                axis.text(col, row, str(count), ha="center", va="center", color=color, fontsize=8)
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    return figure


def validation_curves(curves: Mapping[str, Sequence[tuple[int, float]]]) -> Figure:
    """Validation accuracy per epoch, one line per trial of a sweep (``{trial: [(epoch, acc)]}``).

    Lines that end early are trials a scheduler stopped.
    """
    figure, axis = plt.subplots(figsize=(8, 5))
    for trial, points in curves.items():
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=trial)
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy")
    axis.grid(alpha=0.3)
    if 0 < len(curves) <= 20:
        axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def close(figure: Figure) -> None:
    plt.close(figure)


def pareto_front(
    points: Sequence[tuple[str, float, float, bool]], title: str, xlabel: str
) -> Figure:
    """Accuracy against latency, one labelled point per (name, latency, accuracy, on_front);
    the front is joined by a line."""
    figure, axis = plt.subplots(figsize=(8, 5))
    for name, latency, accuracy, on_front in points:
        axis.scatter(latency, 100 * accuracy, color="tab:red" if on_front else "tab:gray", zorder=3)
        axis.annotate(
            name, (latency, 100 * accuracy), textcoords="offset points", xytext=(4, 4), fontsize=8
        )
    front = sorted((lat, acc) for _, lat, acc, on in points if on)
    if front:
        axis.plot(
            [p[0] for p in front],
            [100 * p[1] for p in front],
            color="tab:red",
            label="Pareto front",
            zorder=2,
        )
        axis.legend()
    axis.set_xlabel(xlabel)
    axis.set_ylabel("validation accuracy (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    return figure
