"""detector.evaluate."""
