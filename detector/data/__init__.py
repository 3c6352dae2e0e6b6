"""detector.data."""
