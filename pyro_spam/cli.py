"""``pyro-spam`` command line: parses, calls :mod:`pyro_spam.pipeline`, prints. No logic of its own.

User errors print one line ``pyro-spam: error: …`` and exit with code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import PyroSpamError

EXIT_USER_ERROR = 2


def _components(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer 1…15 or 'auto' (got {text!r})") from None


def _batch(text: str) -> int | None:
    if text == "full":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number or 'full' (got {text!r})") from None


def _add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and features")
    g.add_argument("--data", type=Path, default=None, help="course-format .npz (X, y, msg); default: the shipped MiniLM file")
    g.add_argument("--components", "-K", type=_components, default=5, help="PCA components K (1…15) or 'auto' (default 5)")
    g.add_argument("--variance-target", type=float, default=0.30, help="explained variance 'auto' aims for (default 0.30)")
    g.add_argument("--features", choices=("polynomial", "linear"), default="polynomial", help="terms x_j^j or x_j (default polynomial)")
    g.add_argument("--test-size", type=float, default=0.2, help="held-out fraction (default 0.2)")
    g = p.add_argument_group("training")
    g.add_argument("--elbo", choices=("trace", "meanfield", "both"), default="both", help="Trace_ELBO (MC KL), TraceMeanField_ELBO (analytic KL) or both (default)")
    g.add_argument("--engine", choices=("svi", "manual"), default="svi", help="Pyro SVI or the plain-torch manual ELBO loop (default svi)")
    g.add_argument("--particles", "-S", type=int, default=64, help="Monte Carlo particles per step (default 64)")
    g.add_argument("--batch-size", type=_batch, default=None, help="mini-batch size B or 'full' (default full: N≈4.5k is cheap)")
    g.add_argument("--steps", type=int, default=3000, help="step budget; training stops earlier at convergence (default 3000)")
    g.add_argument("--lr", type=float, default=0.05, help="initial Adam learning rate (default 0.05)")
    g.add_argument("--prior-scale", type=float, default=1.0, help="sd of the N(0, s²) prior on each coefficient (default 1)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--draws", type=int, default=2000, help="guide draws for predictive and diagnostics (default 2000)")
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=None, help="run directory (default runs/run-<time>)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-spam", description="Variational Bayesian SMS spam detection with Pyro.")
    parser.add_argument("--version", action="version", version=f"pyro-spam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="fit the model on the default data or a course .npz and write a run directory")
    _add_run_args(p_run)
    # Further subcommands register here: add_parser(...) plus an entry in COMMANDS below.
    return parser


def _run_config(args: argparse.Namespace):
    from .config import FeatureConfig, RunConfig, TrainConfig, elbo_choice_to_types

    return RunConfig(
        data=None if args.data is None else str(args.data),
        features=FeatureConfig(components=args.components, variance_target=args.variance_target,
                               kind=args.features, test_size=args.test_size),
        train=TrainConfig(engine=args.engine, particles=args.particles, batch_size=args.batch_size,
                          max_steps=args.steps, lr=args.lr, prior_scale=args.prior_scale, seed=args.seed),
        elbos=elbo_choice_to_types(args.elbo),
        num_draws=args.draws,
    )


def format_run_summary(summary: dict[str, Any], out: Path) -> str:
    """A short human summary of a run."""
    d = summary["data"]
    lines = [
        f"data: {d['source']} — {d['n']} messages ({d['n_spam']} spam), dim {d['dim']}; "
        f"train {d['n_train']} / test {d['n_test']}",
        f"features: {d['feature_kind']} terms of K={d['components']} PCA components, "
        f"explained variance {100 * d['explained_variance']:.1f}%",
    ]
    for kind, f in summary["fits"].items():
        t = f["test"]
        lines.append(
            f"{kind:>9}: {f['steps']} steps ({f['stop_reason']}, {f['seconds']:.1f} s) | ELBO train {f['elbo_train']:.1f} nats, "
            f"test {f['elbo_test_per_message']:.4f}/msg | lppd {t['lppd_per_message']:.4f}/msg "
            f"(intercept-only {t['intercept_only_lppd_per_message']:.4f}) | acc {t['accuracy']:.3f} "
            f"AUC {t['roc_auc']:.3f} Brier {t['brier']:.4f} ECE {t['ece']:.4f}"
        )
        names = f["coef_names"]
        coefs = ", ".join(f"{n}={m:+.2f}±{s:.2f}" for n, m, s in zip(names, f["loc"], f["scale"]))
        lines.append(f"{'':>11}{coefs}")
    lines.append(f"run directory: {out}")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run

    config = _run_config(args)
    out = args.out or Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    ctx = run(config, out, overwrite=args.overwrite, progress=not args.quiet)
    print(format_run_summary(ctx.summary, out))
    return 0


# Subcommand name → handler(args) -> exit code. Handlers raise PyroSpamError for user errors.
COMMANDS = {"run": cmd_run}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyro-spam`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="pyro-spam: %(levelname)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except PyroSpamError as exc:
        print(f"pyro-spam: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("pyro-spam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
