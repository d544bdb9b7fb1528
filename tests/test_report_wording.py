"""The report's wording as a new user reads it: the Reproduce commands (the run and what was added
to it since), one correlation for LRVB, sentences that agree with themselves in every branch, the
leaderboard's reference row, notebook 03's leaderboard and the `compare` headline at the S the
report ranks at."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import nbformat
import numpy as np
import pytest

from pyro_spam import cli
from pyro_spam import report as R
from pyro_spam.io.rundir import write_json
from pyro_spam.pipeline.compare import format_compare_summary
from pyro_spam.pipeline.diagnose import format_diagnostics
from pyro_spam.report import diagnostics as D
from pyro_spam.report import estimators as E
from pyro_spam.report import guides as G
from pyro_spam.report import sections as S
from pyro_spam.report.document import markdown_table

from .test_report import _summary

ROOT = Path(__file__).resolve().parents[1]


def _text(blocks) -> str:
    """The prose and list items of a section's blocks."""
    out = []
    for b in blocks:
        if hasattr(b, "text"):
            out.append(b.text)
        elif hasattr(b, "items"):
            out.extend(b.items)
    return "\n".join(out)


def _commands(text: str, program: str = "pyro-spam") -> list[list[str]]:
    """Every ``pyro-spam …`` code span of ``text``, split as the shell would."""
    return [shlex.split(m) for m in re.findall(r"`(pyro-spam [^`]+)`", text) if m.startswith(program)]


def _parse(argv: list[str]):
    assert argv[0] == "pyro-spam"
    return cli.build_parser().parse_args(argv[1:])


# ---------------------------------------------------------------- 1. Reproduce


def test_reproduce_names_the_directory_honestly(tmp_path):
    """A run written to runs/default: the command's --out is the directory's name, and the text says the
    path it was given is not recorded (not "The run was made with", which claimed `--out default`)."""
    run_dir = tmp_path / "runs" / "default"
    run_dir.mkdir(parents=True)
    write_json(run_dir / "summary.json", _summary())
    md, _ = R.render_report(run_dir)
    text = md.read_text()
    section = text[text.index("## Reproduce"):]
    assert "The run was made with" not in section
    assert "summary.json does not record" in section and "`default` is this run directory's name" in section
    (run,) = _commands(section)
    assert run[:2] == ["pyro-spam", "run"] and run[-2:] == ["--out", "default"]
    assert "followed by" not in section  # nothing was added to this run


def _nuts(**over) -> dict:
    n = {"chains": 2, "warmup": 500, "draws_per_chain": 1000, "seed": 0, "full_mass": True, "divergences": 0, "rhat_max": 1.0}
    return n | over


def _sbc_info(reference: str, **settings) -> dict:
    st = {"sims": 200, "draws": 1000, "seed": 0, "levels": [0.5, 0.9], "max_redraws": 100, "grad_tol": 0.0001,
          "quad_nodes": 16, "optimizer": "lbfgs"} | settings
    return {"info": {"sims": st["sims"], "reference": reference, "settings": st, "approximations": []}}


NUTS_REF = "the run's NUTS draws (nuts.nc, 2×1000)"
LR_REF = "the linear-response Gaussian of the observed data (no NUTS draws in this run: `pyro-spam diagnose --nuts` adds them)"


