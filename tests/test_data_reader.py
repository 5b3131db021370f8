"""The one strict reader of users' data: what a careless file gets is one line that says
what is wrong and where, or the data read as meant."""

import os

import pytest

from fsl_opt.errors import ConfigError
from fsl_opt.learning.data import Columns, load_dataset

ROWS = "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(20))


def test_a_byte_order_mark_is_dropped(tmp_path):
    """A CSV saved by a spreadsheet with a BOM: the first column keeps its name."""
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefftext,label\n".encode() + ROWS.encode())
    data = load_dataset(f"csv:{path}")
    assert data.label_names == ("a", "b") and len(data.train_texts) == 16


@pytest.mark.parametrize(
    ("content", "columns", "message"),
    [
        ("text,label,text\n" + ROWS, Columns(), "names 'text' more than once"),
        ("text,label\n" + ROWS, Columns("label", "label"), "must be two columns"),
        (
            'text,label\nx,a\ny,b\n"open quote,a\nz,b\nw,a\n',
            Columns(),
            r"line 4 lacks .* runs on to line 6",
        ),
    ],
    ids=["duplicate-column", "same-column", "open-quote"],
)
def test_bad_files_are_named_where_they_go_wrong(tmp_path, content, columns, message):
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_dataset(f"csv:{path}", columns)


def test_numbers_written_two_ways_are_one_label(tmp_path):
    """Labels 1, 1.0 and 0: two classes, not three."""
    path = tmp_path / "nums.csv"
    rows = "".join(f"text {i},{['1', '1.0', '0'][i % 3]}\n" for i in range(30))
    path.write_text("text,label\n" + rows)
    assert load_dataset(f"csv:{path}").label_names == ("0", "1")


def test_a_device_or_pipe_is_not_a_file(tmp_path):
    """/dev/null or a FIFO is named as what it is, not 'no such file'."""
    with pytest.raises(ConfigError, match="not a regular file"):
        load_dataset("csv:/dev/null")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_dataset(f"csv:{fifo}")


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ("text,label\nhello,a\n", r"line 1 has 2 fields"),
        ('"class","title","description"\n', r"line 1: class 'class'"),
        ('"0","t","d"\n', r"class '0', expected 1, 2, 3 or 4"),
        ('"9","t","d"\n', r"class '9'"),
    ],
)
def test_ag_news_folders_are_checked_like_csv(tmp_path, train, message):
    """ag_news:DIR expects the original release; anything else is one line, no traceback."""
    (tmp_path / "train.csv").write_text(train)
    (tmp_path / "test.csv").write_text('"1","t","d"\n')
    with pytest.raises(ConfigError, match=message):
        load_dataset(f"ag_news:{tmp_path}")
