"""A griffe extension: the docstrings' Sphinx roles (``:class:`Featurizer```) as links in the API reference.

The docstrings are written for ``help()`` and for the site alike, with Sphinx roles for the names they
refer to. mkdocstrings renders Markdown, so once the package is loaded each role becomes a cross-reference
(``[`Featurizer`][ddn_ray.features.Featurizer]``) when its target is a public, documented object of the
package (the reference pages render exactly those), and plain code otherwise (another library's object,
a private helper). Names resolve as Python would from the object that holds the docstring.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj):`(~?)([^`<>]+)`")


def _target(pkg: griffe.Module, where: griffe.Object, name: str) -> str | None:
    """The full path of ``name`` seen from ``where``, if the reference pages render it."""
    head, _, rest = name.partition(".")
    path = None
    if name.startswith(pkg.path + "."):
        path = name
    else:
        scope: griffe.Object | None = where
        while scope is not None and path is None:
            try:
                path = scope.resolve(head) + (f".{rest}" if rest else "")
            except (griffe.NameResolutionError, KeyError, ValueError, AttributeError):
                scope = scope.parent
    if path is None or not path.startswith(pkg.path + "."):
        return None
    try:
        obj: Any = pkg[path[len(pkg.path) + 1 :]]
        while obj.is_alias:
            obj = obj.final_target
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    parts = obj.path.split(".")
    if any(p.startswith("_") for p in parts) or (not obj.docstring and not obj.is_module):
        return None
    return str(obj.path)


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring's Sphinx roles once the whole package is loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        def visit(obj: griffe.Object) -> None:
            if obj.docstring is not None:

                def link(m: re.Match[str]) -> str:
                    name = m[2].strip()
                    label = name.rsplit(".", 1)[-1] if m[1] else name
                    label = label.removesuffix("()")
                    target = _target(pkg, obj, name.removesuffix("()"))
                    return f"[`{label}`][{target}]" if target else f"`{label}`"

                obj.docstring.value = ROLE.sub(link, obj.docstring.value)
            for member in obj.members.values():
                if not member.is_alias:
                    visit(member)

        visit(pkg)
