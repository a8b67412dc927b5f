from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

import molgen.data as data_mod
from molgen.data import (
    DEFAULT_DATA,
    REJECT_REASONS,
    DataConfig,
    PreparedData,
    canonicalize,
    format_summary,
    prepare_dataset,
    randomize_smiles,
)
from molgen.errors import MolgenError
from molgen.readers import file_fingerprint, normalize_sep, read_smiles_file
from molgen.tokenizer import SmilesTokenizer, Vocabulary, get_tokenizer

DATA = Path(__file__).resolve().parent.parent / "data"
MOSES_SAMPLE = DATA / "moses_sample.smi"
EDGE = DATA / "edge_cases.smi"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def same_molecule(a: str, b: str) -> bool:
    ma, mb = Chem.MolFromSmiles(a), Chem.MolFromSmiles(b)
    return ma is not None and mb is not None and Chem.MolToSmiles(ma) == Chem.MolToSmiles(mb)


def read_rejected(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def cfg(**kw) -> DataConfig:
    kw.setdefault("n_jobs", 1)
    kw.setdefault("valid_fraction", 0.0)
    return DataConfig(**kw)


@pytest.fixture(scope="module")
def moses_prepared(tmp_path_factory) -> tuple[PreparedData, Path]:
    out = tmp_path_factory.mktemp("moses_out")
    prepared = prepare_dataset(MOSES_SAMPLE, cfg(valid_fraction=0.1), out_dir=out, progress=False)
    return prepared, out


# --- chemistry helpers -------------------------------------------------------------------------


def test_canonicalize() -> None:
    assert canonicalize("C1=CC=CC=C1") == canonicalize("c1ccccc1") == "c1ccccc1"
    assert canonicalize("  OCC ") == "CCO"
    assert canonicalize("[Na+].[O-]C(=O)c1ccccc1") == "O=C([O-])c1ccccc1"
    assert canonicalize("[Na+].[O-]C(=O)c1ccccc1", largest_fragment=False) == (
        "O=C([O-])c1ccccc1.[Na+]"
    )
    assert canonicalize("N[C@@H](C)C(=O)O") == "C[C@H](N)C(=O)O"
    assert canonicalize("N[C@@H](C)C(=O)O", stereo=False) == "CC(N)C(=O)O"
    assert canonicalize("[2H]C(/C=C/F)[C@H](C)O", stereo=False) == "[2H]C(C=CF)C(C)O"
    for bad in ("", "   ", "C1CC", "c1cccc1", "CC(C", "XYZ", "C(C)(C)(C)(C)C"):
        assert canonicalize(bad) is None, bad


def test_randomize_smiles_same_molecule_deterministic_and_not_canonical() -> None:
    can = "CC(=O)Nc1ccc(O)cc1"
    variants = {randomize_smiles(can, random.Random(i)) for i in range(20)}
    assert len(variants) > 5 and any(v != can for v in variants)
    assert all(same_molecule(v, can) for v in variants)
    assert randomize_smiles(can, random.Random(3)) == randomize_smiles(can, random.Random(3))
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    assert randomize_smiles(can, g1) == randomize_smiles(can, g2)
    stereo = "C[C@H](N)C(=O)O"
    assert all(
        Chem.MolToSmiles(Chem.MolFromSmiles(randomize_smiles(stereo, random.Random(i)))) == stereo
        for i in range(10)
    )
    with pytest.raises(MolgenError):
        randomize_smiles("C1CC", random.Random(0))


def test_file_fingerprint(tmp_path: Path) -> None:
    f = write(tmp_path / "a.smi", "CCO\n")
    assert file_fingerprint(f) == hashlib.sha256(b"CCO\n").hexdigest()
    write(f, "CCN\n")
    assert file_fingerprint(f) == hashlib.sha256(b"CCN\n").hexdigest()


def test_default_data_is_bundled() -> None:
    assert DEFAULT_DATA.is_file() and DEFAULT_DATA.name == "train.csv.gz"


# --- reading formats -----------------------------------------------------------------------------


def test_read_csv_tsv_semicolon_and_sep(tmp_path: Path) -> None:
    rows = [("CCO", "ethanol"), ("c1ccccc1", "benzene")]
    for sep, name in ((",", "a.csv"), ("\t", "a.tsv"), (";", "a.csv"), ("\t", "b.csv")):
        text = f"name{sep}SMILES\n" + "".join(f"{n}{sep}{s}\n" for s, n in rows)
        values, lines = read_smiles_file(write(tmp_path / name, text))
        assert values == ["CCO", "c1ccccc1"] and lines == [2, 3], (sep, name)
    f = write(tmp_path / "pipe.txt", "id|smiles\n1|CCO\n")
    assert read_smiles_file(f, sep="|")[0] == ["CCO"]
    f = write(tmp_path / "tab.dat", "id\tsmiles\n1\tCCN\n")
    assert read_smiles_file(f, sep="tab")[0] == ["CCN"]


def test_read_gzip_bom_crlf_and_quoted_commas(tmp_path: Path) -> None:
    text = '\ufeffSmiles,Name\r\nCCO,"ethanol, absolute"\r\n"c1ccccc1","benzene"\r\n'
    f = tmp_path / "x.csv.gz"
    f.write_bytes(gzip.compress(text.encode("utf-8")))
    assert read_smiles_file(f) == (["CCO", "c1ccccc1"], [2, 3])
    g = tmp_path / "y.smi.gz"
    g.write_bytes(gzip.compress(b"CCO ethanol\r\nCCN\tethylamine\r\n"))
    assert read_smiles_file(g) == (["CCO", "CCN"], [1, 2])


def test_read_smi_with_names_header_and_blank_lines(tmp_path: Path) -> None:
    f = write(
        tmp_path / "a.smi", "smiles zinc_id\nCCO ZINC1\n\nc1ccccc1 ZINC2 extra words\nCCN\n\n\n"
    )
    values, lines = read_smiles_file(f)
    assert values == ["CCO", "", "c1ccccc1", "CCN"]
    assert lines == [2, 3, 4, 5]  # the blank line in the middle is a row; trailing ones are not
    f = write(tmp_path / "b.smi", "name smiles\nethanol CCO\n")
    assert read_smiles_file(f, smiles_column="smiles") == (["CCO"], [2])


def test_read_txt_that_is_a_table(tmp_path: Path) -> None:
    # ChEMBL's chembl_NN_chemreps.txt is a tab-separated table with a canonical_smiles column.
    text = (
        "chembl_id\tcanonical_smiles\tstandard_inchi_key\nCHEMBL1\tCCO\tLFQS\nCHEMBL2\tCCN\tQUSN\n"
    )
    assert read_smiles_file(write(tmp_path / "chemreps.txt", text)) == (["CCO", "CCN"], [2, 3])


def test_column_detection(tmp_path: Path) -> None:
    by_value = "id,structure,activity\n1,CCO,5.1\n2,c1ccccc1N,6.2\n3,CC(=O)O,4.0\n"
    assert read_smiles_file(write(tmp_path / "v.csv", by_value))[0] == [
        "CCO",
        "c1ccccc1N",
        "CC(=O)O",
    ]
    headerless = "CCO\nCCN\nc1ccccc1\n"
    assert read_smiles_file(write(tmp_path / "h.csv", headerless)) == (
        ["CCO", "CCN", "c1ccccc1"],
        [1, 2, 3],
    )
    assert read_smiles_file(write(tmp_path / "one.csv", "CCO\n")) == (["CCO"], [1])
    case = "ID;SMILES;Name\n1;CCO;x\n"
    assert read_smiles_file(write(tmp_path / "c.csv", case))[0] == ["CCO"]
    named = "Molecule ChEMBL ID;Smiles;Name\nCHEMBL25;CC(=O)Oc1ccccc1C(=O)O;ASPIRIN\n"
    assert read_smiles_file(write(tmp_path / "chembl.csv", named))[0] == ["CC(=O)Oc1ccccc1C(=O)O"]
    explicit = "a,b\nCCO,CCN\n"
    assert read_smiles_file(write(tmp_path / "e.csv", explicit), smiles_column="b")[0] == ["CCN"]
    assert read_smiles_file(write(tmp_path / "f.csv", explicit), smiles_column="B")[0] == ["CCN"]


def test_line_numbers_survive_blank_lines_and_multiline_fields(tmp_path: Path) -> None:
    text = 'smiles,note\nCCO,a\n\nCCN,"two\nlines"\nC1CC,b\n'
    values, lines = read_smiles_file(write(tmp_path / "m.csv", text))
    assert values == ["CCO", "", "CCN", "C1CC"]
    assert lines == [2, 3, 4, 6]


# --- fatal input problems ------------------------------------------------------------------------


def _fatal_cases(tmp: Path) -> dict[str, tuple[Path, dict, str]]:
    """name -> (path, read options, text the error message must contain)."""
    d = tmp / "folder"
    d.mkdir()
    return {
        "missing": (tmp / "nope.csv", {}, "does not exist"),
        "directory": (d, {}, "is a folder"),
        "not utf8": (
            write(tmp / "latin.csv", "smiles,name\nCCO,caf\xe9\n", "latin-1"),
            {},
            "UTF-8",
        ),
        "utf16": (write(tmp / "u16.csv", "smiles\nCCO\n", "utf-16"), {}, "UTF-16"),
        "binary": (write(tmp / "bin.smi", "CCO\x00\x01\x02\n"), {}, "binary"),
        "zip": (_bytes(tmp / "book.xlsx", b"PK\x03\x04rest"), {}, "zip"),
        "bad gzip": (
            _bytes(tmp / "cut.csv.gz", gzip.compress(b"smiles\nCCO\n" * 50)[:30]),
            {},
            "gzip",
        ),
        "empty": (write(tmp / "empty.csv", ""), {}, "is empty"),
        "whitespace only": (write(tmp / "ws.smi", " \n\n \n"), {}, "is empty"),
        "header only csv": (write(tmp / "h.csv", "smiles,name\n"), {}, "no rows"),
        "header only smi": (write(tmp / "h.smi", "smiles name\n"), {}, "no rows"),
        "no smiles column": (
            write(tmp / "n.csv", "id,name\n1,aspirin\n2,caffeine\n"),
            {},
            "--smiles-column",
        ),
        "ambiguous names": (
            write(tmp / "a.csv", "canonical_smiles,isomeric_smiles\nCCO,CCO\n"),
            {},
            "several columns",
        ),
        "ambiguous values": (
            write(tmp / "b.csv", "reactant,product\nCCO,CC=O\nCCN,C=CN\n"),
            {},
            "several columns",
        ),
        "missing named column": (
            write(tmp / "c.csv", "smiles,name\nCCO,x\n"),
            {"smiles_column": "structure"},
            "not found",
        ),
        "bad sep": (write(tmp / "d.csv", "smiles\nCCO\n"), {"sep": "::"}, "--sep"),
    }


def _bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


FATAL_NAMES = [
    "missing",
    "directory",
    "not utf8",
    "utf16",
    "binary",
    "zip",
    "bad gzip",
    "empty",
    "whitespace only",
    "header only csv",
    "header only smi",
    "no smiles column",
    "ambiguous names",
    "ambiguous values",
    "missing named column",
    "bad sep",
]


@pytest.mark.parametrize("name", FATAL_NAMES)
def test_fatal_input_raises_one_line_molgen_error(tmp_path: Path, name: str) -> None:
    path, options, needle = _fatal_cases(tmp_path)[name]
    with pytest.raises(MolgenError) as info:
        read_smiles_file(path, **options)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message
    with pytest.raises(MolgenError):
        prepare_dataset(path, cfg(**{k: v for k, v in options.items()}), progress=False)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(tmp_path / "secret.csv", "smiles\nCCO\n")
    if os.geteuid() != 0:  # root can read anything: simulate the OS refusing instead
        f.chmod(0)
    else:

        def refuse(self: Path) -> bytes:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(MolgenError, match="permission denied"):
        read_smiles_file(f)


def test_zero_valid_molecules_still_writes_rejected(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.smi", "C1CC\nXYZ\n\nCC(C\n")
    out = tmp_path / "out"
    with pytest.raises(MolgenError, match="no valid molecules") as info:
        prepare_dataset(f, cfg(), out_dir=out, progress=False)
    assert "unparseable 3" in str(info.value) and "empty 1" in str(info.value)
    rows = read_rejected(out / "rejected.csv")
    assert [(r["line"], r["smiles"], r["reason"]) for r in rows] == [
        ("1", "C1CC", "unparseable"),
        ("2", "XYZ", "unparseable"),
        ("3", "", "empty"),
        ("4", "CC(C", "unparseable"),
    ]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"representation": "inchi"}, "--representation"),
        ({"max_length": 0}, "--max-length"),
        ({"valid_fraction": -0.1}, "--valid-fraction"),
        ({"test_fraction": 2.5}, "--test-fraction"),
        ({"augment": -1}, "--augment"),
        ({"n_jobs": -2}, "--jobs"),
        ({"valid_fraction": 5}, "leave none"),
    ],
)
def test_bad_options(tmp_path: Path, options: dict, needle: str) -> None:
    f = write(tmp_path / "ok.smi", "CCO\nCCN\nCCC\n")
    with pytest.raises(MolgenError, match=needle):
        prepare_dataset(f, cfg(**options), progress=False)


