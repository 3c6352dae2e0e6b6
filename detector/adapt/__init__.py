"""Adapt a bundle to new imagery from a few corrected scenes: ``python -m detector.adapt``."""

from detector.adapt.api import AdaptResult, adapt

__all__ = ["AdaptResult", "adapt"]
