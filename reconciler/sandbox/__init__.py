"""The sandbox provider: Azure DevOps OAuth, Entra ID and the Azure DevOps REST checks on loopback, so the whole
flow runs with no Azure account. See docs/sandbox.md. Never used by the real flows."""

from reconciler.sandbox.provider import Provider
from reconciler.sandbox.server import SandboxServer, load_seed

__all__ = ["Provider", "SandboxServer", "load_seed"]
