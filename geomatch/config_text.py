"""A pipeline config as text: the TOML a resolved config renders to, and ``--set STAGE.KEY=VALUE`` values parsed.

The schema, its validation and loading stay in :mod:`geomatch.config`; this module only reads and writes text.
"""

from __future__ import annotations

import tomllib
from typing import Any

from geomatch.config import PipelineConfig
from geomatch.errors import ConfigError


def to_toml(cfg: PipelineConfig) -> str:
    """Render a resolved config as TOML (what `geomatch pipelines show` prints)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {fmt(x)}" for k, x in v.items()) + "}"
        return repr(v)

    d = cfg.as_dict()
    lines = [f"name = {fmt(d.pop('name'))}", f"description = {fmt(d.pop('description'))}"]
    for stage, table in d.items():
        lines.append(f"\n[{stage}]")
        for key, value in table.items():
            if value is None:
                lines.append(f"# {key} = (unset)")
            else:
                lines.append(f"{key} = {fmt(value)}")
    return "\n".join(lines) + "\n"


def parse_set_options(sets: tuple[str, ...] | list[str], option: str = "--set",
                      example: str = "STAGE.KEY=VALUE, e.g. --set match.search_radius=24") -> dict[str, Any]:
    """Parse repeated ``--set STAGE.KEY=VALUE`` (VALUE in TOML syntax; bare words are strings)."""
    out: dict[str, Any] = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"{option} {item!r}: expected {example}")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    return out