def test_follow_up_commands_repeat_what_summary_records():
    """NUTS and SBC runs recorded in summary.json come back as `pyro-spam diagnose` commands with their
    non-default options; the CLI parses each to the recorded settings."""
    s = _summary()
    s["diagnostics"] = {"nuts": _nuts(chains=4, warmup=300, seed=7),
                        "sbc": _sbc_info("prior N(0, s² I)", sims=12, draws=200),
                        "posterior_sbc": _sbc_info(NUTS_REF, sims=12, draws=200)}
    cmds = [shlex.split(c.split("`")[1]) for c in S.follow_up_commands(s, "runs dir")]
    assert len(cmds) == 2
    nuts, sbc = (_parse(c) for c in cmds)
    assert cmds[0][2] == cmds[1][2] == "runs dir"
    assert (nuts.command, nuts.nuts, nuts.chains, nuts.warmup, nuts.nuts_draws, nuts.seed) == ("diagnose", True, 4, 300, 1000, 7)
    assert "--nuts-draws" not in cmds[0]  # defaults are left out
    assert (sbc.sbc, sbc.sims, sbc.sbc_draws, sbc.sbc_optimizer, sbc.seed, sbc.nuts) == ("both", 12, 200, "lbfgs", None, False)
    # one study, or two with different settings: one command each; --seed only when not the run's
    s["diagnostics"]["posterior_sbc"] = _sbc_info(NUTS_REF, sims=50, seed=3, optimizer="adam")
    cmds = [_parse(shlex.split(c.split("`")[1])) for c in S.follow_up_commands(s, "r")]
    assert [(c.sbc, c.sims, c.seed, c.sbc_optimizer) for c in cmds[1:]] == [("prior", 12, None, "lbfgs"), ("posterior", 50, 3, "adam")]
    # posterior SBC that used the linear-response reference ran before NUTS: listed first
    s["diagnostics"] = {"nuts": _nuts(), "posterior_sbc": _sbc_info(LR_REF)}
    assert [c.split("`")[1] for c in S.follow_up_commands(s, "r")] == ["pyro-spam diagnose r --sbc posterior",
                                                                        "pyro-spam diagnose r --nuts"]


def test_follow_up_commands_only_from_recorded_settings():
    """A NUTS part without its settings (older runs) gives no command; compare keeps its command; SBC
    settings no option sets are named."""
    s = _summary(with_compare=True)
    s["diagnostics"] = {"nuts": {"divergences": 0, "r_hat_max": 1.01},
                        "sbc": _sbc_info("prior N(0, s² I)", quad_nodes=32)}
    follow = S.follow_up_commands(s, "r")
    assert not any("--nuts" in c for c in follow)
    assert follow[0].startswith("`pyro-spam diagnose r --sbc prior`") and "`quad_nodes = 32`" in follow[0]
    assert follow[-1].startswith("`pyro-spam compare r --optimizer adam`")
    text = _text(S._reproduce_section(s, "r").blocks)
    assert "followed by:" in text and "`pyro-spam diagnose r --sbc prior`" in text


def test_diagnose_defaults_match_the_cli():
    """The defaults the Reproduce section leaves out are the CLI's and SbcSettings' own."""
    from pyro_spam.calibration import SbcSettings

    args = cli.build_parser().parse_args(["diagnose", "r"])
    dests = {"--chains": "chains", "--warmup": "warmup", "--nuts-draws": "nuts_draws", "--sims": "sims",
             "--sbc-draws": "sbc_draws", "--sbc-optimizer": "sbc_optimizer"}
    assert {flag: getattr(args, dest) for flag, dest in dests.items()} == S._DIAGNOSE_DEFAULTS
    defaults = SbcSettings()
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in
            ((k, getattr(defaults, k)) for k in S._SBC_UNFLAGGED)} == S._SBC_UNFLAGGED


# ---------------------------------------------------------------- 2. one LRVB correlation


def _lr(cov: np.ndarray, sampled_rho: float) -> dict:
    sd = np.sqrt(np.diag(cov))
    return {"fitted_from": "meanfield", "coef_names": ["w0 (bias)", "x1", "x2^2"], "loc": [0.0, 0.0, 0.0],
            "scale": sd.tolist(), "meanfield_scale": (0.5 * sd).tolist(), "cov": cov.tolist(),
            "strongest_correlation": {"pair": ["w0 (bias)", "x1"], "rho": sampled_rho}}


def test_lr_correlation_comes_from_the_covariance():
    """The linear-response paragraph quotes ρ of the LRVB covariance (what the leaderboard shows), not
    the estimate from draws that summary.json also holds; the pair is the covariance's most correlated."""
    cov = np.array([[0.02, -0.0117, 0.001], [-0.0117, 0.0114, 0.0], [0.001, 0.0, 0.019]])
    rho = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
    assert f"{rho:.2f}" == "-0.77"
    text = D._lr_section({"linear_response": _lr(cov, -0.7526)}).blocks[0].text
    assert "(w0 (bias) and x1: ρ = -0.77)" in text and "-0.75" not in text
    swapped = cov[[2, 0, 1]][:, [2, 0, 1]]  # the pair is found in the covariance, wherever it is
    lr = _lr(swapped, -0.7526) | {"coef_names": ["x2^2", "w0 (bias)", "x1"]}
    assert "(w0 (bias) and x1: ρ = -0.77)" in D._lr_section({"linear_response": lr}).blocks[0].text
    older = _lr(cov, -0.7526)
    del older["cov"]  # an older summary: the recorded estimate is all there is
    assert "ρ = -0.75" in D._lr_section({"linear_response": older}).blocks[0].text


