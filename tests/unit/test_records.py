"""molgen.records: molecule files as a stream of (line, SMILES, kept columns) records."""

from __future__ import annotations

import gzip
import threading

import pytest

from molgen.errors import MolgenError
from molgen.readers import read_smiles_file
from molgen.records import MoleculeFile, Record, batched, prefetched
from tests.conftest import TEST_DATA


def _read(path, **kwargs):
    with MoleculeFile(path, **kwargs) as f:
        return f, list(f)


@pytest.mark.parametrize("name", ["edge_cases.smi", "tiny_train.csv", "moses_sample.smi"])
def test_same_smiles_and_lines_as_the_data_step(name):
    _, records = _read(TEST_DATA / name)
    values, lines = read_smiles_file(TEST_DATA / name)
    assert [r.smiles for r in records] == values
    assert [r.line for r in records] == lines


def test_smi_name_is_kept_and_header_detected(tmp_path):
    f, records = _read(TEST_DATA / "edge_cases.smi")
    assert f.columns == ["name"] and f.smiles_name is None
    assert records[0] == Record(1, "CC(=O)Oc1ccccc1C(=O)O", ("aspirin",))
    smi = tmp_path / "with_header.smi"
    smi.write_text("smiles name\nCCO ethanol two words\nc1ccccc1\n")
    f, records = _read(smi)
    assert f.columns == ["name"]
    assert records == [Record(2, "CCO", ("ethanol two words",)), Record(3, "c1ccccc1", ("",))]
    bare = tmp_path / "bare.smi"
    bare.write_text("CCO\nCCN\n")
    f, records = _read(bare)
    assert f.columns == [] and [r.columns for r in records] == [(), ()]


def test_csv_keeps_other_columns_or_the_named_ones(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('id,smiles,note\nA1,CCO,"x, y"\nA2,c1ccccc1,z\n')
    f, records = _read(path)
    assert f.smiles_name == "smiles" and f.columns == ["id", "note"]
    assert records == [Record(2, "CCO", ("A1", "x, y")), Record(3, "c1ccccc1", ("A2", "z"))]
    f, records = _read(path, keep_columns=["note"])
    assert f.columns == ["note"] and records[0].columns == ("x, y",)
    with pytest.raises(MolgenError, match="'nope' not found"):
        _read(path, keep_columns=["nope"])
    with pytest.raises(MolgenError, match="is the SMILES column"):
        _read(path, keep_columns=["smiles"])


def test_line_numbers_with_blank_lines_multiline_quotes_crlf_and_gzip(tmp_path):
    text = 'name;SMILES\r\n"two\r\nlines";CCO\r\n\r\nb;CCN\r\n\r\n\r\n'
    path = tmp_path / "m.csv.gz"
    path.write_bytes(gzip.compress(text.encode("utf-8-sig")))
    f, records = _read(path)
    assert f.columns == ["name"]
    # the blank line inside the file is an (empty) row; trailing blank lines are not rows
    assert records == [
        Record(2, "CCO", ("two\r\nlines",)),
        Record(4, "", ("",)),
        Record(5, "CCN", ("b",)),
    ]


def test_headerless_table_and_tsv(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("CCO,ethanol\nCCN,ethylamine\n")
    f, records = _read(path)
    assert f.smiles_name is None and f.columns == ["column_2"]
    assert records[0] == Record(1, "CCO", ("ethanol",))
    tsv = tmp_path / "m.tsv"
    tsv.write_text("smiles\tname\nCCO\tethanol\n")
    _, records = _read(tsv)
    assert records == [Record(2, "CCO", ("ethanol",))]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (b"smiles,name\n", "no rows"),
        (b"\xff\xfeC\x00", "UTF-16"),
        (b"PK\x03\x04rest", "zip archive"),
        (b"smiles\nCC\x00O\n", "NUL"),
        (b"smiles\nCC\xe9O\n", "not UTF-8"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(MolgenError, match=message):
        _read(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(MolgenError, match="does not exist"):
        _read(tmp_path / "nope.csv")
    with pytest.raises(MolgenError, match="folder"):
        _read(tmp_path)


def test_reading_is_a_stream(tmp_path):
    path = tmp_path / "big.smi"
    path.write_text("".join(f"{'C' * (1 + i % 30)} m{i}\n" for i in range(5000)))
    with MoleculeFile(path) as f:
        it = iter(f)
        first = next(it)
        assert first == Record(1, "C", ("m0",))
        assert f.bytes_read < f.size  # the rest is not read yet
        assert sum(1 for _ in it) == 4999
    assert [len(b) for b in batched(range(10), 4)] == [4, 4, 2]


# ---- prefetched --------------------------------------------------------------------------------
def test_prefetched_yields_every_item_in_order():
    assert list(prefetched(iter(range(100)), depth=3)) == list(range(100))
    assert list(prefetched([])) == []


def test_prefetched_raises_the_producers_error_at_its_item():
    def items():
        yield 1
        yield 2
        raise ValueError("bad row")

    got = []
    with pytest.raises(ValueError, match="bad row"):
        for item in prefetched(items()):
            got.append(item)
    assert got == [1, 2]


def test_prefetched_stops_the_producer_when_the_loop_ends_early():
    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    gen = prefetched(items(), depth=1)
    assert next(gen) == 0
    gen.close()  # what a break or an exception in the loop does
    assert len(produced) < 10  # only a few items ahead
    assert all(t.name != "molgen-prefetch" for t in threading.enumerate())
