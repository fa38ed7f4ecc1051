"""``"package.module:attribute"`` names: how a config or an input spec points at code it does not import.

Model builders (:func:`ddn_ray.models.resolve`), a use case's extra Serve routes
(:class:`ddn_ray.serve.InputRoutes`) and the built-in use cases (:mod:`ddn_ray.usecases`) are named
this way, so the engine modules import none of them.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__all__ = ["load"]


def load(name: str, *, what: str) -> Any:
    """The attribute a ``"package.module:attribute"`` name names.

    The module is imported as is; if that fails, once more with the current directory on ``sys.path``
    (a user's ``my_models.py`` beside the config, or a job's ``--working-dir``).

    Args:
        name: ``"package.module:attribute"``.
        what: what the name is for, as the error messages say it (e.g. ``"model.builder"``).

    Raises:
        ValueError: the name is not of that form, or the module cannot be imported.
        TypeError: the module has no such attribute.

    Examples:
        >>> load("ddn_ray.models:mlp", what="model.builder").__name__
        'mlp'
    """
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {name!r} must be 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as first:
        if os.getcwd() in sys.path:
            raise ValueError(
                f"{what} {name!r}: cannot import {module_name!r} ({first}); install it, put it on "
                "PYTHONPATH, or ship it with ray job submit --working-dir"
            ) from None
        sys.path.append(os.getcwd())
        return load(name, what=what)
    if not hasattr(module, attr):
        raise TypeError(f"{what} {name!r}: {module_name} has no {attr!r}")
    return getattr(module, attr)
