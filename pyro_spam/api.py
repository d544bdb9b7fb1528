"""``pyro_spam.run``: a whole ``pyro-spam run`` as a function (exported lazily by the package)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["load_inference_data", "run"]


# run(**options) takes VariationalSpamClassifier's parameter names: these two differ from the config fields they set.
_RUN_ALIASES = {"features": "kind", "steps": "max_steps"}


def _run_config(config: Any, options: Mapping[str, Any]) -> Any:
    """``config`` (a RunConfig, a ``RunConfig.to_dict()`` mapping or None) with ``options`` applied."""
    import dataclasses

    from .config import FeatureConfig, RunConfig, TrainConfig, elbo_choice_to_types

    if config is None:
        config = RunConfig()
    elif isinstance(config, Mapping):  # a saved configuration: settings it predates get the values it used
        config = RunConfig.from_saved(config)
    elif not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig, a mapping like summary['meta']['config'] or None (got {type(config).__name__})")
    sections: dict[str, dict[str, Any]] = {"features": {}, "train": {}, "": {}}
    feature_fields = {f.name for f in dataclasses.fields(FeatureConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"elbo"}
    for key, value in options.items():
        field = _RUN_ALIASES.get(key, key)
        if key in ("data", "num_draws"):
            sections[""][key] = value
        elif key == "elbo":
            sections[""]["elbos"] = value
        elif field in feature_fields:
            sections["features"][field] = value
        elif field in train_fields:
            sections["train"][field] = value
        else:
            names = sorted({"data", "num_draws", "elbo", *_RUN_ALIASES, *feature_fields, *train_fields} - {"kind", "max_steps"})
            raise TypeError(f"run() got an unexpected keyword argument {key!r}; options: {', '.join(names)}")
    top, train = sections[""], sections["train"]
    if top.get("data") is not None:
        top["data"] = str(top["data"])
    optimizer = train.get("optimizer", config.train.optimizer)
    if "elbos" in top:
        elbo = top["elbos"]
        top["elbos"] = elbo_choice_to_types(elbo, optimizer) if elbo is None or isinstance(elbo, str) else tuple(elbo)
    elif optimizer != config.train.optimizer:
        top["elbos"] = elbo_choice_to_types(None, optimizer)  # the optimiser's default ELBO, as `pyro-spam run --optimizer` picks
    train["elbo"] = top.get("elbos", config.elbos)[0]  # as `pyro-spam run` builds it
    return dataclasses.replace(config, features=dataclasses.replace(config.features, **sections["features"]),
                               train=dataclasses.replace(config.train, **train), **top)


def run(out: str | Path, config: Any = None, *, overwrite: bool = False, progress: bool = False,
        **options: Any) -> dict[str, Any]:
    """``pyro-spam run`` as a function: fit, evaluate and write the run directory ``out``; returns its summary.

    Parameters
    ----------
    out : str or Path
        The run directory to write (created atomically: all files or none).
    config : RunConfig, mapping or None, default=None
        The run configuration: a :class:`pyro_spam.config.RunConfig`, a mapping as stored in a run's
        ``summary["meta"]["config"]`` (repeats that run: read with :meth:`RunConfig.from_saved`, so a
        setting added after the run was made takes the value the run used), or None for the defaults
        of ``pyro-spam run``.
    overwrite : bool, default=False
        Replace an existing run directory ``out``.
    progress : bool, default=False
        Show progress bars.
    **options
        Settings on top of ``config``, named as :class:`VariationalSpamClassifier`'s parameters:
        ``components``, ``variance_target``, ``features``, ``elbo`` (one name, ``"both"``, ``"all"``,
        ``"trace,meanfield"`` or a list: the fits to run), ``optimizer``, ``grad_tol``, ``guide``,
        ``rank``, ``engine``, ``particles``, ``batch_size``, ``steps``, ``lr``, ``stop``, ``window``,
        ``tol``, ``prior_scale``, ``seed``, ``num_draws``, …; also ``data`` (a course ``.npz``; default
        the shipped data) and ``test_size``. Changing ``optimizer`` without ``elbo`` picks that
        optimiser's default ELBO, as ``pyro-spam run --optimizer`` does.

    Returns
    -------
    dict
        The run's ``summary.json`` (see :mod:`pyro_spam.summary`): ``summary["fits"][elbo]`` holds each
        fit's guide (``loc``, ``scale``), stop reason and test scores. A fit stopped by Ctrl-C has
        ``stop_reason == "interrupted"``; ``pyro-spam run --resume OUT`` continues it.

    Raises
    ------
    pyro_spam.errors.PyroSpamError
        Invalid settings (``ConfigError``), unreadable data (``DataError``), an ``out`` that exists
        without ``overwrite``. ``TypeError`` for an unknown option.

    Example (L-BFGS: the exact optimum; the whole run takes ~20 s on the shipped data)

    >>> from pyro_spam import run
    >>> summary = run("runs/demo", optimizer="lbfgs", overwrite=True)
    >>> summary["fits"]["quad"]["stop_reason"]
    'converged'
    """
    cfg = _run_config(config, options)
    from .pipeline.run import run as run_pipeline

    return run_pipeline(cfg, Path(out), overwrite=overwrite, progress=progress).summary


def load_inference_data(path: str | Path) -> Any:
    """A run's ``posterior_<elbo>.nc`` as ArviZ InferenceData, with the ``log_likelihood`` group
    the file leaves out rebuilt from its draws and inputs (the numbers the run used, bit for bit).

    >>> import arviz as az
    >>> from pyro_spam import load_inference_data
    >>> idata = load_inference_data("runs/default/posterior_meanfield.nc")  # doctest: +SKIP
    >>> az.loo(idata).elpd_loo  # doctest: +SKIP
    -640.5...

    Raises :class:`~pyro_spam.errors.ModelFileError` for a missing or unreadable file.
    """
    from .inference_data import load_netcdf
    from .posterior import predict_draws

    return load_netcdf(Path(path), log_likelihood=lambda w, x, y: predict_draws(w, x, y).loglik)