def test_out_dir_that_is_a_file(tmp_path: Path) -> None:
    f = write(tmp_path / "ok.smi", "CCO\n")
    with pytest.raises(MolgenError, match="is a file"):
        prepare_dataset(f, cfg(), out_dir=f, progress=False)


def test_normalize_sep() -> None:
    assert normalize_sep("\\t") == normalize_sep("tab") == "\t"
    assert normalize_sep(";") == ";" and normalize_sep(None) is None
    with pytest.raises(MolgenError):
        normalize_sep(",,")


# --- prepare_dataset -----------------------------------------------------------------------------


def test_prepare_reports_every_dropped_row(tmp_path: Path) -> None:
    text = "\n".join(
        [
            "smiles,name",
            "CCO,ethanol",  # 2 kept
            "OCC,ethanol again",  # 3 duplicate of line 2
            "C1CC,broken ring",  # 4 unparseable
            ",nothing",  # 5 empty
            "C" * 30 + ",long",  # 6 too long (max_length 20)
            "[Na+].[O-]C(=O)c1ccccc1,salt",  # 7 kept as benzoate
            "c1ccccc1,benzene",  # 8 kept
            "C1=CC=CC=C1,kekule benzene",  # 9 duplicate of line 8
        ]
    )
    f = write(tmp_path / "mixed.csv", text + "\n")
    out = tmp_path / "out"
    p = prepare_dataset(f, cfg(max_length=20), out_dir=out, progress=False)
    assert p.n_read == 8 and p.n_kept == 3
    assert sorted(p.train) == sorted(["CCO", "O=C([O-])c1ccccc1", "c1ccccc1"])
    assert p.rejected_counts == {
        "empty": 1,
        "unparseable": 1,
        "not encodable as SELFIES": 0,
        "too long": 1,
        "unknown tokens": 0,
        "duplicate": 2,
    }
    assert p.n_read == p.n_kept + sum(p.rejected_counts.values())
    rows = read_rejected(out / "rejected.csv")
    assert [(int(r["line"]), r["reason"]) for r in rows] == [
        (3, "duplicate"),
        (4, "unparseable"),
        (5, "empty"),
        (6, "too long"),
        (9, "duplicate"),
    ]
    assert rows[0]["smiles"] == "OCC" and rows[0]["detail"] == "same molecule as line 2"
    assert rows[3]["detail"] == "30 tokens > 20"
    assert rows[4]["smiles"] == "C1=CC=CC=C1"
    assert p.column == "smiles"
    assert p.fingerprint == file_fingerprint(f)


