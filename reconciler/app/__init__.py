"""The application layer: one module per command family, composing the layers below for one command.

Owns: nothing of its own but the composition — which configuration, backend, key and executor a command uses,
and in which order (workspace, keys, planning, run, statecmds, refresh, rekey, and the speed wrappers around
loading the configuration in `source`). Must not: print, prompt, read the clock or the environment itself (the
workspace passes both in), or know about click. The CLI may import it; nothing below it may.
"""
