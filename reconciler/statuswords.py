"""The five status words, exactly as automation reads them (`status`, `state list`, the service's `/status`).

Owns: the words and their order. Must not: import anything of reconciler's: the command line loads it at start-up
(`status --status WORD` offers them), and `reconciler.status` holds the rule that picks one.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["STATUS_WORDS", "StatusWord"]

StatusWord = Literal["healthy", "expiring", "needs-reauthorization", "pending", "error"]
STATUS_WORDS: tuple[StatusWord, ...] = ("healthy", "expiring", "needs-reauthorization", "pending", "error")
