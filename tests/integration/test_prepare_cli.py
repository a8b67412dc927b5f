from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from molgen.tokenizer import Vocabulary

REPO = Path(__file__).resolve().parent.parent.parent
DATA = REPO / "tests" / "data"

pytestmark = pytest.mark.integration


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("Error:")]


def test_prepare_end_to_end_in_a_real_process(tmp_path: Path) -> None:
    src = tmp_path / "chembl_export.csv"
    lines = (DATA / "moses_sample.smi").read_text().split()[:200]
    body = "".join(f'"CHEMBL{i}";"{s}";"name, with comma"\n' for i, s in enumerate(lines))
    src.write_text('"ChEMBL ID";"Smiles";"Name"\n' + body + '"X";"C1CC";"bad"\n', encoding="utf-8")
    out = tmp_path / "prepared"
    proc = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "prepare", str(src), "--out", str(out),
         "--valid-fraction", "20", "--test-fraction", "0.1", "--seed", "7"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Read 201 rows" in proc.stdout and "column 'Smiles'" in proc.stdout
    assert "unparseable 1" in proc.stdout and str(out) in proc.stdout
    for name in ("train.smi", "valid.smi", "test.smi", "rejected.csv", "vocab.json"):
        assert (out / name).is_file(), name
    assert len((out / "valid.smi").read_text().split()) == 20
    assert len((out / "test.smi").read_text().split()) == 20
    assert len((out / "train.smi").read_text().split()) == 160
    vocab = Vocabulary.from_dict(json.loads((out / "vocab.json").read_text()))
    assert len(vocab) > 10
    with open(out / "rejected.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [{"line": "202", "smiles": "C1CC", "reason": "unparseable", "detail": ""}]


def test_prepare_options_in_process(cli, tmp_path: Path) -> None:
    src = tmp_path / "mols.smi.gz"
    src.write_bytes(gzip.compress(b"N[C@@H](C)C(=O)O ala\n[Na+].[O-]C(=O)C benzoate\nCCO\n"))
    out = tmp_path / "o"
    r = cli("prepare", src, "--out", out, "--no-stereo", "--keep-fragments",
            "--valid-fraction", "0", "--augment", "1", "--jobs", "1")  # fmt: skip
    assert r.code == 0, r.stderr
    train = (out / "train.smi").read_text().split()
    assert train[:3] == ["CC(N)C(=O)O", "CC(=O)[O-].[Na+]", "CCO"]
    assert len(train) == 6 and "randomized" in r.stdout


def test_selfies_representation_in_process(cli, tmp_path: Path) -> None:
    src = tmp_path / "m.smi"
    src.write_text("CCO\nc1ccccc1\n")
    r = cli("prepare", src, "--out", tmp_path / "o", "--representation", "selfies",
            "--valid-fraction", "0")  # fmt: skip
    assert r.code == 0, r.stderr
    doc = json.loads((tmp_path / "o" / "vocab.json").read_text())
    assert doc["tokenizer"] == "selfies" and "[C]" in doc["tokens"]


def _bad_inputs(tmp: Path) -> dict[str, list[str]]:
    folder = tmp / "folder"
    folder.mkdir()
    files = {
        "latin.csv": "smiles,name\nCCO,caf\xe9\n".encode("latin-1"),
        "empty.csv": b"",
        "header.csv": b"smiles,name\n",
        "nocol.csv": b"id,name\n1,aspirin\n",
        "ambiguous.csv": b"canonical_smiles,isomeric_smiles\nCCO,CCO\n",
        "allbad.smi": b"C1CC\nXYZ\n",
        "ok.smi": b"CCO\n",
        "cut.csv.gz": gzip.compress(b"smiles\nCCO\n" * 50)[:30],
    }
    for name, content in files.items():
        (tmp / name).write_bytes(content)
    out = ["--out", str(tmp / "out")]
    return {
        "missing file": [str(tmp / "nope.csv"), *out],
        "directory": [str(folder), *out],
        "not utf-8": [str(tmp / "latin.csv"), *out],
        "empty file": [str(tmp / "empty.csv"), *out],
        "header only": [str(tmp / "header.csv"), *out],
        "no smiles column": [str(tmp / "nocol.csv"), *out],
        "ambiguous columns": [str(tmp / "ambiguous.csv"), *out],
        "zero valid molecules": [str(tmp / "allbad.smi"), *out],
        "damaged gzip": [str(tmp / "cut.csv.gz"), *out],
        "unknown column": [str(tmp / "ok.smi"), "--smiles-column", "structure", *out],
        "bad representation": [str(tmp / "ok.smi"), "--representation", "inchi", *out],
        "bad max length": [str(tmp / "ok.smi"), "--max-length", "0", *out],
        "bad sep": [str(tmp / "ok.smi"), "--sep", "::", *out],
        "out is a file": [str(tmp / "ok.smi"), "--out", str(tmp / "ok.smi")],
    }


BAD = [
    "missing file",
    "directory",
    "not utf-8",
    "empty file",
    "header only",
    "no smiles column",
    "ambiguous columns",
    "zero valid molecules",
    "damaged gzip",
    "unknown column",
    "bad representation",
    "bad max length",
    "bad sep",
    "out is a file",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_gives_one_error_line(cli, tmp_path: Path, case: str) -> None:
    r = cli("prepare", *_bad_inputs(tmp_path)[case])
    assert r.code != 0
    assert len(_error_lines(r.stderr)) == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_bad_input_in_a_real_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "prepare", str(tmp_path / "nope.smi")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"Error: data file {tmp_path / 'nope.smi'} does not exist; check the path"
    ]
