"""detector.train: Hydra-configured YOLO fine-tuning that writes a calibrated model bundle."""