def test_unknown_tokens_against_an_existing_vocabulary(tmp_path: Path) -> None:
    vocab = Vocabulary.build([SmilesTokenizer().tokenize(s) for s in ("CCO", "c1ccccc1", "CCCl")])
    f = write(tmp_path / "new.smi", "OCCCl\nc1cc[se]c1\n[2H]OC\nCCBr\nCCCO\n")
    out = tmp_path / "out"
    p = prepare_dataset(f, cfg(), out_dir=out, vocab=vocab, progress=False)
    assert p.vocab is vocab
    assert sorted(p.train) == ["CCCO", "OCCCl"]
    assert p.rejected_counts["unknown tokens"] == 3
    details = {r["smiles"]: r["detail"] for r in read_rejected(out / "rejected.csv")}
    assert details == {"c1cc[se]c1": "[se]", "[2H]OC": "[2H]", "CCBr": "Br"}


def test_prepared_files_and_vocab(moses_prepared: tuple[PreparedData, Path]) -> None:
    p, out = moses_prepared
    assert (out / "train.smi").read_text().split("\n")[:-1] == p.train
    assert (out / "valid.smi").read_text().split("\n")[:-1] == p.valid
    assert not (out / "test.smi").exists()
    doc = json.loads((out / "vocab.json").read_text())
    assert doc["tokenizer"] == "smiles"
    assert Vocabulary.from_dict(doc) == p.vocab
    summary = json.loads((out / "data_summary.json").read_text())
    assert summary["n_read"] == 3000 and summary["fingerprint"] == file_fingerprint(MOSES_SAMPLE)
    assert read_rejected(out / "rejected.csv") == []  # MOSES rows are all valid and distinct


