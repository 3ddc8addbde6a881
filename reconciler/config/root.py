"""The root configuration file alone (`load_root`): for commands that need the backend settings and nothing the
included files declare (`status`, `state list`), without importing what reads and checks those files.

Owns: reading and validating the root file with its environment's overlay. Must not: read included files or
resolve secrets (see `loader`).
"""

from __future__ import annotations

from pathlib import Path

from reconciler.config.documents import Manifest, Reader
from reconciler.config.includes import CONFIG_FILE
from reconciler.config.located import Report, display_path
from reconciler.config.overlay import apply_overlay, overlay_path
from reconciler.config.schema import RootFile, validation_context
from reconciler.config.translate import validated
from reconciler.errors import ConfigError, ConfigIssue, Location

__all__ = ["load_root"]


def load_root(config_dir: Path, *, environment: str | None = None) -> RootFile:
    """Only the root file (with the environment overlay merged in), validated: for commands that need the backend
    settings, not the secrets. Overlay entries for partners and tenants of included files are not applied."""
    config_dir, report = Path(config_dir), Report()
    reader = Reader(report, Manifest())
    root_path = config_dir / CONFIG_FILE
    if not root_path.is_file():
        raise ConfigError([ConfigIssue(Location(display_path(root_path)), "", f"no {CONFIG_FILE} here")])
    path = overlay_path(config_dir, environment, reader.manifest)
    raw = reader.read(root_path, RootFile)
    overlay = reader.read(path, None) if path is not None else None
    report.fail_if_issues()
    assert raw is not None
    documents = [raw]
    if overlay is not None:
        documents = apply_overlay(report, documents, *overlay, complete=False)
    root = validated(report, *documents[0], RootFile, validation_context(documents[0][1]))
    report.fail_if_issues()
    assert isinstance(root, RootFile)
    return root
