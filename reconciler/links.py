"""Sign-in links of the authorization service: `{public_url}/authorize/{pending id}?sig=…`, one per pending
authorization, signed with a key derived from the state key.

Owns: the pending id (the address and a digest of what the pending authorization is: a reissued one gets a new
id, so its old link is refused), the link's signature and its check (constant time). Must not: read state, the
clock or the configuration; decide whether a pending authorization may still be completed (`reconciler.pending`
does), or put anything secret in a link (the OAuth `state` and PKCE verifier of an attempt are made when the link
is opened, never before).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from reconciler.crypto import StateKey
from reconciler.state.model import PendingRecord

__all__ = ["LinkIssuer", "link_issuer", "split_pending_id"]

_SEPARATOR = "~"  # between the address and the digest: not part of any address


def link_issuer(key: StateKey, public_url: str, *, lineage: str, environment: str) -> LinkIssuer:
    """The issuer of links to `public_url` for one state (lineage + environment): a key of its own, derived from
    the state key, so that a link of one state is nothing to another."""
    info = f"reconciler sign-in links v1\n{lineage}\n{environment}".encode()
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key.key)
    return LinkIssuer(public_url.rstrip("/"), derived)


@dataclass(frozen=True)
class LinkIssuer:
    public_url: str
    key: bytes = field(repr=False)

    def pending_id(self, address: str, pending: PendingRecord) -> str:
        """`<address>~<digest>` of the pending authorization recorded for `address` (when it was issued, for what)."""
        what = f"{address}\n{pending.since.isoformat()}\n{pending.target_digest}\n{pending.client_id}".encode()
        return f"{address}{_SEPARATOR}{hashlib.sha256(what).hexdigest()[:20]}"

    def signature(self, pending_id: str) -> str:
        mac = hmac.new(self.key, b"link\n" + pending_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def link(self, address: str, pending: PendingRecord) -> str:
        pending_id = self.pending_id(address, pending)
        return f"{self.public_url}/authorize/{quote(pending_id, safe='~.-_')}?sig={self.signature(pending_id)}"

    def signed(self, pending_id: str, sig: str | None) -> bool:
        """Whether `sig` is this issuer's signature of `pending_id` (constant time)."""
        return sig is not None and hmac.compare_digest(self.signature(pending_id).encode(), sig.encode())


def split_pending_id(pending_id: str) -> str | None:
    """The address a pending id names (None: not a pending id)."""
    address, separator, digest = pending_id.rpartition(_SEPARATOR)
    return address if separator and address and len(digest) == 20 else None
