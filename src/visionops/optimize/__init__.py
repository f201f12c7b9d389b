"""Model optimisation and export: every variant of a registered model, measured side by side.

    visionops optimize --model-uri models:/vision-classifier/3 --json
    visionops export --model-uri models:/vision-classifier/3 --format onnx

Methods (``visionops.optimize.methods``) build variants; ``measure`` times them on every runtime
and thread count on the same images; ``report`` writes the comparison; ``registration`` logs and
registers each variant as a version of the source's registered model.
"""
