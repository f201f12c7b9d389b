"""What ``visionops serve`` serves and how: one typed settings object, its fields the CLI's
flags (``--max-batch-size`` is ``max_batch_size``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from visionops.config import redact_url, split_url_credentials

Backend = Literal["auto", "torch", "onnx", "openvino"]

#: ``models:/NAME@ALIAS`` (followed as the alias moves) or ``models:/NAME/VERSION``.
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_uri: str = Field(
        description="registered model to serve: models:/NAME@ALIAS (followed when the alias "
        "moves) or models:/NAME/VERSION"
    )
    # The CLI moves a password out of the URI into MLflow's variables before it builds this
    # config, which travels to the workers in the environment (server.py): no secret in it.
    tracking_uri: str | None = Field(
        None, description="MLflow tracking/registry URI [default: MLflow's own resolution]"
    )
    backend: Backend = Field(
        "auto",
        description="runtime: auto (ONNX Runtime or OpenVINO for an ONNX variant, else "
        "torch), torch, onnx (ONNX Runtime) or openvino",
    )
    tta: str | None = Field(
        None,
        description="test-time augmentation (none, flip, flip_shift) [default: the one the "
        "model's training run evaluated with]",
    )
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8080, ge=0, le=65535, description="port to bind (0: any free port)")
    max_batch_size: int = Field(32, ge=1, le=1024, description="images per forward pass")
    max_wait_ms: float = Field(
        5.0, ge=0, le=10_000, description="longest an image waits for its batch to fill"
    )
    max_queue: int = Field(
        256, ge=1, description="images waiting at most; beyond it requests get 503"
    )
    max_images_per_request: int = Field(
        64, ge=1, description="images one request may carry (more: 413)"
    )
    max_body_mb: float = Field(10.0, gt=0, description="largest request body (more: 413)")
    max_pixels: int = Field(
        4096 * 4096, ge=1, description="largest image accepted, width x height (more: 413)"
    )
    workers: int = Field(1, ge=1, le=64, description="server processes, each with the model")
    reload_interval_s: float = Field(
        30.0, ge=0, description="how often the alias is checked for a new version (0: never)"
    )
    shadow_alias: str | None = Field(
        None, description="alias of a model that also answers a fraction of requests, unseen"
    )
    shadow_fraction: float = Field(
        0.1, ge=0, le=1, description="fraction of requests also run on the shadow model"
    )
    threads: int | None = Field(
        None, ge=1, description="intra-op threads of the model [default: the runtime's own]"
    )

    @field_validator("tracking_uri")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        if value is not None and split_url_credentials(value)[2] is not None:
            raise ValueError(
                f"{redact_url(value)} holds a password; give the URI without user info and "
                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if _MODEL_URI.match(self.model_uri) is None:
            raise ValueError(
                f"model_uri {self.model_uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION"
            )
        if self.max_queue < self.max_batch_size:
            raise ValueError(
                f"max_queue ({self.max_queue}) must hold at least one batch "
                f"(max_batch_size {self.max_batch_size})"
            )
        if self.shadow_alias is not None and self.alias == self.shadow_alias:
            raise ValueError(f"the shadow alias {self.shadow_alias!r} is the served alias")
        if self.tta is not None:
            from visionops.serving.predictor import check_tta

            check_tta(self.tta)
        return self

    @property
    def model_name(self) -> str:
        return self._uri_part("name") or ""

    @property
    def alias(self) -> str | None:
        return self._uri_part("alias")

    @property
    def pinned_version(self) -> str | None:
        return self._uri_part("version")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def _uri_part(self, part: str) -> str | None:
        match = _MODEL_URI.match(self.model_uri)
        return match.group(part) if match else None
