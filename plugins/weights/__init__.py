"""Shipped weights (``index.json``, the ``.pt`` files and their model cards), declared to geomatch under the
``geomatch.weights`` entry-point group (``setup.cfg``)."""