def test_every_kept_molecule_encodes_and_decodes(moses_prepared: tuple[PreparedData, Path]) -> None:
    p, _ = moses_prepared
    tok = get_tokenizer(p.tokenizer_kind)
    assert len(p.train) + len(p.valid) == p.n_kept == 3000
    assert len(p.valid) == 300
    assert not set(p.train) & set(p.valid)
    for s in p.train + p.valid:
        assert canonicalize(s) == s
        ids = p.vocab.encode(tok.tokenize(s))
        assert tok.detokenize(p.vocab.decode(ids)) == s


def test_summary_is_plain_and_consistent(moses_prepared: tuple[PreparedData, Path]) -> None:
    p, _ = moses_prepared
    s = p.summary()
    assert json.loads(json.dumps(s)) == s
    lengths = sorted(len(SmilesTokenizer().tokenize(x)) for x in p.train + p.valid)
    assert s["token_length"]["max"] == lengths[-1]
    assert s["token_length"]["p50"] == int(np.percentile(lengths, 50, method="nearest"))
    assert s["token_length"]["p50"] <= s["token_length"]["p90"] <= s["token_length"]["p99"]
    assert s["vocab_size"] == len(p.vocab)
    assert (s["n_train"], s["n_valid"], s["n_test"]) == (2700, 300, 0)
    text = format_summary(p)
    assert "Read 3,000 rows" in text and "Vocabulary" in text and "rejected.csv" in text


