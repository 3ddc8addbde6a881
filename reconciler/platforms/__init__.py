"""Platforms: where installations live. `local` keeps the tokens in our own state; `cyclr` keeps accounts and
account connectors on the Cyclr integration platform, reached through its API (`cyclr.api`).

Owns: the adapters to each platform's API. Must not: decide actions (the planner does), read configuration files,
or print.
"""
