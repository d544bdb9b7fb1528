"""Persistence: numpy + JSON only, no torch or Pyro, nothing above config, types and features.

``rundir`` (the one atomic writer, staged run directories), ``checkpoint`` (exact resume),
``modelfile`` (the pickle-free model-file format) and ``run_reader`` (the one reader of a finished
run directory).
"""
