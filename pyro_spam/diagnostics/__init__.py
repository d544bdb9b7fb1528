"""Diagnostics of the variational fit: maths only, no run-directory I/O.

* :mod:`~pyro_spam.diagnostics.psis`: PSIS k̂ of q (is the guide a usable importance proposal?)
  and PSIS-LOO of its draws.
* :mod:`~pyro_spam.diagnostics.nuts`: NUTS on the same model as the reference, and the
  per-coefficient VI-vs-NUTS comparison.

Writing these into a run directory (netCDF, tables, figures, ``summary.json``) is
:mod:`pyro_spam.pipeline.diagnose`.
"""
