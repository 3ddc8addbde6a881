"""Plan renderers: the JSON document (`document`), terminal text (`text`), pull-request Markdown (`markdown`).

All are pure functions of the JSON document, so every format always agrees with the others. Each is imported
when first asked for.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.render.document import PlanDocument, render_json, to_document
    from reconciler.render.markdown import render_markdown
    from reconciler.render.text import render_text

_HOMES = {"PlanDocument": "document", "render_json": "document", "to_document": "document",
          "render_markdown": "markdown", "render_text": "text"}


def __getattr__(name: str) -> Any:
    """The plan renderers, imported when first asked for (`status` renders through `render.status` alone)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"reconciler.render.{home}"), name)

__all__ = ["PlanDocument", "render_json", "render_markdown", "render_text", "to_document"]
