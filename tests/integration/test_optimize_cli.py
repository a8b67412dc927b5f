"""``molgen optimize`` and ``molgen benchmark goal-directed`` as a user runs them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from rdkit import Chem
from rdkit.Chem import QED

pytestmark = pytest.mark.integration


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("objective", "needle"),
    [
        ("potency", "unknown objective"),
        ("guacamol:not_a_benchmark", "osimertinib_mpo"),
        ("similarity:C1CC", "similarity"),
    ],
)
def test_bad_objective_is_one_error_line_before_any_work(cli, tmp_path, objective, needle):
    out = tmp_path / "res.csv"
    result = cli("optimize", "--objective", objective, "-o", out)
    assert needle in _error_line(result)
    assert not out.exists()


def test_malformed_toml_and_unimportable_function(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('aggregate = "geometric"\n[[component]\nobjective = "qed"\n')
    assert "line 2" in _error_line(cli("optimize", "--objective", bad))
    broken = tmp_path / "mine.py"
    broken.write_text("def score(smiles):\n    return [1.0 for s in smiles\n")
    assert "mine.py" in _error_line(cli("optimize", "--objective", f"{broken}:score"))
    assert "no_such" in _error_line(
        cli("optimize", "--objective", f"{tmp_path / 'no_such.py'}:score")
    )


def test_min_similarity_needs_similar_to(cli):
    assert "--similar-to" in _error_line(
        cli("optimize", "--objective", "qed", "--min-similarity", "0.4")
    )


def test_qed_run_writes_csv_curve_grid_and_true_scores(cli, tmp_path):
    out = tmp_path / "res.csv"
    result = cli(
        "optimize", "--objective", "qed", "--budget", "60", "-n", "5", "-o", out,
        "--image", tmp_path / "best.png", "--offspring", "30",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 60
    assert [int(r["call"]) for r in rows] == list(range(1, 61))
    assert len({r["smiles"] for r in rows}) == 60  # each molecule scored once
    for r in rows:
        mol = Chem.MolFromSmiles(r["smiles"])
        assert mol is not None
        assert float(r["score"]) == pytest.approx(QED.qed(mol), abs=1e-5)
    assert (tmp_path / "res_curve.png").stat().st_size > 0
    assert (tmp_path / "best.png").stat().st_size > 0
    summary = json.loads((tmp_path / "res_summary.json").read_text())
    assert summary["stats"]["calls"] == 60
    best = max(float(r["score"]) for r in rows)
    assert summary["top"][0]["score"] == pytest.approx(best, abs=1e-5)
    table = result.stdout.splitlines()
    assert table[0].split()[:2] == ["rank", "score"] and len(table) == 6
    assert "60 calls" in result.stderr


def test_retraining_rounds_are_reported_and_the_model_file_is_untouched(cli, tmp_path):
    from molgen.cli.optimize import DEFAULT_RETRAIN_EVERY
    from molgen.retrain import RetrainConfig
    from molgen.sampling import DEFAULT_MODEL

    assert RetrainConfig().every == DEFAULT_RETRAIN_EVERY  # --help keeps its own copy
    before = Path(DEFAULT_MODEL).read_bytes()
    out = tmp_path / "res.csv"
    result = cli(
        "optimize", "--objective", "qed", "--budget", "80", "--offspring", "20",
        "--retrain-every", "40", "-o", out,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert "model fine-tuned on the best molecules 1 times" in result.stderr
    summary = json.loads((tmp_path / "res_summary.json").read_text())
    assert summary["stats"]["retrain_rounds"] == 1
    assert summary["config"]["retrain"]["every"] == 40
    assert len(list(csv.DictReader(out.open()))) == 80
    assert Path(DEFAULT_MODEL).read_bytes() == before
    bad = cli("optimize", "--objective", "qed", "--retrain-every", "-5")
    assert bad.code != 0 and "Error" in bad.stderr


def test_user_function_failing_on_some_molecules_is_counted(cli, tmp_path):
    fn = tmp_path / "flaky.py"
    fn.write_text(
        "import zlib\n"
        "def score(smiles):\n"
        "    out = []\n"
        "    for s in smiles:\n"
        "        if zlib.crc32(s.encode()) % 10 == 0:\n"
        "            raise ValueError('docking failed')\n"
        "        out.append(len(s))\n"
        "    return out\n"
    )
    out = tmp_path / "res.csv"
    result = cli(
        "optimize", "--objective", f"{fn}:score", "--budget", "80", "-o", out,
        "--offspring", "40",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    failed = [r for r in rows if r["score"] == ""]
    assert failed and all("docking failed" in r["error"] for r in failed)
    assert len(failed) < len(rows) / 2
    assert f"{len(failed)} molecules failed to score" in result.stderr


def test_goal_directed_benchmark_unknown_name_and_tiny_run(cli, tmp_path):
    assert "celecoxib_rediscovery" in _error_line(
        cli("benchmark", "goal-directed", "--only", "nope", "--json", tmp_path / "g.json")
    )
    out = tmp_path / "g.json"
    result = cli(
        "benchmark", "goal-directed", "--suite", "v2", "--only", "albuterol_similarity",
        "--budget", "60", "--json", out,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    payload = json.loads(out.read_text())
    assert payload["benchmark_suite_version"] == "v2"
    (res,) = payload["results"]
    assert res["benchmark_name"] == "Albuterol similarity"
    assert res["number_scoring_function_calls"] <= 60 + 100  # the budget, plus guacamol's rescoring
    assert 0.0 < res["score"] <= 1.0
    assert "Albuterol similarity" in result.stdout and "total" in result.stdout


def test_paths_must_differ(cli, tmp_path: Path):
    out = tmp_path / "x.png"
    line = _error_line(cli("optimize", "--objective", "qed", "--plot", out, "--image", out))
    assert "two outputs" in line
