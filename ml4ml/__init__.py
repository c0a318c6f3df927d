"""ml4ml: invariance testing of whole model databases (ML4ML, arXiv 2109.12926)."""

__version__ = "0.1.0"
