"""Quiet encoder loading (no transformers progress bar) and the one-line repr of a loaded model file."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pyro_spam import embed
from pyro_spam.estimator import VariationalSpamClassifier, load_model, save_model

from .conftest import make_dataset

# -- --quiet: loading the encoder draws no transformers progress bar -----------------------------


@pytest.fixture
def hf_logging() -> Any:
    """transformers' logging module with its progress bars enabled; the original state is restored."""
    pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    yield hf_logging
    if before:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()


@pytest.fixture
def fake_loading(monkeypatch: pytest.MonkeyPatch, hf_logging: Any) -> list[bool]:
    """Replace AutoTokenizer/AutoModel.from_pretrained with fakes that, like transformers 5, draw a
    ``Loading weights`` tqdm bar on stderr when (and only when) transformers' progress bars are on.

    Returns the list of "bars enabled?" states seen by the model loader.
    """
    import transformers
    from tqdm import tqdm

    seen: list[bool] = []

    def fake_tokenizer(source: str, **kw: Any) -> Any:
        assert kw.get("local_files_only") is True
        return SimpleNamespace(model_max_length=128)

    def fake_model(source: str, **kw: Any) -> Any:
        assert kw.get("local_files_only") is True
        enabled = hf_logging.is_progress_bar_enabled()
        seen.append(enabled)
        if enabled:
            for _ in tqdm(range(103), desc="Loading weights", file=sys.stderr):
                pass
        config = SimpleNamespace(hidden_size=8, max_position_embeddings=64)
        return SimpleNamespace(config=config, to=lambda device: None, eval=lambda: None)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tokenizer)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", fake_model)
    return seen


def test_fake_loader_draws_a_bar_when_progress_is_wanted(
    fake_loading: list[bool], tmp_path: Path, capsys: pytest.CaptureFixture[str], hf_logging: Any
) -> None:
    """Control: with progress=True the (fake) loading bar is drawn, so the quiet test has teeth."""
    enc = embed.load_encoder(str(tmp_path), progress=True)
    assert enc.dim == 8 and fake_loading == [True]
    assert "Loading weights" in capsys.readouterr().err
    assert hf_logging.is_progress_bar_enabled()


def test_quiet_load_prints_nothing_and_restores_the_setting(
    fake_loading: list[bool], tmp_path: Path, capsys: pytest.CaptureFixture[str], hf_logging: Any
) -> None:
    """The default (how ``pyro-spam predict`` loads the model's encoder) and progress=False draw no bar
    on stderr; transformers' bars are on again afterwards."""
    embed.load_encoder(str(tmp_path))
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
    assert hf_logging.is_progress_bar_enabled(), "the global transformers setting must be restored"
    embed.load_encoder(str(tmp_path), progress=False)
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
    assert fake_loading == [False, False]
    assert hf_logging.is_progress_bar_enabled(), "the global transformers setting must be restored"


def test_quiet_embed_texts_loads_the_encoder_quietly(
    fake_loading: list[bool], tmp_path: Path, capsys: pytest.CaptureFixture[str], hf_logging: Any
) -> None:
    """embed_texts(..., progress=False) loading the encoder by name is silent too."""
    pytest.importorskip("torch")
    X = embed.embed_texts([], str(tmp_path), progress=False)
    assert X.shape == (0, 8)
    assert capsys.readouterr().err == ""
    assert fake_loading == [False] and hf_logging.is_progress_bar_enabled()


def test_quiet_load_keeps_bars_off_if_they_were_off(
    fake_loading: list[bool], tmp_path: Path, capsys: pytest.CaptureFixture[str], hf_logging: Any
) -> None:
    """A caller who disabled transformers' bars keeps them disabled (nothing re-enables them)."""
    hf_logging.disable_progress_bar()
    embed.load_encoder(str(tmp_path), progress=False)
    assert capsys.readouterr().err == ""
    assert not hf_logging.is_progress_bar_enabled()


def test_setting_restored_when_loading_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hf_logging: Any
) -> None:
    """A failed load (OSError → DataError) still restores the global progress-bar setting."""
    import transformers

    from pyro_spam.errors import DataError

    def broken(source: str, **kw: Any) -> Any:
        assert not hf_logging.is_progress_bar_enabled()
        raise OSError("no weights here")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", broken)
    with pytest.raises(DataError, match="offline"):
        embed.load_encoder(str(tmp_path), progress=False)
    assert hf_logging.is_progress_bar_enabled()


def test_real_tiny_encoder_loads_silently(tmp_path: Path, capsys: pytest.CaptureFixture[str], hf_logging: Any) -> None:
    """End to end with a real (tiny, random, saved locally) BERT: loading it quietly prints nothing."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "free", "win", "ok"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizer.from_pretrained(str(tmp_path))
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )
    transformers.BertModel(config).save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    capsys.readouterr()
    enc = embed.load_encoder(str(tmp_path))
    assert enc.dim == 16
    assert capsys.readouterr().err == ""
    assert hf_logging.is_progress_bar_enabled()


# -- repr(SavedModel) ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted() -> VariationalSpamClassifier:
    ds = make_dataset(n=200, dim=6, seed=3)
    return VariationalSpamClassifier(components=3, steps=30, particles=2, num_draws=50, seed=1).fit(ds.X, ds.y)


def test_saved_model_repr_is_one_short_line(tmp_path: Path, fitted: VariationalSpamClassifier) -> None:
    """print(load_model(...)) shows the key facts on one line, not the whole JSON header."""
    path = save_model(
        fitted, tmp_path / "model_meanfield.npz",
        embedding={"embedder": "sentence-transformers/all-MiniLM-L6-v2", "max_length": 256, "normalize": True},
        training_data={"source": "default", "n": 5574, "dim": 6, "n_train": 4459},
    )
    saved = load_model(path)
    text = repr(saved)
    assert str(saved) == text
    assert "\n" not in text and len(text) < 200, text
    assert text.startswith("SavedModel(") and text.endswith(")")
    assert "model_meanfield.npz" in text
    assert f"elbo={saved.elbo}" in text and f"guide={saved.guide}" in text
    assert "components=3" in text and "coefficients=4" in text and "dim=6" in text
    assert "n_train=4459" in text
    assert "embedder=sentence-transformers/all-MiniLM-L6-v2" in text
    assert "header" not in text and "sha256" not in text and "w0 (bias)" not in text


def test_saved_model_repr_without_embedder_or_training_facts(tmp_path: Path, fitted: VariationalSpamClassifier) -> None:
    """A file saved by est.save (no embedder, no training facts) still gets a sensible one-liner."""
    saved = load_model(fitted.save(tmp_path / "plain.npz"))
    text = repr(saved)
    assert "\n" not in text and len(text) < 200, text
    assert "embedder=unknown" in text and "n_train" not in text and "coefficients=4" in text
