"""Environments: which overlay a load merges (`environments/<name>.yaml`) and how it merges over the files.

Owns: environment names and their overlay files, the merge (mappings by key, lists and other values replaced, a
null removes the key; each partner and tenant into the file that declares it), remembering which key paths the
overlay wrote (so a problem there is located in the overlay), and the state directories every environment names
(references of no environment may read them). Must not: validate, or resolve references.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler.config.documents import Document, Manifest
from reconciler.config.includes import CONFIG_FILE, FileTooLarge, read_config_bytes
from reconciler.config.located import KeyPath, Report, SourceFile, did_you_mean, display_path, key_path_text
from reconciler.config.schema import LocalBackendSpec, RootFile
from reconciler.errors import ConfigError, ConfigIssue, Location
from reconciler.yamlio import YamlSyntaxError, load_yaml_text

__all__ = [
    "DEFAULT_ENVIRONMENT",
    "ENVIRONMENTS_DIR",
    "ENVIRONMENT_NAME",
    "apply_overlay",
    "environment_names",
    "overlay_path",
    "state_directories",
]

ENVIRONMENTS_DIR = "environments"
DEFAULT_ENVIRONMENT = "default"
ENVIRONMENT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_SECTIONS = ("partners", "tenants")


def environment_names(config_dir: Path) -> list[str]:
    """The environments a configuration defines: the names of `environments/*.yaml`, sorted."""
    directory = Path(config_dir) / ENVIRONMENTS_DIR
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml") if p.is_file() and ENVIRONMENT_NAME.fullmatch(p.stem))


def overlay_path(config_dir: Path, name: str | None, manifest: Manifest) -> Path | None:
    """The overlay file of the environment asked for (None: the base configuration alone); an unknown or invalid
    name raises `ConfigError`."""
    if name is None:
        return None
    directory = config_dir / ENVIRONMENTS_DIR
    where = Location(display_path(directory))
    if not ENVIRONMENT_NAME.fullmatch(name):
        message = f"invalid environment name {json.dumps(name)}"
        hint = "use lowercase letters, digits, '-' and '_' (at most 63, starting with a letter or digit)"
        raise ConfigError([ConfigIssue(where, "", message, hint)])
    path = directory / f"{name}.yaml"
    if path.is_file():
        return path
    if name == DEFAULT_ENVIRONMENT:
        manifest.absent.append(os.path.abspath(path))
        return None
    known = environment_names(config_dir)
    if (directory / f"{name}.yml").is_file():
        hint = f"rename {ENVIRONMENTS_DIR}/{name}.yml to {name}.yaml"
    elif known:
        suggestion = did_you_mean(name, known)
        hint = (f"{suggestion} " if suggestion else "") + "environments defined: " + ", ".join(known)
    else:
        hint = f"no environment is defined; add {ENVIRONMENTS_DIR}/{name}.yaml to define one"
    message = f"unknown environment '{name}': there is no {ENVIRONMENTS_DIR}/{name}.yaml"
    raise ConfigError([ConfigIssue(where, "", message, hint)])


def apply_overlay(
    report: Report, documents: Sequence[Document], overlay: SourceFile, data: dict[str, Any], *, complete: bool = True
) -> list[Document]:
    """The documents with the overlay merged in: each partner and tenant into the file that declares it, new
    ones and everything else into the root file. `complete` False: `documents` is only the root file, and
    entries it does not declare are left out."""
    parts = _parts(report, documents, overlay, data, complete)
    merged = []
    for (src, doc), part in zip(documents, parts, strict=True):
        written: set[KeyPath] = set()
        missing: list[KeyPath] = []
        merged.append((src, _overlaid(doc, part, (), written, missing)))
        src.overlay, src.overlaid = overlay, frozenset(written)
        for path in missing if complete else ():
            report.issue(
                overlay,
                path,
                f"null removes {key_path_text(path)}, which the base configuration does not set",
                "check the name; the line has no effect",
                at_key=True,
                warning=True,
            )
    return merged


def _parts(
    report: Report, documents: Sequence[Document], overlay: SourceFile, data: dict[str, Any], complete: bool
) -> list[dict[str, Any]]:
    """The overlay cut into one part per document: what merges into that file."""
    parts: list[dict[str, Any]] = [{} for _ in documents]
    for key, value in data.items():
        if key == "include":
            hint = f"list the file in the include: of {CONFIG_FILE}, or move its content into the overlay"
            report.issue(overlay, (key,), "an environment overlay cannot include files", hint, at_key=True)
        elif key in _SECTIONS and value is None:  # `tenants: null`: none at all, wherever declared
            holders = [part for part, (_, doc) in zip(parts, documents, strict=True) if key in doc] or parts[:1]
            for part in holders:
                part[key] = None
        elif key in _SECTIONS and isinstance(value, dict):
            for name, entry in value.items():
                holder = next(
                    (i for i, (_, doc) in enumerate(documents) if isinstance(doc.get(key), dict) and name in doc[key]),
                    0 if complete else None,
                )
                if holder is not None:
                    parts[holder].setdefault(key, {})[name] = entry
        else:
            parts[0][key] = value
    return parts


def _overlaid(
    base: Mapping[str, Any], over: Mapping[str, Any], path: KeyPath, written: set[KeyPath], missing: list[KeyPath]
) -> dict[str, Any]:
    """`over` merged over `base`: mappings by key (recursively), anything else replaced, a null value removes its
    key. Adds to `written` every path whose value `over` set or removed, to `missing` each null with nothing to
    remove."""
    merged = dict(base)
    for key, value in over.items():
        where = (*path, key)
        if value is None:
            if key in merged:
                del merged[key]
                written.add(where)
            else:
                missing.append(where)
        elif isinstance(value, dict):
            into = merged.get(key)
            if not isinstance(into, dict):
                into = {}
                written.add(where)
            merged[key] = _overlaid(into, value, where, written, missing)
        else:
            merged[key] = value
            written.add(where)
    return merged


def state_directories(config_dir: Path, root: RootFile, manifest: Manifest) -> list[str]:
    """The local state directories of this configuration, relative to it: this environment's and those the
    other environments' overlays name (read here, so that no reference of any environment reads them)."""
    found = [root.backend.path] if isinstance(root.backend, LocalBackendSpec) else []
    for name in environment_names(config_dir):
        path = config_dir / ENVIRONMENTS_DIR / f"{name}.yaml"
        try:
            raw = read_config_bytes(path)
            data = load_yaml_text(raw.decode("utf-8-sig"))
        except (OSError, FileTooLarge, UnicodeDecodeError, YamlSyntaxError):
            continue  # that environment's own load reports it
        manifest.read(path, raw)
        backend = data.get("backend") if isinstance(data, dict) else None
        if isinstance(backend, dict) and isinstance(backend.get("path"), str) and backend["path"]:
            found.append(backend["path"])
    return sorted(set(found))
