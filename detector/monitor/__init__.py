"""Site monitoring: dated scenes of one site → counts over time, a baseline and flags.

``python -m detector.monitor source=SITE_DIR [aoi=station.geojson]`` (``conf/monitor.yaml``).
"""

from detector.monitor.api import Monitoring, config, monitor, run

__all__ = ["Monitoring", "config", "monitor", "run"]
