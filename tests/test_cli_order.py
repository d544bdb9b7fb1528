"""Options may stand anywhere between a subcommand's positionals: before, between and after them
all parse to the same Namespace (issue 17). Also ``pyro-spam --version``."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from pyro_spam import __version__
from pyro_spam.cli import build_parser, main

from .conftest import make_dataset
from .faultinject import core_stages_only


def parse(*argv: str) -> Namespace:
    return build_parser().parse_args(list(argv))


def same_for_all(orderings: list[list[str]]) -> Namespace:
    """Every ordering parses to the first one's Namespace; returns it."""
    first = parse(*orderings[0])
    for argv in orderings[1:]:
        assert parse(*argv) == first, argv
    return first


def interleavings(command: str, positionals: list[str], options: list[list[str]]) -> list[list[str]]:
    """Every placement of every option (kept whole: flag plus value) before, between or after the
    positionals, the positionals keeping their order."""
    slots = len(positionals) + 1
    out = []
    for perm in itertools.permutations(options):
        for places in itertools.product(range(slots), repeat=len(perm)):
            argv: list[str] = []
            for slot in range(slots):
                for option, place in zip(perm, places):
                    if place == slot:
                        argv += option
                if slot < len(positionals):
                    argv.append(positionals[slot])
            out.append([command, *argv])
    return out


def test_predict_options_anywhere_collect_all_messages() -> None:
    """The reported failure `predict RUN --json "m1" "m2"` and its variants: every message is kept."""
    ns = same_for_all([
        ["predict", "RUN", "--json", "m1", "m2"],
        ["predict", "--json", "RUN", "m1", "m2"],
        ["predict", "RUN", "m1", "--json", "m2"],
        ["predict", "RUN", "m1", "m2", "--json"],
    ])
    assert ns.command == "predict" and ns.model == Path("RUN") and ns.messages == ["m1", "m2"] and ns.json
    one = same_for_all([["predict", "--json", "RUN", "m1"], ["predict", "RUN", "--json", "m1"], ["predict", "RUN", "m1", "--json"]])
    assert one.messages == ["m1"] and one.json


def test_predict_every_interleaving() -> None:
    """Options with and without values, in every order and position among MODEL and the messages."""
    orderings = interleavings("predict", ["RUN", "m1", "m2"], [["--json"], ["--level", "0.8"], ["-q"]])
    assert len(orderings) == 6 * 4**3
    ns = same_for_all(orderings)
    assert (ns.model, ns.messages, ns.json, ns.level, ns.quiet) == (Path("RUN"), ["m1", "m2"], True, 0.8, True)
    assert ns.elbo is None and ns.file is None and ns.batch_size == 64


def test_predict_without_messages_and_after_double_dash() -> None:
    """No messages (--file / --embeddings) parse with options first; `--` still ends the options."""
    ns = same_for_all([["predict", "--file", "-", "-q", "RUN"], ["predict", "RUN", "-q", "--file", "-"], ["predict", "-q", "RUN", "--file", "-"]])
    assert ns.messages == [] and ns.file == "-" and ns.quiet
    ns = parse("predict", "--json", "RUN", "m1", "--", "--level", "-x")
    assert ns.json and ns.level == 0.9 and ns.messages == ["m1", "--level", "-x"]


def test_compare_options_anywhere() -> None:
    ns = same_for_all([["compare", "--quick", "RUN"], ["compare", "RUN", "--quick"]])
    assert ns.quick and ns.run_dir == Path("RUN")
    ns = same_for_all(interleavings("compare", ["RUN"], [["--quick"], ["--optimizer", "adam"], ["--batch-size", "32"], ["-q"]]))
    assert (ns.quick, ns.optimizer, ns.batch_size, ns.quiet, ns.run_dir) == (True, "adam", 32, True, Path("RUN"))


