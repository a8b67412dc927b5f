"""The option parsers of ``molgen.cli.params``: what they accept and how they say no."""

from __future__ import annotations

import pytest
import typer

from molgen.cli.params import (
    check_smiles_option,
    choice,
    duration,
    duration_seconds,
    finite,
    integer,
    lightning_devices,
    share,
    torch_device,
)
from molgen.errors import MolgenError


def _refused(parse, text: str) -> str:
    with pytest.raises(typer.BadParameter) as info:
        parse(text)
    return str(info.value)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e309", "abc", "", "0", "1"])
def test_finite_refuses_non_finite_and_out_of_range(text: str) -> None:
    message = _refused(finite(0.0, 1.0, low_open=True, high_open=True), text)
    assert "(0, 1)" in message and (text in message or not text)


def test_finite_accepts_its_range_and_returns_floats() -> None:
    parse = finite(0.0, 1.0, high_open=True)
    assert parse("0") == 0.0 and parse("0.999999999") == 0.999999999
    assert finite()("-1e300") == -1e300
    assert "in [0, 100]" in _refused(finite(0.0, 100.0), "1e308")


def test_integer_names_the_value_and_the_range() -> None:
    parse = integer(1, 10)
    assert parse("3") == 3 and parse("1_0") == 10
    assert "0 is out of range; use a whole number in [1, 10]" in _refused(parse, "0")
    assert "'2.5' is not a whole number" in _refused(parse, "2.5")
    assert ">= 0" in _refused(integer(0, None), "-1")


def test_share_is_a_fraction_or_a_whole_count() -> None:
    train = share(allow_zero=False)
    assert train("0.05") == 0.05 and train("1") == 1.0 and train("20") == 20.0
    for bad in ("0", "-0.1", "2.5", "nan", "inf"):
        assert "(0, 1]" in _refused(train, bad)
    assert share(allow_zero=True)("0") == 0.0


def test_choice_is_case_insensitive_and_lists_the_values() -> None:
    parse = choice("smiles", "selfies")
    assert parse("SELFIES") == "selfies"
    assert "smiles, selfies" in _refused(parse, "inchi")


def test_devices() -> None:
    parse = torch_device()
    assert [parse(d) for d in ("CPU", "auto", "cuda", "cuda:1")] == [
        "cpu",
        "auto",
        "cuda",
        "cuda:1",
    ]
    for bad in ("tpu9", "cuda:", "gpu", "cuda:-1", "mps"):
        _refused(parse, bad)
    _refused(torch_device(allow_index=False), "cuda:0")
    assert [lightning_devices(d) for d in ("auto", "2", "-1", "0,1")] == ["auto", "2", "-1", "0,1"]
    for bad in ("0", "-2", "many", "1.5"):
        _refused(lightning_devices, bad)


def test_durations() -> None:
    assert duration_seconds("90s") == 90 and duration_seconds("1.5h") == 5400
    assert duration_seconds("01:02:03:04") == ((24 + 2) * 60 + 3) * 60 + 4
    assert duration("30m") == "30m"
    for bad in ("forever", "0s", "00:00:00:00", "99999999999d", "1e9s", "-1h"):
        _refused(duration, bad)


def test_check_smiles_option_says_why() -> None:
    assert check_smiles_option(" CCO ", "--around") == "CCO"
    with pytest.raises(MolgenError, match="--around: the SMILES has 3000 characters"):
        check_smiles_option("C" * 3000, "--around")
    with pytest.raises(MolgenError, match="the molecule has 1500 atoms"):
        check_smiles_option("C" * 1500, "--around")
    with pytest.raises(MolgenError, match="not a valid SMILES"):
        check_smiles_option("C1CC", "SMILES_A")
    with pytest.raises(MolgenError, match="empty"):
        check_smiles_option("  ", "--around")
