"""The ``geomatch`` command line. One module per command; shared options live in ``options``."""
