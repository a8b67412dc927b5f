"""The bundled pretrained model: a safe plain-dict file that the default commands use."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch

from molgen.model import MODEL_FORMAT
from molgen.sampling import DEFAULT_MODEL
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_bundled_model_is_a_plain_small_spcauchy_model() -> None:
    content = torch.load(DEFAULT_MODEL, map_location="cpu", weights_only=True)
    assert content["format"] == MODEL_FORMAT
    assert content["config"]["latent"] == "spcauchy"
    assert content["training"]["data_source"].endswith("train.csv.gz")
    assert DEFAULT_MODEL.stat().st_size < 20 * 2**20


def test_sample_without_model_uses_the_bundled_one(tmp_path) -> None:
    out = tmp_path / "s.csv"
    r = run_cli("sample", "-n", "50", "--seed", "1", "-o", out)
    assert r.code == 0, r.stderr[-2000:]
    rows = pd.read_csv(out)
    assert len(rows) == 50 and rows["valid"].all()  # valid molecules only, by default
    single_pass = float(re.search(r"single-pass validity ([0-9.]+)", r.stdout).group(1))
    assert single_pass >= 0.5  # the 10k-sample figure: data/pretrained/README.md
    raw = tmp_path / "raw.csv"
    r = run_cli("sample", "-n", "50", "--seed", "1", "-o", raw, "--keep-invalid")
    assert r.code == 0, r.stderr[-2000:]
    assert pd.read_csv(raw)["valid"].mean() >= 0.5


def test_interpolate_without_model_uses_the_bundled_one(tmp_path) -> None:
    out = tmp_path / "i.csv"
    r = run_cli("interpolate", "CC(=O)Nc1ccc(O)cc1", "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "-o", out)
    assert r.code == 0, r.stderr[-2000:]
    rows = pd.read_csv(out)
    assert len(rows) == 10
    assert rows["valid"].mean() >= 0.5


def test_the_syntax_mask_lifts_single_pass_validity(tmp_path) -> None:
    """--no-syntax shows the raw decoder; the default mask makes more first decodings valid."""
    rates = {}
    for flag in ("--syntax", "--no-syntax"):
        out = tmp_path / f"{flag}.csv"
        r = run_cli("sample", "-n", "400", "--seed", "3", "--keep-invalid", flag, "-o", out)
        assert r.code == 0, r.stderr[-2000:]
        rates[flag] = pd.read_csv(out)["valid"].mean()
    assert rates["--syntax"] > rates["--no-syntax"]
