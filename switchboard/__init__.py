"""Switchboard core: settings, domain models, wire names, Temporal client, task service.

Everything here is cheap to import: no Temporal connection, no model client and
no git or Docker handle is created at import time.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
