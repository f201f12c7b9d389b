"""Run ``train(cfg)`` as one job of many processes: torchrun's elastic launcher
(``launch_torchrun``) or a Ray Train ``TorchTrainer`` (``run_ray_train``).

The training loop itself is distributed-aware (``visionops.training.world``); this package
only starts the processes.
"""
