"""detector: find and count railway freight cars in satellite GeoTIFFs."""

from detector import telemetry

__version__ = "0.1.0"

telemetry.disable()  # before anything imports OpenVINO or Ultralytics (README: offline)
