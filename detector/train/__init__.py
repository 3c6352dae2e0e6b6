"""detector.train."""
