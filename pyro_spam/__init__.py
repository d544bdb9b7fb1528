"""pyro_spam: variational Bayesian SMS spam detection with Pyro.

Data flow: course ``.npz`` → features (scale → PCA → scale → terms) → Pyro model + hand-written
mean-field guide → SVI → posterior draws → evaluation → run directory.
"""

__version__ = "0.4.0"
