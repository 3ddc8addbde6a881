"""The authorization service (`reconciler serve`): the long-running half of the product. It completes deferred
authorizations through signed, expiring links, hands fresh tokens to the team's runtime behind API keys, refreshes
them ahead of expiry and posts signed events to the team's webhooks (`events`). It composes the application layer,
the state, the configuration, the flows and the tokens; nothing below it imports it.
"""
