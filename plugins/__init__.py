"""First-party geomatch plugins: matchers, detectors and writers.

Installed under the import name ``geomatch_plugins`` and registered through the same entry-point
groups (``geomatch.matchers``, ``geomatch.detectors``, ``geomatch.writers``) a third party uses.
"""
