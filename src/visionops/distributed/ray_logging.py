"""Logging of the processes Ray starts for a visionops job: Ray runs ``quiet_ray_train`` first
in each of them (``runtime_env={"worker_process_setup_hook": SETUP_HOOK}``).

Deliberately light: it runs in every Ray process of the job, most of which never import torch.
"""

from __future__ import annotations

import logging

SETUP_HOOK = "visionops.distributed.ray_logging.quiet_ray_train"

_PG_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def quiet_ray_train() -> None:
    """Silence Ray Train's placement group cleaner, which warns every second that the State API
    is unavailable on a Ray without a dashboard (a local Ray started with
    ``include_dashboard=False``, or one without ``ray[default]``). The cleaner only matters if
    Ray Train's controller dies, and the end of the job frees its resources all the same."""
    logging.getLogger(_PG_CLEANER_LOGGER).setLevel(logging.ERROR)
