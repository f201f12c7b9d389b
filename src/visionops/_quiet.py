"""Third-party output that is not for the user, quietened where it starts.

A library that warns about its own internals (a deprecation between two of its dependencies, a
missing CUDA toolkit on a CPU machine) tells the user nothing they can act on. Each helper
here quietens one such message for the one import or call that causes it, and says why; the
logger's level is restored afterwards, so the same logger's other messages still show.
Nothing here filters process-wide.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def logger_level(name: str, level: int) -> Iterator[None]:
    """Logger ``name`` at ``level`` for the calls inside, and as it was afterwards."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def import_torchao() -> None:
    """Import torchao's PT2E quantisation, which registers the ``quantized_decomposed`` ops that
    INT8 programs need, without the deprecation torch logs on that import.

    torchao 0.18 registers its ``KernelPreference`` Enum with ``register_constant()`` when it is
    imported, which torch 2.14 deprecates with a warning from ``torch.utils._pytree`` (once per
    process, in torch's own log format): between the two libraries, nothing the user can change.
    """
    with logger_level("torch.utils._pytree", logging.ERROR):
        import torchao.quantization.pt2e  # noqa: F401
