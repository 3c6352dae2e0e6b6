"""detector.infer."""
