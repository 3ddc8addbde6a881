"""reconciler — declarative connector installations for an embedded integration platform.

The public surface is the CLI (`reconciler.cli`); the layers below it are importable for tests and tooling:
config (YAML -> DesiredState), catalog (connector definitions), state (backends), planner (pure diff),
render (text, JSON, Markdown).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
