"""MLflow tracking: the run, its tags, figures and the logged model."""

from visionops.tracking.run import RunTracker

__all__ = ["RunTracker"]
