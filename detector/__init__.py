"""detector: find and count railway freight cars in satellite GeoTIFFs."""

__version__ = "0.1.0"