def test_split_is_deterministic_and_seeded(tmp_path: Path) -> None:
    f = write(tmp_path / "s.smi", "\n".join(MOSES_SAMPLE.read_text().split()[:300]) + "\n")
    a = prepare_dataset(f, cfg(valid_fraction=0.1, test_fraction=20, seed=1), progress=False)
    b = prepare_dataset(f, cfg(valid_fraction=0.1, test_fraction=20, seed=1), progress=False)
    c = prepare_dataset(f, cfg(valid_fraction=0.1, test_fraction=20, seed=2), progress=False)
    assert (a.train, a.valid, a.test) == (b.train, b.valid, b.test)
    assert a.valid != c.valid
    assert (len(a.train), len(a.valid), len(a.test)) == (250, 30, 20)
    assert a.vocab == c.vocab  # the vocabulary does not depend on the split


def test_tiny_files_keep_a_training_molecule(tmp_path: Path) -> None:
    f = write(tmp_path / "one.smi", "CCO\n")
    p = prepare_dataset(f, DataConfig(n_jobs=1), progress=False)  # default 5% validation
    assert p.train == ["CCO"] and p.valid == []


def test_test_split_file_and_stale_file_removed(tmp_path: Path) -> None:
    f = write(tmp_path / "s.smi", "\n".join(MOSES_SAMPLE.read_text().split()[:50]) + "\n")
    out = tmp_path / "out"
    p = prepare_dataset(f, cfg(test_fraction=0.2), out_dir=out, progress=False)
    assert (out / "test.smi").read_text().split() == p.test and len(p.test) == 10
    prepare_dataset(f, cfg(), out_dir=out, progress=False)
    assert not (out / "test.smi").exists()


