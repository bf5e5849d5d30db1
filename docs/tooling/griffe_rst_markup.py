"""A griffe extension: API docstrings pass through :func:`rst_markup.rst_to_markdown` before rendering."""

from __future__ import annotations

import griffe

from rst_markup import rst_to_markdown


class RstMarkup(griffe.Extension):
    def on_object(self, *, obj, loader, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
