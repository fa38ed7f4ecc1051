"""ddn_ray: dynamic deep networks that train and serve at the same time on Ray.

Components are imported as modules, e.g. ``from ddn_ray import stream, controller``.
None of them starts Ray: only ``jobs/``, ``examples/``, the CLI and test fixtures call
``ray.init``.
"""

from __future__ import annotations

from ddn_ray.errors import ConfigError, DataError, DDNRayError, UpdateRejected

__all__ = ["ConfigError", "DDNRayError", "DataError", "UpdateRejected", "__version__"]
__version__ = "0.1.0"
