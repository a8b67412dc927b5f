"""molgen.inputs: SMILES to a model's ids, stereo a model cannot spell, clear rejections."""

from __future__ import annotations

import pytest

from molgen.data import EMPTY, TOO_LONG, UNKNOWN_TOKENS, UNPARSEABLE
from molgen.errors import MolgenError
from molgen.inputs import (
    InputChecker,
    has_stereo_text,
    pad_ids,
    stereo_warning,
    vocabulary_has_stereo,
)
from molgen.sampling import load_model
from molgen.tokenizer import SPECIAL_TOKENS, SmilesTokenizer, Vocabulary
from tests.conftest import MOSES_LIKE_TOKENS, random_model_file

STEREO_TOKENS = ("[C@H]", "[C@@H]", "/", "\\")
AMPHETAMINE = "C[C@H](N)Cc1ccccc1"


def _checker(tokens=MOSES_LIKE_TOKENS, stereo=True, max_length=60):
    vocab = Vocabulary([*SPECIAL_TOKENS, *sorted(tokens)])
    return InputChecker(SmilesTokenizer(), vocab, max_length, stereo=stereo, model_path="m.pt")


def test_stereo_text_and_vocabulary_detection():
    assert has_stereo_text("[C@@H]") and has_stereo_text("F/C=C/F") and has_stereo_text("C\\C")
    assert not has_stereo_text("CC(N)Cc1ccccc1")
    plain = Vocabulary([*SPECIAL_TOKENS, *MOSES_LIKE_TOKENS])
    assert not vocabulary_has_stereo(plain)
    for token in STEREO_TOKENS:
        assert vocabulary_has_stereo(Vocabulary([*SPECIAL_TOKENS, *MOSES_LIKE_TOKENS, token]))


@pytest.mark.parametrize(
    "tokens, stereo, free",
    [
        (MOSES_LIKE_TOKENS, True, True),  # no stereo token: like the bundled MOSES model
        (MOSES_LIKE_TOKENS + STEREO_TOKENS, False, True),  # data config says stereo is off
        (MOSES_LIKE_TOKENS + STEREO_TOKENS, True, False),
    ],
)
def test_stereo_free_from_vocabulary_or_data_config(tokens, stereo, free):
    assert _checker(tokens, stereo).stereo_free is free


def test_stereo_free_model_strips_stereo_and_counts_it():
    checker = _checker()
    item = checker.check(AMPHETAMINE)
    assert item.ok and item.stereo_removed
    assert item.smiles == "CC(N)Cc1ccccc1"
    assert checker.vocab.decode(item.ids) == SmilesTokenizer().tokenize("CC(N)Cc1ccccc1")
    geometry = checker.check("F/C=C/c1ccccc1")
    assert geometry.ok and geometry.stereo_removed and "/" not in geometry.smiles
    plain = checker.check("CC(N)Cc1ccccc1")
    assert plain.ok and not plain.stereo_removed
    # '@' on an atom that is no stereocentre: RDKit drops it anyway, nothing was removed
    assert not checker.check("C[C@H](C)C").stereo_removed


def test_model_with_stereo_keeps_it():
    checker = _checker(MOSES_LIKE_TOKENS + STEREO_TOKENS, stereo=True)
    item = checker.check(AMPHETAMINE)
    assert item.ok and not item.stereo_removed and "@" in item.smiles


@pytest.mark.parametrize(
    "text, reason, detail",
    [
        ("", EMPTY, ""),
        ("   ", EMPTY, ""),
        ("C1CC", UNPARSEABLE, ""),
        ("CCP", UNKNOWN_TOKENS, "P"),
        ("ICC[Se]CI", UNKNOWN_TOKENS, "I [Se]"),
        ("C" * 61, TOO_LONG, "61 tokens > 60"),
    ],
)
def test_rejections_have_a_reason_and_detail(text, reason, detail):
    item = _checker().check(text)
    assert not item.ok and item.ids is None
    assert (item.reason, item.detail) == (reason, detail)


def test_unknown_tokens_error_names_them_and_suggests_fine_tuning():
    with pytest.raises(MolgenError) as err:
        _checker().to_ids(["CCO", "CCP"])
    message = str(err.value)
    assert "'CCP'" in message and "never saw: P." in message
    assert "molgen train DATA --from m.pt" in message


def test_to_ids_counts_removed_stereo_and_pads():
    rows, removed = _checker().to_ids([AMPHETAMINE, "CCO", "F/C=C/F"])
    assert removed == 2 and len(rows) == 3
    ids, lengths = pad_ids(rows, pad_id=0)
    assert ids.shape == (3, max(len(r) for r in rows))
    assert lengths.tolist() == [len(r) for r in rows]
    assert int(ids[1, lengths[1] :].abs().sum()) == 0


def test_warning_names_the_count_and_the_reason():
    assert "from 1 input molecule:" in stereo_warning(1, _checker())
    assert "from 3 input molecules:" in stereo_warning(3, _checker())
    assert "no stereo token" in stereo_warning(1, _checker())
    by_config = _checker(MOSES_LIKE_TOKENS + STEREO_TOKENS, stereo=False)
    assert "trained without stereochemistry" in stereo_warning(1, by_config)


def test_model_to_ids_and_encode_warn_once(tmp_path, capsys):
    model = load_model(random_model_file(tmp_path / "m.pt"))
    model.encode([AMPHETAMINE, "F/C=C/c1ccccc1", "CCO"], batch_size=1)  # three batches
    err = capsys.readouterr().err
    assert err.count("Warning:") == 1 and "from 2 input molecules" in err
    model.to_ids([AMPHETAMINE])  # later calls on the same model stay quiet
    assert capsys.readouterr().err == ""
    fresh = load_model(random_model_file(tmp_path / "m2.pt"))
    fresh.to_ids(["CCO"])
    assert capsys.readouterr().err == ""  # nothing removed, nothing said


def test_model_to_ids_rejects_unknown_atoms(tmp_path):
    path = random_model_file(tmp_path / "m.pt")
    with pytest.raises(MolgenError, match=r"never saw: P\..*--from .*m\.pt"):
        load_model(path).to_ids(["CCP"])
