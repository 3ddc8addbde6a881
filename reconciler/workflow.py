"""Workflows shared by the CLI and tests: load the configuration, open the state backend, plan.

Owns: composing the layers for one command. Must not: print, prompt, read the clock or the environment
itself (both are passed in), or know about click.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.config import LoadedConfig, load_config
from reconciler.config.loader import display_path
from reconciler.plan import Plan
from reconciler.planner import make_plan
from reconciler.render.document import PlanDocument, to_document
from reconciler.state import LocalBackend, StateBackend

__all__ = ["PlanResult", "open_backend", "plan_config"]

DEFAULT_ENVIRONMENT = "default"


@dataclass(frozen=True)
class PlanResult:
    loaded: LoadedConfig
    backend: StateBackend
    plan: Plan
    document: PlanDocument


def open_backend(config_dir: Path, loaded: LoadedConfig, environment: str = DEFAULT_ENVIRONMENT) -> StateBackend:
    """The state backend the configuration names (local: `<config dir>/<backend.path>/<env>.json`)."""
    directory = config_dir / loaded.root.backend.path
    return LocalBackend(directory, environment, display_dir=display_path(directory))


def plan_config(config_dir: Path, *, environ: Mapping[str, str], now: dt.datetime) -> PlanResult:
    """Load, read state, plan: everything `reconciler plan` shows, as data."""
    loaded = load_config(config_dir, environ=environ, today=now.date())
    backend = open_backend(config_dir, loaded)
    plan = make_plan(loaded.desired, backend.read(), now=now, state_location=backend.describe())
    document = to_document(plan, warnings=[str(w) for w in loaded.warnings])
    return PlanResult(loaded, backend, plan, document)
