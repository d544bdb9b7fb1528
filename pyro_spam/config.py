"""Every option of a run, in frozen dataclasses: one place for defaults and validation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError

MAX_COMPONENTS = 15
ELBO_TYPES = ("trace", "meanfield", "stl", "rqmc", "quad", "iwae", "score")
"""The ELBO estimators (see :mod:`pyro_spam.training.elbos` and :mod:`pyro_spam.elbo_manual`)."""
ELBO_GROUPS = {"both": ("trace", "meanfield"), "all": ELBO_TYPES}
"""Names ``--elbo`` accepts for several estimators: ``both`` is the course's pair."""
ELBO_CHOICES = (*ELBO_TYPES, *ELBO_GROUPS)
DETERMINISTIC_ELBOS = ("quad",)
OPTIMIZERS = ("adam", "lbfgs")
FEATURE_KINDS = ("polynomial", "linear")
ENGINES = ("svi", "manual")
STOP_RULES = ("iterates", "plateau")
GUIDES = ("meanfield", "fullrank", "lowrank")


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

    elbo : {"trace", "meanfield", "stl", "rqmc", "quad", "iwae", "score"} or None, default=None
        The estimator: ``Trace_ELBO`` (Monte Carlo KL), ``TraceMeanField_ELBO`` (analytic KL),
        ``stl`` (sticking the landing: path-derivative gradient), ``rqmc`` (analytic KL, scrambled
        Sobol draws; ``particles`` a power of two), ``quad`` (the exact quadrature ELBO:
        Gauss–Hermite on each message's logit, analytic KL, no Monte Carlo noise), ``iwae``
        (importance-weighted bound, a different optimum) or ``score`` (score-function gradient with
        a decaying-average baseline, for teaching: without its baseline ~10⁵× Trace_ELBO's gradient
        variance at the optimum; with it settled a few times, and hundreds of times far from the
        optimum; see ``pyro-spam compare``). None means
        ``"meanfield"`` for Adam and ``"quad"`` for L-BFGS.
    optimizer : {"adam", "lbfgs"}, default="adam"
        ``"adam"``: stochastic optimisation with the stop rule ``stop`` (the course's SVI).
        ``"lbfgs"``: L-BFGS (SciPy's L-BFGS-B, started from the Laplace point) on the exact
        ``quad`` ELBO in float64 (a torch objective), full batch, converged when every component
        of the ELBO's gradient w.r.t. (loc, log scale) is below ``grad_tol``: the optimum to
        ~1e-5 posterior sd in ~20 iterations (~0.1 s on the default data). No Pyro: ``engine``,
        ``init_scale`` and the Adam/stop options do not apply; a stochastic ELBO or a mini-batch
        is refused.
    grad_tol : float, default=1e-4
        ``optimizer="lbfgs"`` only: convergence threshold on the largest gradient component (nats
        per unit of loc or log scale). A log-scale error is about grad/2 and a loc error about
        grad · sd² (so grad · sd in posterior sd): 1e-4 keeps both below 1e-4 relative.
    quad_nodes : int, default=32
        Gauss–Hermite nodes of the ``quad`` ELBO (see :data:`pyro_spam.elbo_manual.QUAD_NODES`).
        Fewer are enough at posterior widths: SBC refits use 16 (optima identical to < 1e-6 sd).
    guide : {"meanfield", "fullrank", "lowrank"}, default="meanfield"
        The Gaussian family of q (:mod:`pyro_spam.guide`): diagonal (the course's), full
        covariance (a Cholesky factor), or diagonal plus a rank-``rank`` factor. The full and
        low-rank guides train with the SVI engine and Adam and every ELBO (the manual engine is
        mean-field only; L-BFGS also fits the full-rank guide); their fits carry the covariance (``cov``).
    rank : int, default=1
        ``guide="lowrank"`` only: rank of the factor (1 … K).
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
        Initial Adam learning rate; the iterate rule multiplies it by 0.3 at each decay, the
        plateau rule divides it by 10 at each plateau (``lr_decays`` times).
    adam_beta1 : float, default=0.8
        Adam's first-moment (momentum) decay. With 0.9 (torch's default) the momentum makes the
        iterates ring around the optimum for ~100 steps after reaching it, and the iterate stop
        rule, which waits for stationary iterates, stops later: on the default data 193–256 steps
        with 0.9, 160–193 with 0.8 (``benchmarks/results/convergence_thresholds.md``). Runs saved
        before this option existed used 0.9 (their saved configuration reads back as such).
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
        Initial guide scale for Adam (loc starts at 0); L-BFGS starts from the Laplace point.
    seed : int, default=0
    jit : bool, default=True
        Compile the Pyro ELBO once with ``torch.jit.trace`` (:mod:`pyro_spam.training.compiled`): the same
        numbers as the plain ELBO, ~25% less time per step on the default data.
    """

    elbo: str | None = None
    optimizer: str = "adam"
    grad_tol: float = 1e-4
    quad_nodes: int = 32
    guide: str = "meanfield"
    rank: int = 1
    engine: str = "svi"
    particles: int = 64
    batch_size: int | None = None
    max_steps: int = 3000
    lr: float = 0.1
    adam_beta1: float = 0.8
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
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.elbo is None:
            object.__setattr__(self, "elbo", "quad" if self.optimizer == "lbfgs" else "meanfield")
        _choice("elbo", self.elbo, ELBO_TYPES)
        _choice("engine", self.engine, ENGINES)
        _choice("guide", self.guide, GUIDES)
        _positive("rank", self.rank, integer=True)
        if self.guide != "meanfield":
            if self.engine == "manual":
                raise ConfigError(f"the manual engine fits the mean-field guide only (got guide {self.guide!r}); use --engine svi")
            if self.optimizer == "lbfgs" and self.guide != "fullrank":
                raise ConfigError(f"the lbfgs optimizer fits the mean-field and full-rank guides (got guide {self.guide!r}); "
                                  "use --optimizer adam")
        if self.optimizer == "lbfgs":
            if self.elbo not in DETERMINISTIC_ELBOS:
                raise ConfigError(f"the lbfgs optimizer needs the deterministic 'quad' ELBO (got {self.elbo!r}: "
                                  "its Monte Carlo noise breaks the line search); use --elbo quad or --optimizer adam")
            if self.batch_size is not None:
                raise ConfigError("the lbfgs optimizer needs full batches (a mini-batch changes the objective every step); "
                                  "drop --batch-size or use --optimizer adam")
        _positive("grad_tol", self.grad_tol)
        _positive("quad_nodes", self.quad_nodes, integer=True)
        if not 4 <= self.quad_nodes <= 200:
            raise ConfigError(f"quad_nodes must be between 4 and 200 (got {self.quad_nodes})")
        _choice("stop", self.stop, STOP_RULES)
        _positive("particles (S)", self.particles, integer=True)
        if self.elbo == "rqmc" and self.particles & (self.particles - 1):
            raise ConfigError(f"the rqmc ELBO needs a power of two particles (Sobol points balance only then; got {self.particles})")
        if self.batch_size is not None:
            _positive("batch size", self.batch_size, integer=True)
        _positive("steps", self.max_steps, integer=True)
        _positive("learning rate", self.lr)
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"{name} must be in [0, 1) (got {value!r})")
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
        if len(set(self.elbos)) != len(self.elbos):
            raise ConfigError(f"each ELBO type once, please (got {', '.join(self.elbos)})")
        for e in self.elbos:
            self.train_for(e)  # validates the combination (e.g. lbfgs needs quad)
        _positive("num_draws", self.num_draws, integer=True)

    def train_for(self, elbo: str) -> TrainConfig:
        return dataclasses.replace(self.train, elbo=elbo)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_saved(cls, d: dict[str, Any]) -> RunConfig:
        """:meth:`from_dict` for a configuration a run wrote: settings that run did not record get the
        value it used, not today's default (``adam_beta1``: 0.9 before pyro-spam 0.6.0)."""
        d = dict(d)
        d["train"] = {**LEGACY_TRAIN, **d.get("train", {})}
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(
            data=d.get("data"),
            features=FeatureConfig(**d.get("features", {})),
            train=TrainConfig(**d.get("train", {})),
            elbos=tuple(d.get("elbos", ("trace", "meanfield"))),
            num_draws=d.get("num_draws", 1000),
        )


LEGACY_TRAIN: dict[str, Any] = {"adam_beta1": 0.9}
"""``TrainConfig`` settings added after runs were first saved, with the value those runs used
(:meth:`RunConfig.from_saved`, and the report's reproduce command)."""


def elbo_choice_to_types(choice: str | None, optimizer: str = "adam") -> tuple[str, ...]:
    """Map ``--elbo`` to the tuple of ELBO types to fit: a name, a comma-separated list of names,
    ``both`` (= ``trace,meanfield``, the course's pair), ``all`` (every estimator), or None for the
    optimiser's default (``both`` for Adam, ``quad`` for L-BFGS)."""
    if choice is None:
        choice = "quad" if optimizer == "lbfgs" else "both"
    out: list[str] = []
    for name in (c.strip() for c in choice.split(",")):
        _choice("elbo", name, ELBO_CHOICES)
        out.extend(n for n in ELBO_GROUPS.get(name, (name,)) if n not in out)
    return tuple(out)
