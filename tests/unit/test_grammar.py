"""molgen.grammar: the SMILES syntax and valence mask applied while decoding."""

from __future__ import annotations

import pytest
import torch
from rdkit import Chem, RDLogger

from molgen.grammar import (
    ATOM,
    BOND,
    CLOSE,
    EOS,
    NEVER,
    OPEN,
    RING,
    SmilesSyntax,
    bond_capacity,
    syntax_for,
    token_kind,
)
from molgen.tokenizer import SPECIAL_TOKENS, get_tokenizer
from tests.conftest import TEST_DATA

RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("token", "kind"),
    [
        ("C", ATOM), ("c", ATOM), ("Cl", ATOM), ("[nH]", ATOM), ("[C@@H]", ATOM), ("*", ATOM),
        ("=", BOND), ("/", BOND), ("\\", BOND), ("(", OPEN), (")", CLOSE), ("1", RING),
        ("%12", RING), ("<eos>", EOS), ("<pad>", NEVER), ("<unk>", NEVER), ("@", NEVER),
    ],
)  # fmt: skip
def test_token_kinds(token, kind):
    assert token_kind(token) == kind


@pytest.mark.parametrize(
    ("token", "capacity"),
    [
        ("C", 4), ("c", 4), ("N", 3), ("O", 2), ("F", 1), ("Cl", 1), ("[N+]", 4), ("[O-]", 1),
        ("[nH]", 2), ("[C@@H]", 3), ("[NH3+]", 1), ("S", 6),
    ],
)  # fmt: skip
def test_bond_capacity_is_what_rdkit_accepts(token, capacity):
    assert bond_capacity(token) == capacity


def test_selfies_models_get_no_mask():
    assert syntax_for(["<pad>", "<bos>", "<eos>", "<unk>", "[C]"], "selfies") is None
    assert isinstance(syntax_for([*SPECIAL_TOKENS, "C"], "smiles"), SmilesSyntax)


def _token_rows(strings):
    tok = get_tokenizer("smiles")
    rows = [tok.tokenize(s) for s in strings]
    vocab = [*SPECIAL_TOKENS, *sorted({t for r in rows for t in r})]
    return rows, vocab


def _spellings():
    """The test molecules written four ways: canonical, without stereo, Kekulé, random order."""
    out = []
    for i, line in enumerate((TEST_DATA / "moses_sample.smi").read_text().split()):
        mol = Chem.MolFromSmiles(line)
        if mol is None or i >= 600:
            continue
        out.append(Chem.MolToSmiles(mol))
        out.append(Chem.MolToSmiles(mol, doRandom=True))
        Chem.Kekulize(mol, clearAromaticFlags=True)
        out.append(Chem.MolToSmiles(mol, kekuleSmiles=True))
    out += ["C[C@H](N)Cc1ccccc1", "C/C=C/C(=O)[O-]", "C=1CCC-1", "C12(CCC1)CC2", "C(O1)CCC1"]
    out += ["O=[N+]([O-])c1ccc2ccccc2c1", "C1CC2CCC1CC2", "c1ccc2c(c1)c1ccccc1[nH]2", "C%10CC%10"]
    return out


def test_the_mask_never_forbids_a_valid_smiles():
    """Teacher-force real molecules through the state: every token must be allowed, even for the
    longest string at exactly the length limit."""
    strings = _spellings()
    assert all(Chem.MolFromSmiles(s) is not None for s in strings)
    rows, vocab = _token_rows(strings)
    index = {t: i for i, t in enumerate(vocab)}
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest + 1), 2, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor([index[t] for t in r])
    state = SmilesSyntax(vocab).start(len(rows), longest, "cpu")
    alive = torch.ones(len(rows), dtype=torch.bool)
    for step in range(longest + 1):
        if step < longest:
            allowed = state.allowed()[torch.arange(len(rows)), ids[:, step]]
        else:  # the eos after the longest strings: the limit itself ends them
            allowed = torch.ones(len(rows), dtype=torch.bool)
        forbidden = [strings[i] for i in (alive & ~allowed).nonzero().squeeze(1).tolist()]
        assert forbidden == [], f"step {step} forbids {forbidden[:3]}"
        if step < longest:
            state.advance(ids[:, step])
        alive &= ids[:, step] != 2


def _sample(vocab, n=600, length=40, seed=0, masked=True):
    """Strings from random logits (a decoder that knows nothing), with or without the mask, and
    which rows the mask could not guide to the end (no token allowed near the length limit)."""
    torch.manual_seed(seed)
    syntax = SmilesSyntax(vocab)
    state = syntax.start(n, length, "cpu")
    never = syntax.kinds == NEVER
    rows = [[] for _ in range(n)]
    alive = torch.ones(n, dtype=torch.bool)
    for _ in range(length):
        logits = torch.randn(n, len(vocab)).masked_fill(never, float("-inf"))
        if masked:
            logits = state.mask(logits)
        token = torch.multinomial(torch.softmax(logits, -1), 1).squeeze(1)
        state.advance(token)
        for i in (alive & (token != 2)).nonzero().squeeze(1).tolist():
            rows[i].append(vocab[token[i]])
        alive &= token != 2
    return ["".join(r) for r in rows], state.stuck.tolist()


def test_random_decoder_writes_valid_molecules_under_the_mask():
    """No aromatic tokens, so syntax and valence are all RDKit checks: every string the mask
    guided to its end is a molecule, where the same noise unmasked almost never parses."""
    vocab = [*SPECIAL_TOKENS, "C", "N", "O", "F", "Cl", "S", "[N+]", "[O-]", "(", ")", "=", "#"]
    vocab += ["1", "2", "3"]
    masked, stuck = _sample(vocab)
    plain, _ = _sample(vocab, masked=False)
    guided = [s for s, lost in zip(masked, stuck, strict=True) if not lost]
    assert len(guided) > 0.8 * len(masked)
    assert [s for s in guided if not s or Chem.MolFromSmiles(s) is None] == []
    valid_plain = sum(Chem.MolFromSmiles(s) is not None and s != "" for s in plain)
    assert valid_plain / len(plain) < 0.3


def test_rows_can_be_reordered_like_the_decoder():
    vocab = [*SPECIAL_TOKENS, "C", "O", "(", ")", "1"]
    syntax = SmilesSyntax(vocab)
    state = syntax.start(2, 10, "cpu")
    c, o, op, one = (vocab.index(t) for t in ("C", "O", "(", "1"))
    state.advance(torch.tensor([c, c]))
    state.advance(torch.tensor([op, one]))  # row 0 "C(", row 1 "C1"
    state.select(torch.tensor([1, 0]))  # swapped
    allowed = state.allowed()
    eos = vocab.index("<eos>")
    assert not allowed[0, eos]  # "C1" owes a ring closure
    assert not allowed[1, eos] and not allowed[1, vocab.index(")")]  # "C(" needs an atom
    assert allowed[0, o] and allowed[1, o]