# ---------------------------------------------------------------- 3. wording


@pytest.mark.parametrize("vi_ok,map_ok", [(True, True), (True, False), (False, True), (False, False)])
def test_calibration_verdicts_are_said_once(vi_ok, map_ok):
    """Each branch of the calibration sentence names each verdict once (it used to say "within what
    label noise alone produces" twice); the write-up does not call a miscalibrated MAP well calibrated."""
    s = _summary()
    models = s["evaluation"]["calibration"]["models"]
    for m, ok in ((models["vi"], vi_ok), (models["sklearn"], map_ok)):
        m["ece"] = m["ece_null"]["q95"] * (0.5 if ok else 3.0)
    text = S._calibration_block(s["evaluation"], s).blocks[0].text
    sentence = next(p for p in text.split(". ") if "from the randomness of" in p)
    for phrase in ("within what label noise alone produces", "above what label noise explains"):
        assert sentence.count(phrase) <= 1, sentence
    if vi_ok == map_ok:
        assert "both the posterior predictive and the MAP are" in sentence
    else:
        assert "the posterior predictive is" in sentence and "while the MAP is" in sentence
    ins = S.writeup(s).split("**Insights.**")[1]
    assert ("and so is the MAP logistic regression's" in ins) == (vi_ok == map_ok)
    assert "as well calibrated" not in ins


def _runs_est(budget: list[str]) -> dict:
    runs = {k: {"steps": 400 if k in budget else 100, "seconds": 1.0, "stop_reason": "budget" if k in budget else "converged",
                "reached": True, "dist_loc_sd": 0.01} for k in ("trace", "quad", "iwae")}
    return {"runs": runs, "run_config": {"lr": 0.1, "particles": 16, "max_steps": 400, "seed": 0, "stop": "iterates"}}


def test_step_budget_sentence_agrees_in_number():
    """One estimator out of steps: "its time is a lower bound"; several: "their times are lower bounds"."""
    one = E._runs(_runs_est(["iwae"]))
    assert "`iwae` used the whole step budget (its time is a lower bound)" in one and "their" not in one
    two = E._runs(_runs_est(["iwae", "trace"]))
    assert "`trace` and `iwae` used the whole step budget (their times are lower bounds)" in two


def test_monte_carlo_dominated_sentence_agrees_in_number():
    """The mini-batch split names one Monte Carlo-dominated estimator in the singular."""
    rows = [{"estimator": k, "S": 64, "subsampling_share_loc": share, "subsampling_share_log_scale": 0.1, "total_loc": 1.0}
            for k, share in (("trace", 0.8), ("stl", 0.7), ("score", 0.1), ("iwae", 0.2))]
    est = {"S": [64], "minibatch_split": {"batch_size": 30, "n": 300, "reps": 8, "rows": rows[:3]}}
    assert "`score` stays Monte Carlo-dominated: its own noise" in E._split(est)
    est["minibatch_split"]["rows"] = rows
    assert "`score` and `iwae` stay Monte Carlo-dominated: their own noise" in E._split(est)


def _row(name: str, key: str, **over) -> dict:
    r = {"name": name, "key": key, "kind": "fit", "gaussian": True, "elbo": -10.0, "khat": 0.5, "khat_median": 0.52,
         "khat_range": [0.40, 0.74], "khat_reading": "usable", "sd": [0.1, 0.2], "sd_ratio": [0.9, 1.0],
         "w1_in_sd": [0.1, 0.05], "sd_ratio_min": 0.9, "sd_ratio_max": 1.0, "mean_shift_max_in_sd": 0.05,
         "w1_max_in_sd": 0.1, "pair_rho": -0.77, "lppd_test_per_message": -0.14, "seconds": 1.0}
    return r | over


