"""Users' own data in (CSV), adapters out in peft's format and back, a run drawn."""

import json
import subprocess
import sys

import numpy as np
import pytest

from fsl_opt.errors import ConfigError
from fsl_opt.learning.data import Columns, load_dataset


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


WORDS = {
    "positive": "good great fine lovely excellent happy superb bright",
    "negative": "bad awful poor sad terrible grim dull broken",
}


def write_reviews(path, n=240, seed=0):
    """A two-class CSV whose label (a string) shows in the words: learnable by a tiny model."""
    rng = np.random.default_rng(seed)
    lines = ["id,text,label"]
    for i in range(n):
        label = "positive" if rng.random() < 0.6 else "negative"
        words = rng.choice(WORDS[label].split(), size=6)
        lines.append(f'{i},"{" ".join(words)} item {i}",{label}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_single_file_is_split_by_a_seeded_fraction(tmp_path):
    """Labels as strings, the label set from the data, a seeded 20% test split."""
    path = write_reviews(tmp_path / "reviews.csv", n=100)
    ds = load_dataset(f"csv:{path}", Columns(test_fraction=0.2, seed=3))
    assert ds.label_names == ("negative", "positive")
    assert len(ds.test_texts) == 20 and len(ds.train_texts) == 80
    again = load_dataset(f"csv:{path}", Columns(test_fraction=0.2, seed=3))
    assert again.test_texts == ds.test_texts
    other = load_dataset(f"csv:{path}", Columns(test_fraction=0.2, seed=4))
    assert other.test_texts != ds.test_texts


def test_csv_folder_integer_labels_and_named_columns(tmp_path):
    """train.csv / test.csv with other column names; integer labels keep numeric order."""
    (tmp_path / "train.csv").write_text("body,y\na b,10\nc d,2\ne f,2\n")
    (tmp_path / "test.csv").write_text("body,y\ng h,10\n")
    ds = load_dataset(f"csv:{tmp_path}", Columns(text="body", label="y"))
    assert ds.label_names == ("2", "10")
    assert ds.train_labels.tolist() == [1, 0, 0] and ds.test_labels.tolist() == [1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,category\nx,a\ny,b\n", "no column 'label' .*the header has 'text', 'category'"),
        ("", "the file is empty"),
        ("text,label\n", "a header but no rows"),
        ("text,label\nx,a\ny,a\n", "every training row has the label 'a'"),
        (b"text,label\n\xff\xfe bad,a\n", "not UTF-8 text"),
    ],
    ids=["missing-column", "empty", "no-rows", "one-class", "not-utf8"],
)
def test_bad_csv_is_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_dataset(f"csv:{path}")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_test_labels_missing_from_train_are_named(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nx,a\ny,b\n")
    (tmp_path / "test.csv").write_text("text,label\nz,c\n")
    with pytest.raises(ConfigError, match=r"test\.csv: labels 'c' are not in the training data"):
        load_dataset(f"csv:{tmp_path}")


def _train(data, out, *flags):
    """`fsl-opt train` on the tiny model in a fresh process: its completed process."""
    args = ["train", "--model", "tiny", "--data", data, "--out", str(out), "--quiet", *flags]
    return subprocess.run(
        [sys.executable, "-m", "fsl_opt.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_bad_data_exits_2_with_one_line(tmp_path):
    """Through the command line: exit status 2, one line on stderr, no run folder."""
    path = tmp_path / "one.csv"
    path.write_text("text,label\nx,a\ny,a\nz,a\n")
    out = tmp_path / "run"
    proc = _train(f"csv:{path}", out)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "every training row" in proc.stderr


def test_csv_run_beats_majority_and_adapters_round_trip_through_peft(tmp_path, tiny_cfg):
    """A run on the test's own CSV learns (beats the majority class), exports its adapters
    in peft's format, and a fresh base model loaded with PeftModel.from_pretrained reaches
    the run's final accuracy; ``fsl-opt evaluate`` and ``fsl-opt plot`` work on the run."""
    from fsl_opt.federation.loop import run

    path = write_reviews(tmp_path / "reviews.csv")
    cfg = tiny_cfg.replace(
        data=f"csv:{path}",
        samples_per_device=48,
        test_samples=None,
        rounds=4,
        lr=1e-2,
        hidden_dtype="float32",
        out=str(tmp_path / "run"),
    )
    recs = run(cfg, progress=False)
    ds = load_dataset(f"csv:{path}")
    majority = max(np.bincount(ds.test_labels)) / len(ds.test_labels)
    final = recs[-1]["test_accuracy"]
    assert final > majority + 0.1, (final, majority)
    adapter = tmp_path / "run" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    # peft alone, no fsl-opt code: the same accuracy as the run's last evaluation.
    from fsl_opt.federation.evaluation import evaluate_run

    res = evaluate_run(tmp_path / "run")
    assert res["accuracy"] == pytest.approx(final, abs=1e-9)
    assert res["loss"] == pytest.approx(recs[-1]["test_loss"], rel=1e-4)
    proc = subprocess.run(
        [sys.executable, "-m", "fsl_opt.cli", "evaluate", str(tmp_path / "run"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(proc.stdout)["accuracy"] == pytest.approx(final, abs=1e-9)
    from fsl_opt.federation.plot import draw_runs

    png = draw_runs([tmp_path / "run"], tmp_path / "run.png")
    assert png.stat().st_size > 20_000


def test_peft_loads_the_export_without_fsl_opt(tmp_path, tiny_cfg):
    """The folder is plain peft: PeftModel.from_pretrained on a transformers base, with the
    LoRA weights of the run's global state (svd: rank 24 = 3 devices x 8), and stack's
    merged weights turned into an adapter computing the same logits."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModel

    from fsl_opt.federation.loop import run

    for agg in ("svd", "stack"):
        out = tmp_path / agg
        cfg = tiny_cfg.replace(
            aggregation=agg,
            objective="sum",
            rounds=2,
            hidden_dtype="float32",
            latency_factor=3.0,
            out=str(out),
        )
        recs = run(cfg, progress=False)
        config = json.loads((out / "adapter" / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA"
        base = AutoModel.from_pretrained(config["base_model_name_or_path"])
        model = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
        head = load_file(str(out / "adapter" / "head.safetensors"))
        assert set(head) == {"weight", "bias"}
        if agg == "svd":
            assert config["r"] == sum(recs[-1]["ranks"])
        ids = torch.randint(1000, 5000, (2, 16))
        with torch.no_grad():
            h = model(input_ids=ids).last_hidden_state.mean(1)
        assert torch.isfinite(h @ head["weight"].T + head["bias"]).all()


def test_tensorboard_holds_the_logs_numbers(tmp_path, tiny_cfg):
    """--tensorboard: every number of every record, at step = round, equal to the JSONL's."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fsl_opt.federation.loop import run

    recs = run(tiny_cfg.replace(rounds=2, tensorboard=True), progress=False)
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    got = {e.step: e.value for e in acc.Scalars("test_accuracy")}
    assert sorted(got) == [r["round"] for r in recs]
    for r in recs:
        assert got[r["round"]] == pytest.approx(r["test_accuracy"], rel=1e-6)
    lat = {e.step: e.value for e in acc.Scalars("latency_s/2")}
    assert lat[2] == pytest.approx(recs[2]["latency_s"][2], rel=1e-6)


def _csv(path, labels, extra_line=None):
    rows = ["text,label"] + [f"text number {i},{labels[i % len(labels)]}" for i in range(60)]
    if extra_line is not None:
        rows[5] = extra_line
    path.write_text("\n".join(rows) + "\n")
    return f"csv:{path}"


@pytest.mark.parametrize(
    ("labels", "said"),
    [
        (["a", " a", "b"], "' a' and 'a' as 'a' (spaces around a label are not part of it)"),
        (["1", "1.0", "2"], "'1' and '1.0' as '1' (one number written two ways is one label)"),
        (["1", "01", "2"], "'01' and '1' as '1'"),
    ],
)
def test_labels_read_as_one_class_are_named(tmp_path, labels, said):
    """Labels merged by the documented normalization are said, never merged silently."""
    from fsl_opt.errors import DataNote

    with pytest.warns(DataNote, match="labels read as one class") as notes:
        data = load_dataset(_csv(tmp_path / "d.csv", labels), Columns())
    assert said in str(notes[0].message)
    assert len(data.label_names) == 2


def test_labels_written_one_way_are_read_without_a_note(tmp_path, recwarn):
    load_dataset(_csv(tmp_path / "d.csv", ["a", "b"]), Columns())
    assert not [w for w in recwarn if "labels read as one class" in str(w.message)]


@pytest.mark.parametrize(
    ("line", "cells"), [("text 4,a,extra", 3), ("text 4", 1), ("text 4,a,b,c", 4)]
)
def test_ragged_rows_are_refused_with_their_line(tmp_path, line, cells):
    with pytest.raises(ConfigError, match=f"line 6: {cells} cells, the header has 2"):
        load_dataset(_csv(tmp_path / "d.csv", ["a", "b"], line), Columns())


def test_the_command_line_says_the_merge_in_one_line(tmp_path):
    data = _csv(tmp_path / "d.csv", ["a", " a", "b"])
    small = ["--rounds", "1", "--test-samples", "8", "--samples-per-device", "4"]
    proc = _train(data, tmp_path / "run", *small, "--max-length", "16", "--no-plot")
    assert proc.returncode == 0, proc.stderr
    notes = [x for x in proc.stderr.splitlines() if x.startswith("fsl-opt: note:")]
    assert len(notes) == 1 and "' a' and 'a' as 'a'" in notes[0]
