"""`molgen train --from`: transfer learning from a parent model, and what `--resume` accepts."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from molgen.tokenizer import Vocabulary
from tests.conftest import TEST_DATA, run_cli

pytestmark = pytest.mark.integration
DATA = TEST_DATA / "tiny_train.csv"
# Stereo, charges and phosphorus: tokens a MOSES-trained parent never saw.
OWN = [
    "C[C@H](N)Cc1ccccc1",
    "C[C@@H](O)c1ccccc1",
    "O=P(O)(O)OCC",
    "C[N+](C)(C)CCO",
    "CC(=O)[O-]",
    "N[C@@H](Cc1ccc(O)cc1)C(=O)O",
    "OC[C@H]1OC(O)[C@H](O)[C@@H](O)[C@@H]1O",
    "CCOP(=O)(OCC)OCC",
]
OWN = OWN * 4  # duplicates are dropped; enough rows for a split


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    out = tmp_path_factory.mktemp("parent")
    r = run_cli("train", DATA, "--out", out, "--preset", "tiny", "--max-steps", "12")
    assert r.code == 0, r.stderr[-2000:]
    return out / "model.pt"


def _own_file(tmp_path):
    path = tmp_path / "own.smi"
    path.write_text("\n".join(OWN + [line for line in DATA.read_text().splitlines()[1:60]]) + "\n")
    return path


def test_from_extends_vocabulary_and_records_parent(parent, tmp_path):
    out = tmp_path / "child"
    r = run_cli(
        "train",
        _own_file(tmp_path),
        "--from",
        parent,
        "--out",
        out,
        "--max-steps",
        "6",
        "--threads",
        "1",
    )
    assert r.code == 0, r.stderr[-2000:]
    assert "finetune preset" in r.stdout
    p = torch.load(parent, weights_only=True)
    c = torch.load(out / "model.pt", weights_only=True)
    old = Vocabulary.from_dict(p["vocabulary"])
    new = Vocabulary.from_dict(c["vocabulary"])
    assert new.tokens[: len(old)] == old.tokens
    assert {"[C@H]", "P", "[O-]", "[N+]"} <= set(new.tokens[len(old) :])
    info = c["training"]["parent"]
    assert info["sha256"] == hashlib.sha256(parent.read_bytes()).hexdigest()
    assert info["vocab_size"] == len(old) and info["init"] == "mean"
    assert c["config"]["encoder_hidden"] == p["config"]["encoder_hidden"]
    assert c["training"]["rejected"]["unknown tokens"] == 0
    # the KL weight starts at the parent's final value: no warm-up from zero
    assert c["training"]["train_config"]["beta_max"] == p["training"]["train_config"]["beta_max"]
    assert c["training"]["train_config"]["beta_warmup_steps"] == 0


def test_from_with_zero_steps_keeps_parent_weights_exactly(parent, tmp_path):
    out = tmp_path / "child0"
    r = run_cli(
        "train",
        DATA,
        "--from",
        parent,
        "--out",
        out,
        "--max-steps",
        "1",
        "--lr",
        "1e-12",
        "--threads",
        "1",
    )
    assert r.code == 0, r.stderr[-2000:]
    p = torch.load(parent, weights_only=True)["state_dict"]
    c = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    for key, value in p.items():
        assert torch.allclose(c[key][: value.shape[0]], value, atol=1e-6), key


def test_from_refuses_architecture_options(parent, tmp_path):
    r = run_cli("train", DATA, "--from", parent, "--out", tmp_path / "x", "--latent-dim", "32")
    assert r.code == 1 and r.stderr.startswith("Error:") and "--latent-dim" in r.stderr


def test_resume_says_where_it_resumes_and_refuses_a_new_architecture(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", DATA, "--out", out, "--preset", "tiny", "--max-steps", "8").code == 0
    r = run_cli("train", "--out", out, "--resume", "--max-steps", "12", "--lr", "0.002")
    assert r.code == 0, r.stderr[-2000:]
    assert "Resuming from" in r.stderr and "step 8" in r.stderr and "epoch" in r.stderr
    saved = torch.load(out / "model.pt", weights_only=True)["training"]["train_config"]
    assert saved["lr"] == 0.002  # an optimisation knob may change on resume
    refused = run_cli("train", "--out", out, "--resume", "--latent-dim", "16")
    assert refused.code == 1 and "--latent-dim" in refused.stderr
    other = tmp_path / "other.smi"
    other.write_text("CCO\nCCN\n")
    refused = run_cli("train", other, "--out", out, "--resume")
    assert refused.code == 1 and "cannot switch" in refused.stderr


def test_train_never_overwrites_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"precious")
    r = run_cli("train", DATA, "--out", tmp_path, "--preset", "tiny", "--max-steps", "2")
    assert r.code == 1 and "not a molgen run" in r.stderr
    assert (tmp_path / "model.pt").read_bytes() == b"precious"


def test_summary_says_when_a_run_is_too_short(tmp_path):
    r = run_cli("train", DATA, "--out", tmp_path / "short", "--preset", "tiny", "--max-steps", "3")
    assert r.code == 0
    assert "Warning:" in r.stderr and "too short" in r.stderr
    summary = torch.load(tmp_path / "short" / "model.pt", weights_only=True)["training"]
    assert summary["final_prior_validity"] < 0.3 and summary["warnings"]
    json.dumps(summary)  # plain types only
