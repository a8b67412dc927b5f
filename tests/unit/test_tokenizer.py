from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rdkit import Chem

from molgen.errors import MolgenError
from molgen.tokenizer import (
    BOS,
    EOS,
    PAD,
    UNK,
    SelfiesTokenizer,
    SmilesTokenizer,
    UnknownTokensError,
    Vocabulary,
    get_tokenizer,
)

DATA = Path(__file__).resolve().parent.parent / "data"


def _real_smiles() -> list[str]:
    moses = (DATA / "moses_sample.smi").read_text().split()
    edge = [ln.split()[0] for ln in (DATA / "edge_cases.smi").read_text().splitlines() if ln]
    return moses + edge


REAL = _real_smiles()
# Canonical forms too: RDKit writes %nn closures, [C@@H], [nH] etc. its own way.
REAL_CANONICAL = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in REAL]


@pytest.mark.parametrize(
    ("smiles", "expected"),
    [
        ("c1cc[nH]c1", ["c", "1", "c", "c", "[nH]", "c", "1"]),
        ("C[C@@H](N)C(=O)O", ["C", "[C@@H]", "(", "N", ")", "C", "(", "=", "O", ")", "O"]),
        ("[NH3+]CC(=O)[O-]", ["[NH3+]", "C", "C", "(", "=", "O", ")", "[O-]"]),
        ("[13CH3]Cl", ["[13CH3]", "Cl"]),
        ("[Fe+2].[Cl-]", ["[Fe+2]", ".", "[Cl-]"]),
        ("BrC=CBr", ["Br", "C", "=", "C", "Br"]),
        ("C%10CC%10", ["C", "%10", "C", "C", "%10"]),
        ("C%(123)C%(123)", ["C", "%(123)", "C", "%(123)"]),
        ("F/C=C\\F", ["F", "/", "C", "=", "C", "\\", "F"]),
        ("C#N", ["C", "#", "N"]),
        ("[2H]O[2H]", ["[2H]", "O", "[2H]"]),
        ("c1cc[se]c1", ["c", "1", "c", "c", "[se]", "c", "1"]),
        ("C12CC1C2", ["C", "1", "2", "C", "C", "1", "C", "2"]),
    ],
)
def test_smiles_tokens(smiles: str, expected: list[str]) -> None:
    assert SmilesTokenizer().tokenize(smiles) == expected


def test_chlorine_and_bromine_are_one_token() -> None:
    tokens = SmilesTokenizer().tokenize("Clc1ccc(Br)cc1CCl")
    assert tokens.count("Cl") == 2 and tokens.count("Br") == 1
    assert "l" not in tokens and "r" not in tokens


def test_roundtrip_on_thousands_of_real_smiles() -> None:
    tok = SmilesTokenizer()
    assert len(REAL) > 3000
    for s in REAL + REAL_CANONICAL:
        tokens = tok.tokenize(s)
        assert "".join(tokens) == s
        assert tok.detokenize(tokens) == s
    # the fixtures really exercise the hard cases
    all_tokens = {t for s in REAL + REAL_CANONICAL for t in tok.tokenize(s)}
    for token in ("Cl", "Br", "[nH]", "[2H]", "[13CH3]", "[Se]", "[se]", "%10", "[O-]", "[C@@H]"):
        assert token in all_tokens, token


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_join_of_tokens_is_the_input_for_any_text(s: str) -> None:
    tokens = SmilesTokenizer().tokenize(s)
    assert "".join(tokens) == s
    assert all(tokens)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="CNOScnos()[]=#@+-/\\%0123456789HBrlFI.*:", max_size=60))
def test_join_of_tokens_is_the_input_for_smiles_like_text(s: str) -> None:
    tokens = SmilesTokenizer().tokenize(s)
    assert "".join(tokens) == s
    assert "".join(SmilesTokenizer().tokenize(s)) == s and tokens == SmilesTokenizer().tokenize(s)


def test_vocabulary_build_is_deterministic_and_pins_specials() -> None:
    tok = SmilesTokenizer()
    lists = [tok.tokenize(s) for s in REAL_CANONICAL[:500]]
    a = Vocabulary.build(lists)
    b = Vocabulary.build(reversed(lists))
    assert a == b and a.tokens == b.tokens
    assert a.tokens[:4] == [PAD, BOS, EOS, UNK]
    assert (a.pad_id, a.bos_id, a.eos_id, a.unk_id) == (0, 1, 2, 3)
    assert a.tokens[4:] == sorted(a.tokens[4:])
    assert len(a) == len(a.tokens)
    assert a.token_to_id(a.id_to_token(7)) == 7


