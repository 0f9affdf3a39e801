"""seqdeploy.io: the one home of the CSV / JSONL / Parquet readers."""

import subprocess
import sys

import pytest

from seqdeploy.io import BadInput, CsvRows, JsonlRows, resolve_inputs
from seqdeploy.io.text import NOT_JSON, NOT_OBJECT, NOT_UTF8


def test_csv_rows_carry_line_numbers_and_bytes(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes('\ufeffa,b\n1,"x\ny"\n\n3,4\n'.encode())
    reader = CsvRows(p)
    seen = [(reader.line, row) for row in reader]
    # the BOM is dropped; a quoted newline spans two lines; a blank line is an empty row
    assert seen == [(1, ["a", "b"]), (3, ["1", "x\ny"]), (4, []), (5, ["3", "4"])]
    assert reader.done == reader.total == p.stat().st_size


def test_csv_bad_byte_names_its_line(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b"a,b\n1,2\n\xe9,3\n")
    with pytest.raises(BadInput) as err:
        list(CsvRows(p))
    assert (err.value.kind, err.value.line) == (NOT_UTF8, 3)
    assert str(err.value).startswith(f"{p}: line 3 is not UTF-8 text")


def test_jsonl_rows_fail_or_keep_bad_lines(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"a": 1}\n\n[1, 2]\n{oops\n{"a": 2}\n')
    with pytest.raises(BadInput) as err:
        list(JsonlRows(p))
    assert (err.value.kind, err.value.line) == (NOT_OBJECT, 3)
    kept = list(JsonlRows(p, keep_errors=True))
    assert [n for n, _ in kept] == [1, 3, 4, 5]
    assert [getattr(o, "kind", None) for _, o in kept] == [None, NOT_OBJECT, NOT_JSON, None]
    assert kept[2][1].reason().startswith("line 4 is not valid JSON")
    q = tmp_path / "u.jsonl"
    q.write_text('[1, 2]\n"x"\n')
    assert [o for _, o in JsonlRows(q, objects=False)] == [[1, 2], "x"]


def test_resolve_inputs_directory_and_glob(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("b.csv", "a.parquet", "_SUCCESS", ".hidden.csv", "notes.txt"):
        (tmp_path / "d" / name).write_text("x")
    assert [f.path.rsplit("/", 1)[1] for f in resolve_inputs(tmp_path / "d")] == ["a.parquet", "b.csv"]
    assert [f.format for f in resolve_inputs(f"{tmp_path}/d/*.csv")] == ["csv"]


def test_importing_io_and_runtime_pulls_no_pyarrow():
    code = ("import sys, seqdeploy.io, seqdeploy.runtime; "
            "print(sorted(m for m in ('pyarrow', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
