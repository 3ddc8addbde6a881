"""Tokens: their plaintext model, the sealed records and the stores that keep them, the vault that seals them, and
the custodian — the one place a token is written. See `model`, `store`, `vault`, `custodian`, `scopes`.

Must not: import the configuration, the planner, the renderers, the CLI or the state document's backends (the
state layer uses these stores, never the other way round). Importing this package imports nothing else.
"""
