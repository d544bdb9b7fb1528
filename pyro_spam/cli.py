"""``pyro-spam`` command line: parses, calls :mod:`pyro_spam.pipeline`, prints. No logic of its own.

User errors print one line ``pyro-spam: error: …`` and exit with code 2. A run stopped by Ctrl-C
during training still writes its run directory (fits so far + checkpoint), prints the summary and
``pyro-spam: interrupted: … Continue with: pyro-spam run --resume DIR`` and exits with 130
(128 + SIGINT, as shells report an interrupted command); Ctrl-C anywhere else exits 130 without output.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .config import ELBO_TYPES, GUIDES, TrainConfig
from .errors import ConfigError, PyroSpamError

EXIT_USER_ERROR = 2
_TRAIN_DEFAULTS = TrainConfig()  # one source of defaults: the CLI shows the library's
EXIT_INTERRUPTED = 130
# Options that make up a run's configuration; with --resume they come from the run directory.
CONFIG_OPTIONS = ("optimizer", "grad_tol", "stop", "window", "tol", "guide", "rank",
                  "data", "components", "variance_target", "features", "test_size", "elbo", "engine",
                  "particles", "batch_size", "steps", "lr", "prior_scale", "seed", "draws")


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


def _elbos(text: str) -> str:
    from .config import elbo_choice_to_types

    try:
        elbo_choice_to_types(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and features")
    g.add_argument("--data", type=Path, default=None, help="course-format .npz (X, y, msg); default: the shipped MiniLM file")
    g.add_argument("--components", "-K", type=_components, default=5, help="PCA components K (1…15) or 'auto' (default 5)")
    g.add_argument("--variance-target", type=float, default=0.30, help="explained variance 'auto' aims for (default 0.30)")
    g.add_argument("--features", choices=("polynomial", "linear"), default="polynomial", help="terms x_j^j or x_j (default polynomial)")
    g.add_argument("--test-size", type=float, default=0.2, help="held-out fraction (default 0.2)")
    g = p.add_argument_group("training")
    g.add_argument("--elbo", type=_elbos, default=None, metavar="ELBO[,ELBO]",
                   help="trace (Trace_ELBO, MC KL), meanfield (TraceMeanField_ELBO, analytic KL), stl (sticking the landing: "
                        "path-derivative gradient), rqmc (scrambled-Sobol draws, analytic KL; -S a power of two), quad (exact "
                        "Gauss–Hermite quadrature ELBO, no Monte Carlo noise), iwae (importance-weighted bound: a different "
                        "optimum), score (score-function gradient with a baseline: for teaching, very noisy), both "
                        "(= trace,meanfield), all, or a comma-separated list (default: both with --optimizer adam, quad with lbfgs)")
    g.add_argument("--optimizer", choices=("adam", "lbfgs"), default=_TRAIN_DEFAULTS.optimizer,
                   help="adam (default): stochastic optimisation with the --stop rule; lbfgs: L-BFGS on the exact quad ELBO, "
                        "full batch, float64, converged at --grad-tol (the optimum in ~0.1 s)")
    g.add_argument("--grad-tol", type=float, default=_TRAIN_DEFAULTS.grad_tol,
                   help=f"--optimizer lbfgs only: largest gradient component at convergence (default {_TRAIN_DEFAULTS.grad_tol:g})")
    g.add_argument("--guide", choices=GUIDES, default=_TRAIN_DEFAULTS.guide,
                   help="the Gaussian family of q: meanfield (diagonal, the course's; default), fullrank (Cholesky factor), "
                        "lowrank (diagonal + rank --rank factor); fullrank/lowrank start at the Laplace approximation "
                        "and need --engine svi (lowrank also --optimizer adam)")
    g.add_argument("--rank", type=int, default=_TRAIN_DEFAULTS.rank,
                   help=f"--guide lowrank only: rank of the factor (default {_TRAIN_DEFAULTS.rank})")
    g.add_argument("--engine", choices=("svi", "manual"), default="svi", help="Pyro SVI or the plain-torch manual ELBO loop (default svi)")
    g.add_argument("--particles", "-S", type=int, default=_TRAIN_DEFAULTS.particles,
                   help=f"Monte Carlo particles per step (default {_TRAIN_DEFAULTS.particles})")
    g.add_argument("--batch-size", type=_batch, default=None, help="mini-batch size B or 'full' (default full: N≈4.5k is cheap)")
    g.add_argument("--steps", type=int, default=_TRAIN_DEFAULTS.max_steps,
                   help=f"step budget; training stops earlier at convergence (default {_TRAIN_DEFAULTS.max_steps})")
    g.add_argument("--lr", type=float, default=_TRAIN_DEFAULTS.lr, help=f"initial Adam learning rate (default {_TRAIN_DEFAULTS.lr:g})")
    g.add_argument("--prior-scale", type=float, default=1.0, help="sd of the N(0, s²) prior on each coefficient (default 1)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--stop", choices=("iterates", "plateau"), default=_TRAIN_DEFAULTS.stop,
                   help="convergence rule: 'iterates' (default) averages the stationary parameter iterates and stops when that "
                        "average is accurate; 'plateau' is v0.1's ELBO-window test, which gradient noise can fake")
    g.add_argument("--window", type=int, default=_TRAIN_DEFAULTS.window,
                   help=f"--stop plateau only: steps per convergence check (default {_TRAIN_DEFAULTS.window})")
    g.add_argument("--tol", type=float, default=_TRAIN_DEFAULTS.tol,
                   help=f"--stop plateau only: threshold in nats between successive windows (default {_TRAIN_DEFAULTS.tol:g})")
    g.add_argument("--draws", type=int, default=1000, help="guide draws for predictive, ArviZ and diagnostics (default 1000)")
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=None, help="run directory (default runs/run-<time>)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    g.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue an interrupted run with its saved configuration (written back to RUN_DIR unless --out)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    g.add_argument("--nuts", action="store_true",
                   help="then add the NUTS reference and the VI-vs-NUTS comparison (as `pyro-spam diagnose --nuts`; "
                        "10–30 s on the default data)")


class _Parser(argparse.ArgumentParser):
    """argparse with the package's error style: one line ``pyro-spam run: error: …`` naming where
    the help is, exit code 2 (argparse prints its whole usage block first)."""

    def error(self, message: str) -> NoReturn:
        prefix = "the following arguments are required: "
        if message.startswith(prefix):  # intermixed parsing lists optional positionals (nargs="*") too
            optional = {a.metavar or a.dest for a in self._actions if not a.option_strings and a.nargs in ("*", "?")}
            message = prefix + ", ".join(n for n in message[len(prefix):].split(", ") if n not in optional)
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def _unknown_message(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """``unrecognized arguments: …`` with the closest option of ``parser`` for a mistyped one."""
    import difflib

    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for arg in extras:
        if arg.startswith("--"):
            close = difflib.get_close_matches(arg.split("=", 1)[0], options, n=1, cutoff=0.6)
            if close:
                hints.append(close[0])
    return f"unrecognized arguments: {' '.join(extras)}" + (f" (did you mean {' / '.join(hints)}?)" if hints else "")


def _value_or_const(parser: argparse.ArgumentParser, args: Sequence[str]) -> list[str]:
    """``--sbc RUN_DIR`` means ``--sbc=both RUN_DIR``: an option whose value is optional and one of
    its choices takes the next word only when it is one of them (argparse would take any word)."""
    optional = {o: a for a in parser._actions if a.nargs == "?" and a.choices and a.option_strings for o in a.option_strings}
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        action = optional.get(arg)
        if action is not None and not out[i + 1].startswith("-") and out[i + 1] not in action.choices:
            out[i] = f"{arg}={action.const}"
    return out


class _IntermixedSubcommands(argparse._SubParsersAction):
    """Subcommands whose options may stand anywhere between their positionals.

    argparse's ``parse_intermixed_args`` refuses parsers with subcommands (their positional takes
    ``nargs=A...``), so the top level parses as usual and each subcommand's arguments are parsed
    with the subparser's ``parse_known_intermixed_args``: ``predict RUN --json "m1" "m2"`` collects
    both messages. Unknown arguments are reported by the subcommand, with the closest option it has.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        name, arg_strings = values[0], values[1:]
        subparser = self.choices.get(name)
        if subparser is None:  # argparse's own "invalid choice" error
            return super().__call__(parser, namespace, values, option_string)
        if self.dest is not argparse.SUPPRESS:
            setattr(namespace, self.dest, name)
        subnamespace, extras = subparser.parse_known_intermixed_args(_value_or_const(subparser, arg_strings), None)
        for key, value in vars(subnamespace).items():
            setattr(namespace, key, value)
        if extras:
            subparser.error(_unknown_message(subparser, extras))