def _board(nuts: bool = True) -> dict:
    rows = [_row("mean-field VI", "fit:meanfield", sd_ratio=[0.5, 0.9], pair_rho=0.0),
            _row("linear response (LRVB)", "lrvb", kind="correction"),
            _row("mean-field + PSIS resampling", "psis", kind="correction", gaussian=False, elbo=None)]
    if nuts:
        rows.append({"name": "NUTS", "key": "nuts", "kind": "mcmc", "gaussian": False, "elbo": None, "khat": None,
                     "khat_median": None, "khat_range": None, "khat_reading": None, "pair_rho": -0.78,
                     "lppd_test_per_message": -0.14, "seconds": 12.0})
    return {"rows": rows, "coef_names": ["w0", "x1"], "pair": [0, 1], "pair_names": ["w0", "x1"], "repeats": 10,
            "n_draws": 1000, "primary": "meanfield", "reference": "nuts" if nuts else None, "w1_floor_in_sd": 0.05,
            "pair_source": "NUTS" if nuts else "linear response (LRVB)"}


@pytest.mark.parametrize("nuts", [False, True])
def test_leaderboard_count_matches_its_rows(nuts):
    """The leaderboard's opening sentence counts what the table shows: the NUTS row is named as the
    reference, not left out of a count of the rows."""
    lb = _board(nuts)
    table = next(b for b in G.guides_section({"guides": lb}).blocks if hasattr(b, "rows"))
    intro = G.guides_text(lb)[0]
    n = int(intro.split()[0])
    assert n + nuts == len(table.rows) == len(lb["rows"])
    assert ("and the NUTS reference they are judged against" in intro) == nuts


def test_leaderboard_flags_a_khat_whose_two_estimates_straddle_a_threshold():
    """Median 0.52 of one-set k̂s but 0.36 pooled: the text calls it borderline and the table shows the pooled
    column; rows whose two estimates agree about 0.5 and 0.7 are not flagged; older runs (no pooled) have neither."""
    lb = _board(True)
    lb["rows"][1].update(khat_pooled=0.36, khat_pooled_draws=10000)
    lb["rows"][0].update(khat_median=0.76, khat_pooled=0.93, khat_pooled_draws=10000)
    text = " ".join(G.guides_text(lb))
    assert "Borderline: linear response (LRVB) reads 0.52 as a median of one-set estimates but 0.36 from all 10,000 draws" in text
    assert "mean-field VI reads" not in text and "and k̂ of all those draws pooled" in text
    table = next(b for b in G.guides_section({"guides": lb}).blocks if hasattr(b, "rows"))
    col = table.header.index("k̂, 10,000 draws pooled")
    assert [row[col] for row in table.rows[:2]] == ["0.93", "0.36"] and table.header[col + 1] == "reading"
    old = _board(True)
    assert "Borderline" not in " ".join(G.guides_text(old))
    assert not any("pooled" in h for h in next(b for b in G.guides_section({"guides": old}).blocks if hasattr(b, "rows")).header)


def test_writeup_describes_only_what_was_computed():
    """Without `compare` the write-up does not describe refits or estimator variance as done; it says what
    is missing, in agreement (one missing part: singular)."""
    s = _summary()
    impl = S.writeup(s).split("\n\n")[1]
    assert "Refits, warm-started" not in impl and "measure estimator variance" not in impl
    assert ("The prior-scale and model-size sweeps and the ELBO-estimator comparison are not computed yet "
            "(`pyro-spam compare` adds them).") in impl
    full = _summary(with_compare=True)
    impl = S.writeup(full).split("\n\n")[1]
    assert "Refits, warm-started, vary the prior scale and the model size; repeated ELBO evaluations" in impl
    assert "not computed yet" not in impl
    del full["estimators"]
    impl = S.writeup(full).split("\n\n")[1]
    assert "Refits, warm-started" in impl and "measure estimator variance" not in impl
    assert "The ELBO-estimator comparison is not computed yet (`pyro-spam compare` adds it)." in impl


# ---------------------------------------------------------------- 4. the reference row


