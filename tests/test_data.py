"""Offline datasets, partitions and the tokenization cache."""

import numpy as np
import pytest

from fsl_opt.errors import ConfigError
from fsl_opt.learning.data import load_ag_news, load_dataset, partition, subsample, tokenize_cached


def test_news4_is_ag_news_shaped():
    """4 topics, thousands of samples in each split, every class present."""
    ds = load_dataset("news4")
    assert ds.label_names == ("comp", "rec", "sci", "talk")
    assert len(ds.train_texts) > 9000 and len(ds.test_texts) > 6000
    assert set(np.unique(ds.train_labels)) == {0, 1, 2, 3}
    assert len(ds.train_texts) == len(ds.train_labels)


def test_reuters8_has_8_classes():
    """R8: eight topics."""
    ds = load_dataset("reuters8")
    assert ds.num_labels == 8 and "earn" in ds.label_names


def test_ag_news_folder(tmp_path):
    """The original AG News CSVs: class 1-4, title, description; no header."""
    for part in ("train", "test"):
        (tmp_path / f"{part}.csv").write_text('"3","Wall St.","Stocks rose."\n"2","Cup","A win."\n')
    ds = load_ag_news(str(tmp_path))
    assert ds.train_texts[0] == "Wall St. Stocks rose."
    assert ds.train_labels.tolist() == [2, 1]
    with pytest.raises(ConfigError, match=r"train\.csv: no such file"):
        load_ag_news(str(tmp_path / "nowhere"))


def test_unknown_dataset():
    """Unknown names list the known ones."""
    with pytest.raises(ConfigError, match="expected one of news4, reuters8, ag_news"):
        load_dataset("mnist")


def test_iid_partition_covers_everything_once():
    """IID: sizes differ by at most one, every index exactly once."""
    labels = np.repeat(np.arange(4), 25)
    parts = partition(labels, 3, np.random.default_rng(0))
    assert sorted(map(len, parts)) == [33, 33, 34]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(100))


def test_dirichlet_partition_skews_labels():
    """Small alpha: each device is dominated by few classes; still a partition."""
    labels = np.repeat(np.arange(4), 250)
    parts = partition(labels, 5, np.random.default_rng(0), alpha=0.1)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(1000))
    top_share = [np.bincount(labels[p], minlength=4).max() / len(p) for p in parts]
    assert np.mean(top_share) > 0.6  # IID would give about 0.25
    iid = partition(labels, 5, np.random.default_rng(0), alpha=1e4)
    assert np.mean([np.bincount(labels[p], minlength=4).max() / len(p) for p in iid]) < 0.35


def test_partition_errors():
    """More devices than samples, or a bad alpha, are refused."""
    with pytest.raises(ConfigError, match="devices = 5"):
        partition(np.arange(3), 5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="alpha"):
        partition(np.arange(30), 2, np.random.default_rng(0), alpha=0.0)


def test_subsample():
    """A subset of the requested size without repeats."""
    idx = subsample(100, 10, np.random.default_rng(0))
    assert len(np.unique(idx)) == 10
    assert len(subsample(100, None, np.random.default_rng(0))) == 100


def test_tokenize_cache_hits(tmp_path):
    """The second call reads the cache file instead of tokenizing."""
    from fsl_opt.learning.split_model import load_tokenizer

    tok = load_tokenizer("minilm")
    first = tokenize_cached(["hello world", "a b c"], tok, 16, tmp_path)
    files = list((tmp_path / "tokens").glob("*.pt"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = tokenize_cached(["hello world", "a b c"], tok, 16, tmp_path)
    assert files[0].stat().st_mtime_ns == mtime
    assert (again["input_ids"] == first["input_ids"]).all()
    assert first["input_ids"].shape == (2, 16)
    other = tokenize_cached(["hello world"], tok, 16, tmp_path)
    assert other["input_ids"].shape == (1, 16)