def test_vocabulary_ignores_special_text_in_input() -> None:
    vocab = Vocabulary.build([["C", PAD, "O", EOS]])
    assert vocab.tokens == [PAD, BOS, EOS, UNK, "C", "O"]


def test_encode_decode_roundtrip() -> None:
    tok = SmilesTokenizer()
    vocab = Vocabulary.build(tok.tokenize(s) for s in REAL_CANONICAL)
    for s in REAL_CANONICAL:
        ids = vocab.encode(tok.tokenize(s))
        assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
        assert tok.detokenize(vocab.decode(ids)) == s
        assert vocab.encode(tok.tokenize(s), add_bos_eos=False) == ids[1:-1]


def test_decode_stops_at_eos_and_never_emits_special_text() -> None:
    vocab = Vocabulary.build([["C", "O", "N"]])
    c, o, n = (vocab.token_to_id(t) for t in "CON")
    ids = [vocab.bos_id, c, vocab.pad_id, o, vocab.unk_id, vocab.eos_id, n, n]
    assert vocab.decode(ids) == ["C", "O"]
    assert vocab.decode([c, n]) == ["C", "N"]  # no eos: everything
    decoded = "".join(vocab.decode([vocab.bos_id, vocab.unk_id, vocab.pad_id, c]))
    assert decoded == "C" and "<" not in decoded


def test_decode_accepts_numpy_and_torch_ids() -> None:
    np = pytest.importorskip("numpy")
    vocab = Vocabulary.build([["C", "O"]])
    ids = np.array([vocab.bos_id, 4, 5, vocab.eos_id])
    assert vocab.decode(ids) == ["C", "O"]
    torch = pytest.importorskip("torch")
    assert vocab.decode(torch.tensor([4, 5, 2, 4])) == ["C", "O"]


def test_unknown_tokens_raise_and_are_named() -> None:
    vocab = Vocabulary.build([["C", "O"]])
    with pytest.raises(UnknownTokensError) as info:
        vocab.encode(["C", "[Se]", "O", "[2H]", "[Se]"])
    assert info.value.tokens == ["[Se]", "[2H]"]
    assert "[Se]" in str(info.value) and "[2H]" in str(info.value)
    assert isinstance(info.value, MolgenError)
    assert vocab.unknown_tokens(["C", "[Se]", "Cl"]) == ["[Se]", "Cl"]
    with pytest.raises(UnknownTokensError):
        vocab.token_to_id("Cl")
    with pytest.raises(IndexError):
        vocab.id_to_token(len(vocab))
    with pytest.raises(IndexError):
        vocab.decode([len(vocab)])


def test_vocabulary_dict_roundtrip_is_plain_json() -> None:
    vocab = Vocabulary.build([["C", "Cl", "[nH]", "%10"]])
    d = json.loads(json.dumps(vocab.to_dict()))
    again = Vocabulary.from_dict(d)
    assert again == vocab and again.tokens == vocab.tokens


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"tokens": "C"},
        {"tokens": ["C", "O"]},
        {"tokens": [PAD, BOS, EOS, UNK, "C", "C"]},
        {"tokens": [PAD, BOS, EOS, UNK], "version": 99},
    ],
)
def test_from_dict_rejects_damaged_vocabularies(bad: dict) -> None:
    with pytest.raises(MolgenError):
        Vocabulary.from_dict(bad)


def test_get_tokenizer() -> None:
    assert get_tokenizer("smiles").kind == "smiles"
    assert get_tokenizer("SELFIES").kind == "selfies"
    with pytest.raises(MolgenError, match="smiles, selfies"):
        get_tokenizer("inchi")


def test_selfies_roundtrip_gives_the_same_molecule() -> None:
    tok = SelfiesTokenizer()
    for s in REAL_CANONICAL[:200] + [
        "[NH3+]CC(=O)[O-]",
        "[2H]C([2H])([2H])Oc1ccccc1",
        "c1cc[se]c1",
    ]:
        tokens = tok.tokenize(s)
        assert all(t.startswith("[") and t.endswith("]") for t in tokens if t != ".")
        back = tok.detokenize(tokens)
        assert Chem.MolToSmiles(Chem.MolFromSmiles(back)) == Chem.MolToSmiles(Chem.MolFromSmiles(s))


def test_selfies_errors() -> None:
    tok = SelfiesTokenizer()
    with pytest.raises(MolgenError, match="SELFIES"):
        tok.tokenize("C(C)(C)(C)(C)C")  # pentavalent carbon
    assert tok.detokenize(["[C]", "[Xx]"]) == ""
    assert tok.detokenize([BOS, "[C]", "[O]", EOS]) == "CO"