def test_nuts_row_has_no_na_cells():
    """The NUTS row says "reference" and "—" where a column does not apply, instead of n/a cells; the
    Markdown table stays rectangular; the terminal line of `diagnose --nuts` omits ELBO and k̂ for it."""
    lb = _board(True)
    table = next(b for b in G.guides_section({"guides": lb}).blocks if hasattr(b, "rows"))
    nuts = table.rows[-1]
    assert nuts[0] == "NUTS" and "n/a" not in nuts and "reference" in nuts and G.NA in nuts
    assert table.rows[2][2] == G.NA  # PSIS resampling has no exact ELBO either
    lines = markdown_table(table).splitlines()[2:]  # after the caption
    assert len({len(re.findall(r"(?<!\\)\|", ln)) for ln in lines if ln.startswith("|")}) == 1
    out = format_diagnostics({"per_fit": {}, "guides": lb})
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("NUTS:"))
    assert "n/a" not in line and "reference" in line and "ρ -0.78" in line and "12.00 s" in line
    psis = next(ln for ln in out.splitlines() if "PSIS resampling:" in ln)
    assert "ELBO —" in psis and "n/a" not in psis


# ---------------------------------------------------------------- 5. notebook 03


def test_notebook_03_leaderboard_shows_ranges_and_blanks():
    """The committed notebook 03 shows the leaderboard's k̂ range as "lo–hi" and blanks for the reference
    row, not raw lists, NaN or None."""
    nb = nbformat.read(ROOT / "notebooks" / "03_arviz_diagnostics.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "board = pd.DataFrame" in c.source)
    (out,) = [o for o in cell.outputs if o.output_type == "execute_result"]
    text = out.data["text/plain"]
    assert "NUTS" in text and re.search(r"\d\.\d\d–\d\.\d\d", text), text
    for bad in ("NaN", "None", "[0.", "nan"):
        assert bad not in text, bad


# ---------------------------------------------------------------- 6. compare headline


def test_compare_headline_quotes_the_ranking_S():
    """`pyro-spam compare` prints the variance ratios at the S the report ranks at (64 here), naming it."""
    s = _summary(with_compare=True)
    est = s["estimators"]
    out = format_compare_summary(s, "runs/x")
    r64 = next(r for r in est["ratios"] if (r["guide"], r["estimator"], r["S"]) == ("fitted", "rqmc", 64))
    assert f"gradient variance rqmc / trace at S=64, fitted guide: loc {r64['loc_ratio']:.3g} " in out
    assert "S=16" not in out
    assert f"at S = {max(E.ranking_S(est))}" in E.estimator_headline(est)
    # without S = 64: the largest S the ranking uses, as in the report
    small = copy.deepcopy(s)
    small["estimators"]["S"] = [1, 16]
    small["estimators"]["ratios"] = [r for r in est["ratios"] if r["S"] != 64]
    assert "at S=16" in format_compare_summary(small, "runs/x") and "S=64" not in format_compare_summary(small, "runs/x")


def test_diagnostics_md_nuts_row_has_no_na_cells() -> None:
    """diagnostics.md's leaderboard: the NUTS reference row says what it is instead of n/a cells."""
    from pyro_spam.pipeline.diagnose import _guides_table, _markdown

    row = {"name": "mean-field VI", "key": "fit:meanfield", "elbo": -663.6, "khat_median": 0.7, "khat_range": [0.4, 1.0],
           "sd_ratio_min": 0.5, "sd_ratio_max": 1.0, "mean_shift_max_in_sd": 0.1, "w1_max_in_sd": 0.2,
           "pair_rho": 0.0, "lppd_test_per_message": -0.14, "seconds": 0.7}
    nuts = {"name": "NUTS", "key": "nuts", "pair_rho": -0.78, "lppd_test_per_message": -0.14, "seconds": 12.0}
    header, rows = _guides_table({"reference": "nuts", "rows": [row, nuts]})
    assert all(len(r) == len(header) for r in rows)
    md = _markdown(header, rows)
    nuts_line = next(line for line in md.splitlines() if line.startswith("| NUTS"))
    assert "n/a" not in nuts_line and "reference" in nuts_line and "-0.78" in nuts_line
