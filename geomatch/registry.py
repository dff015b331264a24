"""Plugin registry over entry-point groups.

Plugin authors: expose an object under one of these entry-point groups in your distribution's metadata
and geomatch finds it; our own plugins are registered exactly this way (see ``setup.cfg``).

=====================  ===================================================================================
group                  object the entry point names
=====================  ===================================================================================
geomatch.matchers      a subclass of ``geomatch.models.base.Matcher`` (an ``nn.Module``)
geomatch.detectors     a subclass of ``geomatch.pipeline.detector.Detector``: ``detect(image, valid,
                       max_points, cell_size, min_contrast, border, origin, window) -> Keypoints``
geomatch.writers       a subclass of ``geomatch.pipeline.writer.Writer``
geomatch.commands      a ``click.Command`` added to the ``geomatch`` CLI
=====================  ===================================================================================

Listing reads metadata only: nothing is imported until a plugin is used, so ``geomatch --help`` and
``geomatch plugins list`` never import torch. A plugin whose import fails, or whose object does not fit
its group's contract (checked when it is loaded), is reported as broken with its error, naming the
distribution that provided it; it never breaks the rest of the CLI.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from geomatch.errors import BrokenPluginError, UnknownPluginError

log = logging.getLogger(__name__)

GROUPS = {
    "matchers": "geomatch.matchers",
    "detectors": "geomatch.detectors",
    "writers": "geomatch.writers",
    "commands": "geomatch.commands",
}


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    value: str
    dist: str
    status: str = "ok"  # ok | broken | unchecked
    error: str = ""

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("kind", "name", "value", "dist", "status", "error")}


def _dist_label(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown distribution"
    return f"{dist.metadata['Name']} {dist.version}"


def _check_kind(kind: str) -> str:
    if kind not in GROUPS:
        raise UnknownPluginError(f"unknown plugin kind '{kind}'; valid kinds: {', '.join(GROUPS)}")
    return GROUPS[kind]


@cache
def _entry_points(kind: str) -> dict[str, EntryPoint]:
    group = _check_kind(kind)
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        # First registration wins; a second distribution claiming the same name is ignored loudly.
        if ep.name in found:
            log.warning("plugin %s '%s' from %s shadowed by %s", kind, ep.name, _dist_label(ep),
                        _dist_label(found[ep.name]))
            continue
        found[ep.name] = ep
    return found


def refresh() -> None:
    """Forget cached entry points (after installing a distribution in-process, e.g. in tests)."""
    _entry_points.cache_clear()
    _load.cache_clear()


def names(kind: str) -> list[str]:
    return sorted(_entry_points(kind))


def _module_findable(ep: EntryPoint) -> str:
    """Return an error string if the entry point's module cannot be found, without executing it."""
    module = ep.value.split(":", 1)[0].strip()
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:  # a missing parent package raises here
        return f"{type(exc).__name__}: {exc}"
    return "" if spec is not None else f"ModuleNotFoundError: no module named '{module}'"


def list_plugins(kind: str | None = None, check: bool = False) -> list[PluginInfo]:
    """Describe registered plugins.

    Without ``check`` only module *locations* are resolved (no plugin code runs, no torch import);
    with ``check`` every plugin is imported so that errors raised inside a module show up too.
    """
    kinds = [kind] if kind else list(GROUPS)
    out = []
    for k in kinds:
        for name, ep in sorted(_entry_points(k).items()):
            error = _module_findable(ep)
            if not error and check:
                try:
                    _load(k, name)
                except BrokenPluginError as exc:
                    error = str(exc.__cause__ or exc)
            status = "broken" if error else ("ok" if check else "unchecked")
            out.append(PluginInfo(k, name, ep.value, _dist_label(ep), status, error))
    return out


def _contract(kind: str) -> type:
    """The base every object of ``kind`` must derive from (imported only when a plugin is loaded)."""
    if kind == "matchers":
        from geomatch.models.base import Matcher

        return Matcher
    if kind == "detectors":
        from geomatch.pipeline.detector import Detector

        return Detector
    if kind == "writers":
        from geomatch.pipeline.writer import Writer

        return Writer
    import click

    return click.Command


def _check_contract(kind: str, obj) -> None:
    base = _contract(kind)
    label = f"{base.__module__}.{base.__qualname__}"
    if kind == "commands":
        if not isinstance(obj, base):
            raise TypeError(f"{obj!r} is not a {label}")
    elif not (isinstance(obj, type) and issubclass(obj, base)):
        raise TypeError(f"{obj!r} is not a subclass of {label}")


@cache
def _load(kind: str, name: str):
    eps = _entry_points(kind)
    if name not in eps:
        valid = ", ".join(sorted(eps)) or "none installed"
        raise UnknownPluginError(f"unknown {kind[:-1]} '{name}'; valid choices: {valid}")
    ep = eps[name]
    try:
        obj = ep.load()
        _check_contract(kind, obj)
        return obj
    except Exception as exc:
        raise BrokenPluginError(
            f"{kind[:-1]} plugin '{name}' from {_dist_label(ep)} failed to load "
            f"({type(exc).__name__}: {exc}); reinstall it or report to its authors"
        ) from exc


def load(kind: str, name: str):
    """Import and return the object registered as ``name`` in ``kind``."""
    return _load(kind, name)
