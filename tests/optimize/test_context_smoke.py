from visionops.optimize.export import check_parity


def test_context_builds_and_exports(optimize_context):
    ctx = optimize_context
    assert ctx.source_version == "1"
    images = ctx.calibration_images
    assert images.shape == (64, 3, 16, 16) and float(images.min()) >= 0 and float(images.max()) <= 1
    parity = check_parity(ctx.model, ctx.fp32_onnx, images)
    assert parity.passed, parity
