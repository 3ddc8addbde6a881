"""The authorization service (`reconciler serve`): tenants complete sign-ins through signed links, the team's runtime
reads fresh tokens behind API keys, tokens are refreshed ahead of expiry, and signed events reach the team. It is a
second entry point into the executor's code (`reconciler.apply`), never a second implementation of a flow.
"""
