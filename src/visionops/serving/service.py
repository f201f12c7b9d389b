"""The models a server answers with, kept current as their aliases move.

A ``Deployment`` is one loaded version with its own batcher. A ``ModelSlot`` holds the current
deployment of one alias (``production`` is the one answering; ``shadow`` also sees a fraction
of the requests, unseen by the client). The reload loop polls each alias; when it names a new
version, that version is loaded and warmed up off the event loop, then swapped in with one
assignment: requests that already hold the old deployment finish on it (its batcher drains
before it stops), later ones get the new one. A version that fails to load leaves the old one
serving; it is logged, counted, and not retried until the alias moves again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torchvision.transforms import v2

from visionops.serving.batcher import BatchRecord, DynamicBatcher, QueueFull
from visionops.serving.metrics import ServingMetrics
from visionops.serving.model import ModelUnavailable, ServedModel, load_version, resolve_alias
from visionops.serving.settings import ServeConfig

logger = logging.getLogger(__name__)

Role = Literal["production", "shadow"]


class NotReady(Exception):
    """No model is loaded yet (or the server is stopping)."""


@dataclass
class Deployment:
    model: ServedModel
    batcher: DynamicBatcher


@dataclass
class ModelSlot:
    role: Role
    alias: str | None  # None: a pinned version, never reloaded
    version: str | None = None  # what ``alias`` pointed at when last loaded
    current: Deployment | None = None
    failed_version: str | None = None  # the last version that would not load
    retiring: set[asyncio.Task[None]] = field(default_factory=set)


@dataclass(frozen=True)
class Answer:
    probabilities: torch.Tensor  # (N, classes)
    model: ServedModel


class ModelService:
    def __init__(self, config: ServeConfig, metrics: ServingMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.production = ModelSlot("production", config.alias, config.pinned_version)
        self.shadow = (
            ModelSlot("shadow", config.shadow_alias) if config.shadow_alias is not None else None
        )
        self._reloader: asyncio.Task[None] | None = None
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._random = random.Random()

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load and warm up production (and the shadow, when it loads), then poll the
        aliases. Raises ``ModelUnavailable`` when production cannot be loaded."""
        await self._refresh(self.production, initial=True)
        if self.shadow is not None:
            try:
                await self._refresh(self.shadow, initial=True)
            except ModelUnavailable as exc:  # the service runs without it until it loads
                logger.warning("shadow model not loaded: %s", exc)
        if self.config.reload_interval_s > 0 and (self.production.alias or self.shadow):
            self._reloader = asyncio.get_running_loop().create_task(self._reload_loop())

    async def stop(self) -> None:
        """Stop polling, answer everything already submitted, then release the models."""
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
        await asyncio.gather(*self._shadow_tasks, return_exceptions=True)
        for slot in self._slots():
            await asyncio.gather(*slot.retiring, return_exceptions=True)
            if slot.current is not None:
                deployment, slot.current = slot.current, None
                await deployment.batcher.stop()

    @property
    def ready(self) -> bool:
        return self.production.current is not None

    def served(self) -> ServedModel:
        if self.production.current is None:
            raise NotReady("no model is loaded")
        return self.production.current.model

    # --- answering ------------------------------------------------------------------------
    async def predict(self, images: torch.Tensor) -> Answer:
        """Production's probabilities for ``images`` (N x C x H x W, uint8 or float in
        [0, 1]), and the version that computed them. Raises ``QueueFull`` or ``NotReady``."""
        deployment = self.production.current
        if deployment is None:
            raise NotReady("no model is loaded")
        # No await between reading ``current`` and submitting: a swap cannot fall between.
        probabilities = await deployment.batcher.submit(_fit(images, deployment.model))
        model = deployment.model
        for confidence in probabilities.max(dim=1).values.tolist():
            self.metrics.top1_confidence.labels(model.version).observe(confidence)
        self._maybe_shadow(images, probabilities, model.version)
        return Answer(probabilities, model)

    def _maybe_shadow(self, images: torch.Tensor, answer: torch.Tensor, version: str) -> None:
        shadow = self.shadow.current if self.shadow is not None else None
        if shadow is None or self._random.random() >= self.config.shadow_fraction:
            return
        task = asyncio.get_running_loop().create_task(
            self._run_shadow(shadow, images, answer.argmax(dim=1), version)
        )
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _run_shadow(
        self, shadow: Deployment, images: torch.Tensor, expected: torch.Tensor, version: str
    ) -> None:
        started = time.monotonic()
        try:
            probabilities = await shadow.batcher.submit(_fit(images, shadow.model))
        except QueueFull:  # production's traffic comes first: the shadow skips, counted
            self.metrics.shadow_dropped.inc(len(images))
            return
        except Exception:
            logger.exception("shadow model %s failed", shadow.model.version)
            self.metrics.errors.labels("shadow_failure").inc()
            return
        shadow_version = shadow.model.version
        self.metrics.shadow_latency.labels(shadow_version).observe(time.monotonic() - started)
        agreed = int((probabilities.argmax(dim=1) == expected).sum())
        self.metrics.shadow_images.labels(version, shadow_version).inc(len(images))
        self.metrics.shadow_agreements.labels(version, shadow_version).inc(agreed)

    # --- loading and reloading ------------------------------------------------------------
    def _slots(self) -> list[ModelSlot]:
        return [self.production, *([self.shadow] if self.shadow is not None else [])]

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval_s)
            for slot in self._slots():
                if slot.alias is None:
                    continue
                try:
                    await self._refresh(slot)
                except Exception:  # the loop must survive whatever the registry answers
                    logger.exception("checking alias %r failed", slot.alias)
                    self.metrics.errors.labels("reload_check").inc()

    async def _refresh(self, slot: ModelSlot, initial: bool = False) -> None:
        """Load the version the slot's alias names when it is not the one loaded."""
        loop = asyncio.get_running_loop()
        name, config = self.config.model_name, self.config
        if slot.alias is not None:
            version = await loop.run_in_executor(
                None, resolve_alias, name, slot.alias, config.tracking_uri
            )
        else:
            assert slot.version is not None
            version = slot.version
        if slot.current is not None and version == slot.current.model.version:
            return
        if not initial and version == slot.failed_version:
            return
        try:
            model = await loop.run_in_executor(None, self._load_and_warm, name, version)
        except Exception as exc:  # whatever a broken version raises, the old one serves on
            slot.failed_version = version
            if initial:
                if isinstance(exc, ModelUnavailable):
                    raise
                raise ModelUnavailable(f"version {version} of {name} did not load: {exc}") from exc
            logger.error(
                "version %s of %s did not load; still serving the old one: %s", version, name, exc
            )
            self.metrics.reloads.labels(slot.role, "failure").inc()
            return
        deployment = Deployment(model, self._batcher(slot.role, model))
        deployment.batcher.start()
        previous, slot.current, slot.version = slot.current, deployment, version
        self._announce(slot, deployment, previous)
        if previous is not None:
            self.metrics.reloads.labels(slot.role, "success").inc()
            logger.info(
                "%s now answers with version %s of %s (was %s)",
                slot.role,
                version,
                name,
                previous.model.version,
            )
            retiring = loop.create_task(previous.batcher.stop())  # drains in-flight requests
            slot.retiring.add(retiring)
            retiring.add_done_callback(slot.retiring.discard)

    def _load_and_warm(self, name: str, version: str) -> ServedModel:
        config = self.config
        model = load_version(
            name, version, config.tracking_uri, config.backend, config.tta, config.threads
        )
        seconds = model.warm_up((1, config.max_batch_size))
        logger.info(
            "loaded version %s of %s on %s (warm-up %.2f s)", version, name, model.runtime, seconds
        )
        return model

    def _batcher(self, role: Role, model: ServedModel) -> DynamicBatcher:
        config, metrics = self.config, self.metrics
        depth = metrics.queue_depth.labels(role)

        def on_batch(record: BatchRecord) -> None:
            outcome = "error" if record.failed else "ok"
            metrics.predictions.labels(model.version, role, outcome).inc(record.size)
            metrics.batch_size.labels(role).observe(record.size)
            if not record.failed:  # a failure's time says nothing of the model's speed
                metrics.inference_duration.labels(model.version, role).observe(record.inference_s)
            if role == "production":
                for wait in record.queue_waits_s:
                    metrics.queue_wait.observe(wait)

        return DynamicBatcher(
            model.probabilities,
            config.max_batch_size,
            config.max_wait_ms,
            config.max_queue,
            on_batch=on_batch,
            on_depth=depth.set,
        )

    def _announce(self, slot: ModelSlot, new: Deployment, old: Deployment | None) -> None:
        info = self.metrics.model_info
        alias = slot.alias or ""
        if old is not None:
            with contextlib.suppress(KeyError):
                info.remove(
                    self.config.model_name, old.model.version, alias, old.model.runtime, slot.role
                )
        info.labels(
            self.config.model_name, new.model.version, alias, new.model.runtime, slot.role
        ).set(1)


def _fit(images: torch.Tensor, model: ServedModel) -> torch.Tensor:
    """``images`` as the float32 batch ``model`` takes. Every image of a batch must have one
    dtype and shape (requests send uint8 files or float tensors). A resize happens only when
    the images were decoded for a version of another input size that was swapped out since."""
    images = v2.functional.to_dtype(images, torch.float32, scale=True)
    if tuple(images.shape[1:]) != model.input_shape:
        images = v2.functional.resize(images, list(model.input_shape[1:]), antialias=True)
    return images
