"""Errors raised by ddn_ray.

Every error derives from :class:`DDNRayError` and is picklable, so it crosses
actor boundaries unchanged (ray ``python/ray/train/v2/api/exceptions.py`` style).
"""

from __future__ import annotations

__all__ = ["ConfigError", "DDNRayError", "DataError", "UpdateRejected"]


class DDNRayError(Exception):
    """Root of every error this package raises."""


class ConfigError(DDNRayError):
    """A configuration file or value is invalid; the message names each field and the fix."""


class DataError(DDNRayError):
    """A data set cannot be found, downloaded, verified or parsed."""


class UpdateRejected(DDNRayError):
    """The controller refused a published update (e.g. non-finite weights)."""
