"""The sandbox provider: Azure DevOps OAuth, Entra ID, the Azure DevOps REST checks and the Cyclr API on loopback,
so the whole flow runs with no Azure or Cyclr account. See docs/sandbox.md. Never used by the real flows."""

from reconciler.sandbox.provider import Provider
from reconciler.sandbox.seed import load_seed
from reconciler.sandbox.server import SandboxServer

__all__ = ["Provider", "SandboxServer", "load_seed"]
