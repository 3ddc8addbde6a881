"""The Cyclr platform: accounts and account connectors through the Cyclr v1.0 API (`api`)."""