def test_diagnose_options_anywhere() -> None:
    ns = same_for_all([["diagnose", "RUN", "--nuts", "--sims", "10"], ["diagnose", "--nuts", "RUN", "--sims", "10"],
                       ["diagnose", "--nuts", "--sims", "10", "RUN"], ["diagnose", "--sims", "10", "RUN", "--nuts"]])
    assert ns.nuts and ns.sims == 10 and ns.run_dir == Path("RUN")
    ns = same_for_all(interleavings("diagnose", ["RUN"], [["--nuts"], ["--sims", "10"], ["--sbc", "prior"], ["--chains", "3"]]))
    assert (ns.nuts, ns.sims, ns.sbc, ns.chains, ns.run_dir) == (True, 10, "prior", 3, Path("RUN"))
    # --sbc without a value ("both") works after RUN_DIR or before another option.
    ns = same_for_all([["diagnose", "RUN", "--sbc", "--nuts"], ["diagnose", "--sbc", "--nuts", "RUN"], ["diagnose", "--nuts", "RUN", "--sbc"]])
    assert ns.sbc == "both" and ns.nuts


def test_run_options_any_order() -> None:
    """`run` has no positionals: its options parse the same in every order, --resume included."""
    ns = same_for_all(interleavings("run", [], [["--out", "DIR"], ["-K", "3"], ["-q"], ["--elbo", "meanfield"]]))
    assert (ns.out, ns.components, ns.quiet, ns.elbo) == (Path("DIR"), 3, True, "meanfield")
    ns = same_for_all(interleavings("run", [], [["--resume", "OLD"], ["--out", "NEW"], ["--overwrite"]]))
    assert (ns.resume, ns.out, ns.overwrite) == (Path("OLD"), Path("NEW"), True)


def test_embed_options_any_order() -> None:
    """`embed` has no positionals either; its required options and exclusive group still apply."""
    ns = same_for_all(interleavings("embed", [], [["--collection", "raw.txt"], ["--out", "x.npz"], ["--dtype", "float16"]]))
    assert (ns.collection, ns.messages, ns.out, ns.dtype) == (Path("raw.txt"), None, Path("x.npz"), "float16")


