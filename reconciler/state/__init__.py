"""State: the recorded document (`model`), the backend protocol (`backend`) and the backends that keep it
(`local`, `postgres`). Import what you use from its module: importing this package imports nothing else, so that
the planner reads the document's model without loading a backend.
"""
