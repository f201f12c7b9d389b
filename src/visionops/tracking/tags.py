"""Tags that say where a run came from: code version, library versions, machine."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import torch
import torchvision

import visionops
from visionops import names


def git_commit() -> str | None:
    """The commit of the visionops checkout (editable installs), else of the working folder."""
    for folder in (Path(visionops.__file__).parent, Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        return out.stdout.strip()
    return None


def run_tags(device: str) -> dict[str, str]:
    tags = {
        names.VERSION_TAG: visionops.__version__,
        names.TORCH_VERSION_TAG: torch.__version__,
        names.TORCHVISION_VERSION_TAG: torchvision.__version__,
        names.DEVICE_TAG: device,
        names.HOSTNAME_TAG: socket.gethostname(),
    }
    commit = git_commit()
    if commit:
        tags[names.GIT_COMMIT_TAG] = commit
    return tags
