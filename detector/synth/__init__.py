"""Synthetic rail-yard scenes: georeferenced GeoTIFFs with oriented labels of rail cars.

``python -m detector.synth out=DIR n_scenes=N seed=S`` (config: ``conf/synth.yaml``).
"""

from detector.synth.export import render_quicklook, scene_seed, write_scenes
from detector.synth.scene import SyntheticScene, default_config, generate_scene

__all__ = ["SyntheticScene", "default_config", "generate_scene", "render_quicklook",
           "scene_seed", "write_scenes"]
