"""The model registry workflow on MLflow aliases: a promotion gate, alias history, rollback.

``policy`` holds the gate's thresholds (light enough for the CLI parser to import),
``latency`` measures a model version's CPU latency at batch 1, ``promotion`` decides and moves
an alias (``promote``), ``history`` is the alias history MLflow does not keep, stored as a
registered-model tag, and ``rollback`` moves an alias back to its previous holder::

    from visionops.registry.promotion import promote
    from visionops.registry.rollback import rollback

    result = promote("vision-classifier", 3, "production")  # result.decision: approved, ...
    rollback("vision-classifier", "production")  # back to the version that held it before 3
"""