def test_parsing_keeps_defaults_and_errors(capsys) -> None:
    """Defaults are the subcommand's; unknown options and extra positionals are still refused (exit 2)."""
    assert parse("run") == parse("run", "--seed", "0")
    for argv, message in [(["predict", "--json"], "the following arguments are required: model"),
                          (["compare", "RUN", "OTHER", "--quick"], "unrecognized arguments: OTHER"),
                          (["predict", "RUN", "m1", "--bogus", "m2"], "unrecognized arguments: --bogus"),
                          (["diagnose", "--sims", "x", "RUN"], "argument --sims: invalid int value: 'x'"),
                          (["frobnicate"], "invalid choice: 'frobnicate'")]:
        with pytest.raises(SystemExit) as exc:
            parse(*argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_version(capsys) -> None:
    """`pyro-spam --version` prints `pyro-spam <version>` and exits 0, in-process and as a program."""
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"pyro-spam {__version__}\n"
    done = subprocess.run([sys.executable, "-m", "pyro_spam.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"pyro-spam {__version__}"


def test_predict_end_to_end_with_options_first(tmp_path, monkeypatch, capsys) -> None:
    """A real tiny run (core stages only), then `predict --json -q --embeddings F RUN` with every
    option before the model: the same JSON as with the options after it."""
    core_stages_only(monkeypatch)
    ds = make_dataset(n=80, dim=6, seed=4)
    data, run_dir, emb = tmp_path / "data.npz", tmp_path / "run", tmp_path / "x.npz"
    np.savez(data, X=ds.X, y=ds.y, msg=ds.msg)
    np.savez(emb, X=ds.X[:3])
    assert main(["run", "-q", "--elbo", "meanfield", "-K", "2", "--steps", "20", "-S", "2", "--draws", "50",
                 "--out", str(run_dir), "--data", str(data)]) == 0
    capsys.readouterr()
    assert main(["predict", "--json", "-q", "--embeddings", str(emb), "--level", "0.8", str(run_dir)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["predict", str(run_dir), "--embeddings", str(emb), "--level", "0.8", "-q", "--json"]) == 0
    last = json.loads(capsys.readouterr().out)
    assert first == last
    assert first["level"] == 0.8 and [r["message"] for r in first["predictions"]] == ["row 0", "row 1", "row 2"]


def test_parse_errors_are_one_line_naming_the_subcommand_help(capsys) -> None:
    """argparse's own errors follow the package's style: one line, the subcommand's prog, where the help is."""
    for argv, prog, message in [(["run", "-K", "abc"], "pyro-spam run", "argument --components/-K"),
                                (["run", "--out"], "pyro-spam run", "expected one argument"),
                                (["diagnose"], "pyro-spam diagnose", "required: RUN_DIR"),
                                (["frobnicate"], "pyro-spam", "invalid choice")]:
        with pytest.raises(SystemExit) as exc:
            parse(*argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2
        assert err.count("\n") == 1 and err.startswith(f"{prog}: error: ") and message in err, err
        assert f"(see: {prog} --help)" in err


def test_a_mistyped_option_names_the_closest_one(capsys) -> None:
    for argv, hint in [(["run", "--stpes", "10"], "did you mean --steps?"),
                       (["predict", "RUN", "hi", "--jsn"], "did you mean --json?")]:
        with pytest.raises(SystemExit):
            parse(*argv)
        err = capsys.readouterr().err
        assert f"pyro-spam {argv[0]}: error: unrecognized arguments: " in err and hint in err, err
    with pytest.raises(SystemExit):
        parse("run", "--zzzzzz")
    assert "did you mean" not in capsys.readouterr().err


def test_predict_without_messages_is_not_told_they_are_required(capsys) -> None:
    """``messages`` is optional (--file and --embeddings are alternatives): only the model is required."""
    with pytest.raises(SystemExit):
        parse("predict")
    err = capsys.readouterr().err
    assert "required: model (see" in err and "messages" not in err


@pytest.mark.parametrize("argv", [["--sbc", "RUN"], ["RUN", "--sbc"], ["--sbc", "RUN", "--sims", "3"], ["--sims", "3", "--sbc", "RUN"]])
def test_sbc_without_a_value_before_the_run_directory(argv) -> None:
    """``--sbc`` takes a value only when it is one of its choices: ``diagnose --sbc RUN`` is ``--sbc both``."""
    ns = parse("diagnose", *argv)
    assert (ns.run_dir, ns.sbc) == (Path("RUN"), "both")
    assert parse("diagnose", "--sbc", "prior", "RUN").sbc == "prior"
    assert parse("diagnose", "RUN", "--sbc", "posterior").sbc == "posterior"


def test_options_a_run_ignores_are_named() -> None:
    from pyro_spam.cli import _ignored_options

    assert _ignored_options(parse("run")) == []
    assert _ignored_options(parse("run", "--guide", "lowrank", "--rank", "2", "--stop", "plateau", "--window", "30")) == []
    messages = _ignored_options(parse("run", "--rank", "2", "--grad-tol", "1e-6", "--window", "30", "--tol", "0.3"))
    assert [m.split()[0] for m in messages] == ["--rank", "--grad-tol", "--window", "--tol"]
    assert "--guide lowrank only" in messages[0] and "--optimizer lbfgs only" in messages[1]


def test_predict_checks_the_level_before_loading_anything(monkeypatch) -> None:
    import pyro_spam.predict as predict

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the level was checked")

    monkeypatch.setattr(predict, "load_model", no_load)
    monkeypatch.setattr(predict, "resolve_model_path", no_load)
    with pytest.raises(predict.ConfigError, match="level must be between 0 and 1"):
        predict.predict_messages("RUN", ["hi"], level=1.5)
