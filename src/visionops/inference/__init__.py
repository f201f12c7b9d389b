"""Running exported models outside PyTorch: the loaders every consumer of an ONNX file shares
(``visionops optimize`` measuring variants, the promotion gate timing them)."""
