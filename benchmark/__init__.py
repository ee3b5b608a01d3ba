"""CompressBench: a benchmark harness for neural-network compression methods."""

__version__ = "0.1.0"
__all__ = ["__version__"]
