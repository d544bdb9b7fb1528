"""Every option of a run, in frozen dataclasses: one place for defaults and validation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError

MAX_COMPONENTS = 15
ELBO_TYPES = ("trace", "meanfield")
ELBO_CHOICES = ("trace", "meanfield", "both")
FEATURE_KINDS = ("polynomial", "linear")
ENGINES = ("svi", "manual")
STOP_RULES = ("iterates", "plateau")


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{name} must be one of: {', '.join(options)} (got {value!r})")


def _positive(name: str, value: float, *, integer: bool = False) -> None:
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{name} must be a whole number (got {value!r})")
    if not (value > 0 and math.isfinite(value)):  # also catches NaN and inf
        raise ConfigError(f"{name} must be a positive finite number (got {value!r})")


@dataclass(frozen=True)
class FeatureConfig:
    """How embeddings become model inputs.

    components : int or "auto", default=5
        Number K of PCA components (1…15), or the smallest K reaching ``variance_target``.
    variance_target : float, default=0.30
        Cumulative explained variance that ``"auto"`` aims for.
    kind : {"polynomial", "linear"}, default="polynomial"
        Terms ``x_j^j`` (the course's model) or ``x_j``.
    test_size : float, default=0.2
        Held-out fraction of the stratified split.
    """

    components: int | Literal["auto"] = 5
    variance_target: float = 0.30
    kind: str = "polynomial"
    test_size: float = 0.2

    def __post_init__(self) -> None:
        if self.components != "auto":
            if isinstance(self.components, bool) or not isinstance(self.components, int):
                raise ConfigError(f"components must be an integer 1…{MAX_COMPONENTS} or 'auto' (got {self.components!r})")
            if not 1 <= self.components <= MAX_COMPONENTS:
                raise ConfigError(
                    f"components must be between 1 and {MAX_COMPONENTS} (got {self.components}); "
                    "the course caps the polynomial degree at 15 (aim for about 5)"
                )
        if not 0 < self.variance_target <= 1:
            raise ConfigError(f"variance_target must be in (0, 1] (got {self.variance_target!r})")
        _choice("features", self.kind, FEATURE_KINDS)
        if not 0 < self.test_size < 1:
            raise ConfigError(f"test_size must be between 0 and 1 (got {self.test_size!r})")


@dataclass(frozen=True)
class TrainConfig:
    """How the mean-field guide is fitted.

    elbo : {"trace", "meanfield"}, default="meanfield"
        ``Trace_ELBO`` (Monte Carlo KL) or ``TraceMeanField_ELBO`` (analytic KL).
    engine : {"svi", "manual"}, default="svi"
        Pyro SVI, or the plain-torch loop over the manual ELBO.
    particles : int, default=64
        Monte Carlo particles S per step (vectorised).
    batch_size : int or None, default=None
        Mini-batch size B; ``None`` uses the full training set. With B < N the likelihood is
        scaled by N/B (``pyro.plate(subsample=...)``) so the ELBO estimate stays unbiased.
    max_steps : int, default=3000
        Step budget. A fit that has not converged by then stops with ``stop_reason="budget"``.
    stop : {"iterates", "plateau"}, default="iterates"
        The convergence rule. ``"iterates"`` (:mod:`pyro_spam.training.convergence`): stationarity
        of the parameter iterates (split-R̂), then the Polyak–Ruppert average accepted when its
        Monte Carlo error is small in posterior sd, with learning-rate decays until a smaller rate
        no longer moves it; the fit returns that average. ``"plateau"``: v0.1's windowed test on
        the ELBO trace (``window``, ``tol``, ``lr_decays``), which gradient noise can fake; kept
        for comparison.
    lr : float, default=0.1
        Initial Adam learning rate; divided by 10 at each plateau (``lr_decays`` times).
    adam_beta2 : float, default=0.9
        Adam's second-moment decay. The default 0.999 remembers the first steps' huge gradients
        for ~1000 steps and shrinks later steps; 0.9 forgets them within ~10 steps, so the fit
        reaches the optimum in ~3x fewer steps (see ``benchmarks/README.md``).
    lr_decays : int, default=2
        ``stop="plateau"`` only: plateaus to pass (with a 10x smaller rate each) before declaring convergence.
    window : int, default=20
        ``stop="plateau"`` only: steps per convergence check; a plateau is a window whose mean
        ELBO improves on the previous window's by less than ``tol`` nats.
    tol : float, default=0.5
        ``stop="plateau"`` only: plateau threshold in nats.
    prior_scale : float, default=1.0
        Standard deviation of the N(0, s²) prior on every coefficient.
    init_scale : float, default=0.1
        Initial guide scale (loc starts at 0).
    seed : int, default=0
    jit : bool, default=True
        Compile the Pyro ELBO once with ``torch.jit.trace`` (:mod:`pyro_spam.training.compiled`): the same
        numbers as the plain ELBO, ~25% less time per step on the default data.
    """

    elbo: str = "meanfield"
    engine: str = "svi"
    particles: int = 64
    batch_size: int | None = None
    max_steps: int = 3000
    lr: float = 0.1
    adam_beta2: float = 0.9
    lr_decays: int = 2
    window: int = 20
    tol: float = 0.5
    stop: str = "iterates"
    prior_scale: float = 1.0
    init_scale: float = 0.1
    seed: int = 0
    jit: bool = True

    def __post_init__(self) -> None:
        _choice("elbo", self.elbo, ELBO_TYPES)
        _choice("engine", self.engine, ENGINES)
        _choice("stop", self.stop, STOP_RULES)
        _positive("particles (S)", self.particles, integer=True)
        if self.batch_size is not None:
            _positive("batch size", self.batch_size, integer=True)
        _positive("steps", self.max_steps, integer=True)
        _positive("learning rate", self.lr)
        if isinstance(self.adam_beta2, bool) or not isinstance(self.adam_beta2, (int, float)) or not 0 <= self.adam_beta2 < 1:
            raise ConfigError(f"adam_beta2 must be in [0, 1) (got {self.adam_beta2!r})")
        if isinstance(self.lr_decays, bool) or not isinstance(self.lr_decays, int) or self.lr_decays < 0:
            raise ConfigError(f"lr_decays must be a whole number >= 0 (got {self.lr_decays!r})")
        _positive("window", self.window, integer=True)
        _positive("tol", self.tol)
        _positive("prior scale", self.prior_scale)
        _positive("init scale", self.init_scale)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a whole number >= 0 (got {self.seed!r})")
        if not isinstance(self.jit, bool):
            raise ConfigError(f"jit must be True or False (got {self.jit!r})")


@dataclass(frozen=True)
class RunConfig:
    """A whole ``pyro-spam run``.

    data : str or None, default=None
        Path of a course-format ``.npz``; ``None`` uses the shipped default.
    elbos : tuple of str, default=("trace", "meanfield")
        The ELBO types to fit (``--elbo both`` gives both).
    num_draws : int, default=1000
        Guide draws for the posterior predictive and ArviZ.
    """

    data: str | None = None
    features: FeatureConfig = FeatureConfig()
    train: TrainConfig = TrainConfig()
    elbos: tuple[str, ...] = ("trace", "meanfield")
    num_draws: int = 1000

    def __post_init__(self) -> None:
        if not self.elbos:
            raise ConfigError("at least one ELBO type is needed")
        for e in self.elbos:
            _choice("elbo", e, ELBO_TYPES)
        _positive("num_draws", self.num_draws, integer=True)

    def train_for(self, elbo: str) -> TrainConfig:
        return dataclasses.replace(self.train, elbo=elbo)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(
            data=d.get("data"),
            features=FeatureConfig(**d.get("features", {})),
            train=TrainConfig(**d.get("train", {})),
            elbos=tuple(d.get("elbos", ("trace", "meanfield"))),
            num_draws=d.get("num_draws", 1000),
        )


def elbo_choice_to_types(choice: str) -> tuple[str, ...]:
    """Map ``--elbo trace|meanfield|both`` to the tuple of ELBO types to fit."""
    _choice("elbo", choice, ELBO_CHOICES)
    return ELBO_TYPES if choice == "both" else (choice,)