def build_parser() -> argparse.ArgumentParser:
    """The ``pyro-spam`` parser; every subcommand accepts its options before, between and after its positionals."""
    parser = _Parser(prog="pyro-spam", description="Variational Bayesian SMS spam detection with Pyro.")
    parser.add_argument("--version", action="version", version=f"pyro-spam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, action=_IntermixedSubcommands)
    p_run = sub.add_parser("run", help="fit the model on the default data or a course .npz and write a run directory")
    _add_run_args(p_run)
    # Further subcommands register here: add_parser(...) plus an entry in COMMANDS below.
    _add_predict_parser(sub)
    _add_embed_parser(sub)
    _add_compare_parser(sub)
    _add_diagnose_parser(sub)
    return parser


def _run_config(args: argparse.Namespace):
    from .config import FeatureConfig, RunConfig, TrainConfig, elbo_choice_to_types

    elbos = elbo_choice_to_types(args.elbo, args.optimizer)
    return RunConfig(
        data=None if args.data is None else str(args.data),
        features=FeatureConfig(components=args.components, variance_target=args.variance_target,
                               kind=args.features, test_size=args.test_size),
        train=TrainConfig(elbo=elbos[0], optimizer=args.optimizer, grad_tol=args.grad_tol, engine=args.engine,
                          guide=args.guide, rank=args.rank,
                          particles=args.particles, batch_size=args.batch_size,
                          max_steps=args.steps, lr=args.lr, prior_scale=args.prior_scale, seed=args.seed,
                          window=args.window, tol=args.tol, stop=args.stop),
        elbos=elbos,
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


def _refuse_config_with_resume(args: argparse.Namespace) -> None:
    defaults = vars(build_parser().parse_args(["run"]))
    changed = [f"--{d.replace('_', '-')}" for d in CONFIG_OPTIONS if getattr(args, d) != defaults[d]]
    if changed:
        raise ConfigError(
            f"--resume continues a run with the configuration saved in {args.resume}; drop {', '.join(changed)} "
            "(or start a new run with --out)"
        )


def _ignored_options(args: argparse.Namespace) -> list[str]:
    """Options set away from their default that this run's other choices make it ignore."""
    d = _TRAIN_DEFAULTS
    rules = [
        (args.rank != d.rank and args.guide != "lowrank", "--rank", "--guide lowrank"),
        (args.grad_tol != d.grad_tol and args.optimizer != "lbfgs", "--grad-tol", "--optimizer lbfgs"),
        (args.window != d.window and args.stop != "plateau", "--window", "--stop plateau"),
        (args.tol != d.tol and args.stop != "plateau", "--tol", "--stop plateau"),
    ]
    return [f"{opt} applies to {needs} only: this run ignores it (its configuration records it)" for bad, opt, needs in rules if bad]


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline.run import resume_run, run

    if args.resume is not None:
        _refuse_config_with_resume(args)
        out = args.out or args.resume
        ctx = resume_run(args.resume, out, overwrite=args.overwrite, progress=not args.quiet)
    else:
        config = _run_config(args)
        for message in _ignored_options(args):
            print(f"pyro-spam: warning: {message}", file=sys.stderr)
        out = args.out or Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
        ctx = run(config, out, overwrite=args.overwrite, progress=not args.quiet)
    print(format_run_summary(ctx.summary, out))
    for kind, f in ctx.summary["fits"].items():
        if f["stop_reason"] == "budget":
            print(f"pyro-spam: warning: the {kind} fit did not converge within {f['steps']} steps (stop_reason 'budget'): "
                  "its guide is the best average so far, not a verified optimum; raise --steps, use more particles (-S) "
                  "or a larger --batch-size", file=sys.stderr)
        elif f["stop_reason"] == "stalled":
            print(f"pyro-spam: warning: the {kind} fit's L-BFGS line search stalled after {f['steps']} iterations with the "
                  f"largest gradient component at {f['convergence'].get('grad_max', float('nan')):.2g} (stop_reason 'stalled'): "
                  "not a verified optimum; try a larger --grad-tol", file=sys.stderr)
    stopped = [(k, f["steps"]) for k, f in ctx.summary["fits"].items() if f["stop_reason"] == "interrupted"]
    if stopped:
        kind, steps = stopped[0]
        print(
            f"pyro-spam: interrupted: the {kind} fit stopped after {steps} of {ctx.config.train.max_steps} steps; "
            f"{out} holds the fit so far and a checkpoint. Continue with: pyro-spam run --resume {out}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    from .pipeline.diagnose import diagnose_run_dir, format_diagnostics

    section = diagnose_run_dir(out, nuts=True, progress=not args.quiet) if args.nuts else ctx.summary.get("diagnostics")
    if section:
        print(format_diagnostics(section, out))
    print(f"report: {Path(out) / 'report.html'}")
    return 0


def _add_predict_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="score new messages with a run's saved model: p(spam), credible interval, verdict")
    p.add_argument("model", type=Path, help="run directory or model file (model_<elbo>.npz)")
    p.add_argument("messages", nargs="*", help="messages to score (options may go anywhere among them)")
    p.add_argument("--file", "-f", default=None, help="read messages from this file, one per line ('-' = stdin)")
    p.add_argument("--embeddings", type=Path, default=None, help=".npz of precomputed embeddings (key X, optional msg) instead of text")
    p.add_argument("--elbo", choices=ELBO_TYPES, default=None,
                   help="which model of a run directory (default meanfield, else the first fit)")
    p.add_argument("--level", type=float, default=0.9, help="credible interval level (default 0.9)")
    p.add_argument("--batch-size", type=int, default=64, help="messages per encoder batch (default 64)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import format_json, format_table, predict_messages, read_messages

    messages = list(args.messages)
    if args.file is not None:
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PyroSpamError(f"cannot read messages from {args.file}: {exc}") from None
        messages += read_messages(text)
    report = predict_messages(args.model, messages, embeddings=args.embeddings, elbo=args.elbo, level=args.level,
                              batch_size=args.batch_size, progress=not args.quiet)
    print(format_json(report) if args.json else format_table(report))
    return 0


def _add_embed_parser(sub: Any) -> None:
    p = sub.add_parser("embed", help="embed raw messages into a course-format .npz (mean-pooled Hugging Face encoder)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--collection", type=Path, help="raw SMS Spam Collection file (label<TAB>text per line) → course .npz for `run --data`")
    src.add_argument("--messages", type=Path, help="unlabelled text file, one message per line → .npz for `predict --embeddings`")
    p.add_argument("--encoder", default="minilm",
                   help="'minilm' (bundled all-MiniLM-L6-v2; the default), a local model folder or a cached HF name "
                        "(e.g. albert-xlarge-v2)")
    p.add_argument("--out", type=Path, required=True, help="output .npz")
    p.add_argument("--batch-size", type=int, default=64, help="messages per encoder batch (default 64)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="storage type of X (default float32)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def cmd_embed(args: argparse.Namespace) -> int:
    from .data import load_npz

    t0 = time.perf_counter()
    replaced = ", replacing the file that was there" if args.out.is_file() else ""
    if args.collection is not None:
        from .embed import embed_collection

        out = embed_collection(args.collection, args.out, args.encoder, dtype=args.dtype, batch_size=args.batch_size,
                               progress=not args.quiet,
                               build_command=f"pyro-spam embed --collection {args.collection} --encoder {args.encoder} --dtype {args.dtype}")
        ds = load_npz(out)
        print(f"wrote {out}: {ds.n} messages ({int(ds.y.sum())} spam) × {ds.dim} dims, embedder {ds.embedder}, "
              f"{args.dtype}, {time.perf_counter() - t0:.1f} s{replaced}; train on it with: pyro-spam run --data {out}")
    else:
        from .predict import embed_message_file

        out = embed_message_file(args.messages, args.out, args.encoder, dtype=args.dtype, batch_size=args.batch_size,
                                 progress=not args.quiet)
        print(f"wrote {out} ({args.dtype}, {time.perf_counter() - t0:.1f} s{replaced}); score it with: "
              f"pyro-spam predict RUN_DIR --embeddings {out}")
    return 0


def _add_compare_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="add prior-sensitivity and model-size sweeps and the ELBO-estimator comparison to a run directory")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a directory written by `pyro-spam run`")
    p.add_argument("--quick", action="store_true", help="smaller budgets (fewer K, particles and replicates): about a third of the time")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs",
                   help="how the sweeps refit: lbfgs (default) = the exact quadrature ELBO's optimum in ~0.1 s per fit; "
                        "adam = SVI with few particles and the run's stop rule (v0.2's path, ~10x slower)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="mini-batch size B of the estimator lab's Monte Carlo / subsampling split of the gradient variance "
                        "(default: the run's --batch-size; a full-batch run gets no split unless given)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def cmd_compare(args: argparse.Namespace) -> int:
    from .pipeline.compare import format_compare_summary, run_compare

    summary = run_compare(args.run_dir, quick=args.quick, optimizer=args.optimizer, batch_size=args.batch_size,
                          progress=not args.quiet)
    print(format_compare_summary(summary, args.run_dir))
    return 0


def _add_diagnose_parser(sub: Any) -> None:
    p = sub.add_parser("diagnose", help="add the NUTS reference (--nuts) or simulation-based calibration (--sbc) to a run "
                                        "directory; alone, recompute the ArviZ diagnostics `run` wrote (PSIS k̂, LOO, leaderboard)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a directory written by `pyro-spam run`")
    p.add_argument("--nuts", action="store_true",
                   help="run NUTS on the same model and features and compare it with VI (10–30 s on the default data; "
                        "the leaderboard against NUTS then takes k̂ from sets of 16,000 draws, ~2.4 s per approximation)")
    p.add_argument("--chains", type=int, default=2, help="NUTS chains, run one after another (default 2)")
    p.add_argument("--warmup", type=int, default=500, help="NUTS adaptation steps per chain (default 500)")
    p.add_argument("--nuts-draws", type=int, default=1000, help="NUTS draws kept per chain (default 1000)")
    p.add_argument("--seed", type=int, default=None, help="NUTS seed; chain c uses seed + c (default: the run's seed)")
    p.add_argument("--sbc", nargs="?", const="both", default=None, choices=("prior", "posterior", "both"),
                   help="simulation-based calibration of mean-field and linear-response VI: prior SBC (truth from the prior), "
                        "posterior SBC (truth from the observed data's posterior, refit on observed + replicated labels) or both "
                        "(the default when --sbc has no value); resumable: rerun the same command after Ctrl-C")
    p.add_argument("--sims", type=int, default=200, help="--sbc: simulated data sets per study (default 200)")
    p.add_argument("--sbc-draws", type=int, default=1000, help="--sbc: draws per approximation and simulation (default 1000)")
    p.add_argument("--sbc-optimizer", choices=("lbfgs", "adam"), default="lbfgs",
                   help="--sbc: refit each simulation exactly with L-BFGS (default, ~0.05 s) or with the default Adam SVI fit (~1 s)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def cmd_diagnose(args: argparse.Namespace) -> int:
    from .pipeline.diagnose import NutsOptions, SbcSettings, diagnose_run_dir, format_diagnostics

    options = NutsOptions(chains=args.chains, warmup=args.warmup, draws=args.nuts_draws, seed=args.seed)
    studies = () if args.sbc is None else (("prior", "posterior") if args.sbc == "both" else (args.sbc,))
    settings = SbcSettings(sims=args.sims, draws=args.sbc_draws, seed=args.seed, optimizer=args.sbc_optimizer) if studies else None
    try:
        section = diagnose_run_dir(args.run_dir, nuts=args.nuts, options=options, sbc=studies, sbc_settings=settings,
                                   progress=not args.quiet)
    except KeyboardInterrupt:
        if studies:
            print(f"pyro-spam: interrupted; SBC progress is saved in {args.run_dir}/sbc_*.npz: "
                  "rerun the same command to continue", file=sys.stderr)
            return EXIT_INTERRUPTED
        raise
    print(format_diagnostics(section, args.run_dir))
    print(f"report: {Path(args.run_dir) / 'report.html'}")
    return 0


# Subcommand name → handler(args) -> exit code. Handlers raise PyroSpamError for user errors.
COMMANDS = {"run": cmd_run, "predict": cmd_predict, "embed": cmd_embed, "compare": cmd_compare, "diagnose": cmd_diagnose}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyro-spam`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for level in (logging.WARNING, logging.ERROR):  # "pyro-spam: warning: …", as the CLI's own messages
        logging.addLevelName(level, logging.getLevelName(level).lower())
    logging.basicConfig(level=logging.WARNING, format="pyro-spam: %(levelname)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except PyroSpamError as exc:
        print(f"pyro-spam: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("pyro-spam: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `pyro-spam predict … | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
