"""detector.synth."""