def test_edge_cases_vocabulary_and_options(tmp_path: Path) -> None:
    p = prepare_dataset(EDGE, cfg(), progress=False)
    assert p.rejected_counts["too long"] == 2  # the 118-carbon chain and C60 (> 100 tokens)
    assert (
        prepare_dataset(EDGE, cfg(max_length=200), progress=False).rejected_counts["too long"] == 0
    )
    for token in ("[Se]", "[se]", "[2H]", "[13CH3]", "Cl", "Br", "%10", "[C@@H]", "[NH3+]", "[O-]"):
        assert token in p.vocab, token
    assert "O=C([O-])c1ccccc1" in p.train  # sodium benzoate -> largest fragment
    assert "c1ccccc1" in p.train and p.rejected_counts["duplicate"] >= 1  # Kekule = aromatic
    keep = prepare_dataset(EDGE, cfg(largest_fragment=False, stereo=False), progress=False)
    assert "O=C([O-])c1ccccc1.[Na+]" in keep.train
    assert not any("@" in s or "/" in s or "\\" in s for s in keep.train)
    assert any("[2H]" in s for s in keep.train)  # isotopes survive --no-stereo


def test_selfies_representation(tmp_path: Path) -> None:
    f = write(tmp_path / "s.smi", "CCO\nc1cc[se]c1\nC(C)(C)(C)(C)C\n[NH3+]CC(=O)[O-]\n")
    p = prepare_dataset(f, cfg(representation="selfies"), progress=False)
    assert p.tokenizer_kind == "selfies"
    # RDKit already refuses the pentavalent carbon; the others all encode
    assert p.n_kept == 3
    tok = get_tokenizer("selfies")
    assert "[Se]" in p.vocab and "[NH3+1]" in p.vocab
    for s in p.train:
        assert same_molecule(tok.detokenize(p.vocab.decode(p.vocab.encode(tok.tokenize(s)))), s)


def test_selfies_encoder_failure_is_a_reported_reason() -> None:
    settings = data_mod._Settings("selfies", 100, True, True, None)
    result = data_mod._process_chunk((["CCO", "[NH3]->[Pt](<-[NH3])(Cl)Cl"], settings))
    assert result.canonical[0] == "CCO" and result.canonical[1] is None
    assert REJECT_REASONS[result.codes[1]] == "not encodable as SELFIES"
    assert "SELFIES" in result.details[1]


