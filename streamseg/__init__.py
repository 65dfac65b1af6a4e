"""streamseg: instance-level person segmentation of live and recorded video."""

__version__ = "0.1.0"
