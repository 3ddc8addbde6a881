"""Plan renderers: the JSON document (`document`), terminal text (`text`), pull-request Markdown (`markdown`).

All are pure functions of the JSON document, so every format always agrees with the others.
"""

from reconciler.render.document import PlanDocument, render_json, to_document
from reconciler.render.markdown import render_markdown
from reconciler.render.text import render_text

__all__ = ["PlanDocument", "render_json", "render_markdown", "render_text", "to_document"]
