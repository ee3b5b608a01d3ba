"""Compression methods, one module per method or family, and the plugin contract."""

from methods.base import Batch, Family, Method, NoParams, RunContext, parse_params
from methods.registry import get_method, load_methods, register, registered_methods

__all__ = [
    "Batch",
    "Family",
    "Method",
    "NoParams",
    "RunContext",
    "get_method",
    "load_methods",
    "parse_params",
    "register",
    "registered_methods",
]
