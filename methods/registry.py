"""Registry of compression methods: the built-in modules of this package and plugins.

Built-in methods register themselves with :func:`register` when their module is imported;
:func:`load_methods` imports every module of the ``methods`` package. Third-party packages
expose a :class:`~methods.base.Method` subclass, or a module that registers some, through the
entry-point group ``compressbench.methods`` and are treated exactly like built-in ones.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import pkgutil
import warnings
from types import ModuleType

from benchmark.errors import MethodError
from methods.base import Method

__all__ = ["ENTRY_POINT_GROUP", "get_method", "load_methods", "register", "registered_methods"]

ENTRY_POINT_GROUP = "compressbench.methods"

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, type[Method]] = {}
_LOADED = False
# Entry points that failed to load, by name, with the reason; `compressbench list` shows them.
LOAD_FAILURES: dict[str, str] = {}


def register(method_cls: type[Method]) -> type[Method]:
    """Add ``method_cls`` to the registry; usable as a class decorator.

    Registering a second class under a name already taken raises
    :class:`~benchmark.errors.MethodError`; registering the same class again is a no-op.
    """
    if not (inspect.isclass(method_cls) and issubclass(method_cls, Method)):
        raise MethodError(f"cannot register {method_cls!r}: it is not a subclass of methods.base.Method")
    if not method_cls.name:
        raise MethodError(f"cannot register {method_cls.__qualname__}: its class attribute 'name' is empty")

    existing = _REGISTRY.get(method_cls.name)
    if existing is not None and existing is not method_cls:
        raise MethodError(
            f"method name {method_cls.name!r} is registered twice: by "
            f"{existing.__module__}.{existing.__qualname__} and by "
            f"{method_cls.__module__}.{method_cls.__qualname__}; rename one of them"
        )
    _REGISTRY[method_cls.name] = method_cls
    return method_cls


def load_methods() -> dict[str, type[Method]]:
    """Import built-in method modules and entry-point plugins once; return the registry."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        _import_builtin_modules()
        _load_entry_points()
    return dict(sorted(_REGISTRY.items()))


def registered_methods() -> dict[str, type[Method]]:
    """Return every registered method, by name."""
    return load_methods()


def get_method(name: str) -> type[Method]:
    """Return the method class called ``name``, or raise with the list of known names."""
    methods = load_methods()
    if name not in methods:
        if name in LOAD_FAILURES:
            raise MethodError(
                f"method plugin {name!r} failed to load: {LOAD_FAILURES[name]}; fix or reinstall the "
                "package that provides it ('compressbench list' shows every plugin that failed)"
            )
        known = ", ".join(methods) or "none"
        raise MethodError(f"unknown method {name!r}; registered methods: {known}")
    return methods[name]


def _import_builtin_modules() -> None:
    import methods as package

    skip = {"base", "registry"}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in skip or info.name.startswith("_"):
            continue
        importlib.import_module(f"{package.__name__}.{info.name}")


def _load_entry_points() -> None:
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
        except Exception as error:  # a broken plugin must not hide the built-in methods
            LOAD_FAILURES[entry_point.name] = f"{type(error).__name__}: {error}"
            warnings.warn(
                f"method plugin {entry_point.name!r} ({entry_point.value}) failed to load: {error}",
                stacklevel=2,
            )
            continue
        _register_loaded(entry_point.name, loaded)


def _register_loaded(entry_name: str, loaded: object) -> None:
    if isinstance(loaded, ModuleType):
        # Importing the module has run its @register decorators.
        logger.debug("loaded method module %s from entry point %s", loaded.__name__, entry_name)
        return
    if inspect.isclass(loaded) and issubclass(loaded, Method):
        register(loaded)
        return
    LOAD_FAILURES[entry_name] = f"{loaded!r} is neither a Method subclass nor a module"
    warnings.warn(
        f"method plugin {entry_name!r} points at {loaded!r}, which is neither a "
        "methods.base.Method subclass nor a module",
        stacklevel=2,
    )
