"""State: the recorded document and the backends that keep it. See `model`, `backend`, `local`."""

from reconciler.state.backend import LockInfo, StateBackend
from reconciler.state.local import LocalBackend
from reconciler.state.model import (
    FORMAT_VERSION,
    InstallationRecord,
    PartnerRecord,
    StateDocument,
    decode_state,
    encode_state,
)

__all__ = [
    "FORMAT_VERSION",
    "InstallationRecord",
    "LocalBackend",
    "LockInfo",
    "PartnerRecord",
    "StateBackend",
    "StateDocument",
    "decode_state",
    "encode_state",
]