def test_an_rdkit_exception_on_one_row_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    real = data_mod._canonical_from_mol

    def flaky(mol, text, largest_fragment, stereo):
        if text == "CCN":
            raise RuntimeError("Pre-condition Violation\n\tdetails")
        return real(mol, text, largest_fragment, stereo)

    monkeypatch.setattr(data_mod, "_canonical_from_mol", flaky)
    settings = data_mod._Settings("smiles", 100, True, True, None)
    result = data_mod._process_chunk((["CCO", "CCN", "OCC"], settings))
    assert result.canonical == ["CCO", None, "CCO"]
    assert REJECT_REASONS[result.codes[1]] == "unparseable"
    assert result.details[1] == "RDKit error: Pre-condition Violation"


def test_augmentation(tmp_path: Path) -> None:
    f = write(tmp_path / "s.smi", "\n".join(MOSES_SAMPLE.read_text().split()[:40]) + "\nC\n")
    p = prepare_dataset(f, cfg(augment=2, seed=3), progress=False)
    canon, extra = p.train[: p.n_kept], p.train[p.n_kept :]
    assert p.n_augmented == len(extra) == 2 * 40  # the one-atom "C" has no other spelling
    assert all(canonicalize(s) == s for s in canon)
    for k, v in enumerate(extra):
        assert v != canon[k // 2] and same_molecule(v, canon[k // 2])
    assert all(p.vocab.unknown_tokens(SmilesTokenizer().tokenize(v)) == [] for v in extra)
    again = prepare_dataset(f, cfg(augment=2, seed=3), progress=False)
    assert again.train == p.train
    assert p.summary()["n_train"] == 41 and p.summary()["n_augmented"] == 80


def test_worker_pool_matches_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = MOSES_SAMPLE.read_text().split()[:600] + ["C1CC", "", "CCO", "OCC"]
    f = write(tmp_path / "p.smi", "\n".join(lines) + "\n")
    serial = prepare_dataset(f, cfg(valid_fraction=0.1, augment=1), progress=False)
    monkeypatch.setattr(data_mod, "_MIN_ROWS_FOR_POOL", 0)
    monkeypatch.setattr(data_mod, "_CHUNK_SIZE", 150)
    pooled = prepare_dataset(f, cfg(valid_fraction=0.1, augment=1, n_jobs=2), progress=False)
    assert (pooled.train, pooled.valid, pooled.vocab) == (serial.train, serial.valid, serial.vocab)
    assert pooled.rejected_counts == serial.rejected_counts
    assert pooled.rejected_counts["duplicate"] == 1 and pooled.rejected_counts["empty"] == 1


# --- cache of the per-row checks ---------------------------------------------------------------


def _no_recompute(*args, **kwargs):
    raise AssertionError("the per-row checks ran although a cache entry exists")


def test_cache_reuses_the_row_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = MOSES_SAMPLE.read_text().split()[:120] + ["C1CC", "", "OCC", "CCO", "c1cc[se]c1"]
    f = write(tmp_path / "c.smi", "\n".join(lines) + "\n")
    cache = tmp_path / "cache"
    config = cfg(valid_fraction=0.1, max_length=60)
    assert prepare_dataset(f, config, cache=cache, progress=False).cache_file is None
    assert not cache.exists()  # below the size threshold: not cached
    monkeypatch.setattr(data_mod, "_CACHE_MIN_ROWS", 0)
    first = prepare_dataset(f, config, out_dir=tmp_path / "a", cache=cache, progress=False)
    assert first.cache_file is None and len(list(cache.glob("prepare-*.txt.gz"))) == 1

    monkeypatch.setattr(data_mod, "_check_rows", _no_recompute)
    again = prepare_dataset(f, config, out_dir=tmp_path / "b", cache=cache, progress=False)
    assert again.cache_file is not None and "cache" in format_summary(again)
    assert (again.train, again.valid, again.vocab) == (first.train, first.valid, first.vocab)
    assert again.summary()["token_length"] == first.summary()["token_length"]
    assert again.rejected_counts == first.rejected_counts
    assert again.fingerprint == first.fingerprint and again.column == first.column
    for name in ("rejected.csv", "train.smi", "valid.smi", "vocab.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name

    # other options, other file bytes, or a damaged entry: the checks run again
    for changed_config, changed_file in ((cfg(max_length=30), f), (config, None)):
        if changed_file is None:
            changed_file = write(tmp_path / "c.smi", "\n".join(lines) + "\nCCN\n")
        with pytest.raises(AssertionError, match="per-row checks ran"):
            prepare_dataset(changed_file, changed_config, cache=cache, progress=False)
    entry = next(cache.glob("prepare-*.txt.gz"))
    entry.write_bytes(entry.read_bytes()[:40])
    with pytest.raises(AssertionError, match="per-row checks ran"):
        prepare_dataset(f, config, cache=cache, progress=False)


def test_cache_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_mod, "_CACHE_MIN_ROWS", 0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    f = write(tmp_path / "c.smi", "CCO\nCCN\n")
    prepare_dataset(f, cfg(), cache=False, progress=False)
    assert not (tmp_path / "xdg").exists()
    prepare_dataset(f, cfg(), progress=False)
    assert len(list((tmp_path / "xdg" / "molgen").glob("prepare-*"))) == 1
    assert data_mod.default_cache_dir() == tmp_path / "xdg" / "molgen"


# ---- size bounds (RDKit crashes canonicalizing a long enough chain) -----------------------------
def test_size_bounds_reject_before_rdkit() -> None:
    bound = data_mod.MAX_SMILES_CHARS
    assert data_mod.smiles_size_problem("C" * bound) is None
    assert (
        data_mod.smiles_size_problem(" " + "C" * (bound + 1)) == f"{bound + 1} characters > {bound}"
    )
    too_many = "C" * (data_mod.MAX_ATOMS + 1)
    assert data_mod.parse_smiles(too_many) is None and canonicalize(too_many) is None
    assert data_mod.parse_smiles(too_many, max_atoms=10**6).GetNumAtoms() == len(too_many)
    assert data_mod.parse_smiles("C1CC") is None and data_mod.parse_smiles("") is None
    with pytest.raises(MolgenError, match="too long to parse"):
        randomize_smiles("C" * (bound + 1), random.Random(0))


def test_prepare_rejects_long_lines_with_their_line_numbers(tmp_path: Path) -> None:
    f = write(tmp_path / "m.smi", "CCO\n" + "C" * 40 + "\nCCN\nc1ccccc1\n" + "C" * 12 + "\n")
    prepared = prepare_dataset(
        f, cfg(max_chars=30, max_atoms=10), out_dir=tmp_path / "o", progress=False
    )
    assert prepared.rejected_counts["too long"] == 2
    rows = list(csv.DictReader((tmp_path / "o" / "rejected.csv").open()))
    assert [(r["line"], r["detail"]) for r in rows] == [
        ("2", "40 characters > 30"),
        ("5", "12 atoms > 10"),
    ]
    with pytest.raises(MolgenError, match="--max-chars"):
        prepare_dataset(f, cfg(max_chars=0), progress=False)
    with pytest.raises(MolgenError, match="max_atoms"):
        prepare_dataset(f, cfg(max_atoms=data_mod.ATOMS_LIMIT + 1), progress=False)


def test_prepare_never_overwrites_its_input(tmp_path: Path) -> None:
    folder = tmp_path / "mydata"
    folder.mkdir()
    f = write(folder / "train.smi", "CCO\nCCN\nc1ccccc1\nCCCl\n")
    before = f.read_bytes()
    with pytest.raises(MolgenError, match="also an input"):
        prepare_dataset(f, cfg(), out_dir=folder, progress=False)
    assert f.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["train.smi"]
