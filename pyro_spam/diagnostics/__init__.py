"""Diagnostics of the variational fit: maths only, no run-directory I/O.

* :mod:`~pyro_spam.diagnostics.psis`: PSIS k̂ of q (is the guide a usable importance proposal?)
  with its spread over repeated draws, PSIS-LOO of its draws, and LOO corrected for q.
* :mod:`~pyro_spam.diagnostics.nuts`: NUTS on the same model as the reference, and the
  per-coefficient VI-vs-NUTS comparison.
* :mod:`~pyro_spam.diagnostics.guides`: the guide leaderboard (exact ELBO of a full-covariance
  Gaussian, Laplace at the MAP, PSIS importance resampling, sd ratios and 1-Wasserstein distances
  to NUTS): which approximation to trust.
* :mod:`~pyro_spam.diagnostics.sbc`: simulation-based calibration from truths and per-simulation
  draws (ranks, VSBC, interval coverage with binomial bands); the simulations themselves are
  :mod:`pyro_spam.calibration`.

Writing these into a run directory (netCDF, tables, figures, ``summary.json``) is
:mod:`pyro_spam.pipeline.diagnose`.
"""
