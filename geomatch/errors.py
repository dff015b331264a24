"""Error hierarchy. Each error carries the process exit code the CLI uses for it.

2: usage and bad input (the user can fix it by changing a file or an option).
1: runtime failures (something went wrong while doing valid work).
130: interrupted (Ctrl-C), as shells report SIGINT; see ``geomatch.cli.main``.
"""


class GeomatchError(Exception):
    """Base class; a runtime failure unless a subclass says otherwise."""

    exit_code = 1


class InputError(GeomatchError):
    """Bad input: a file, option or config value the user must change."""

    exit_code = 2


class ConfigError(InputError):
    """An invalid pipeline file or override."""


class RasterError(InputError):
    """A raster that cannot be used as given (unreadable, no overlap, all nodata...)."""


class PluginError(GeomatchError):
    """A plugin that cannot be found (exit 2) or fails to load (exit 1)."""


class UnknownPluginError(PluginError, InputError):
    exit_code = 2


class BrokenPluginError(PluginError):
    exit_code = 1


class CheckpointError(InputError):
    """A weights file that does not fit the model asked for, or fails its checksum."""


class OutputExistsError(InputError):
    """Refusing to overwrite a user's file without --overwrite."""


class OutputBusyError(InputError):
    """Another run is writing the same output right now."""


class SchedulerError(InputError):
    """A dask.distributed scheduler address that cannot be reached."""
