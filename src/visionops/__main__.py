"""``python -m visionops`` is the ``visionops`` CLI (and what ``torchrun -m visionops`` runs)."""

from visionops.cli import main

raise SystemExit(main())
