"""Hostile and careless input (issue #16): every command fails with one ``Error:`` line.

The table runs each invocation through the real entry point (``molgen.cli.main``) and checks what
a user sees: a non-zero exit code (1), exactly one line starting with ``Error:`` on stderr and no
traceback, an answer within a time limit, and every file that existed before the command exactly
as it was (the temporary folder is hashed before and after). Almost all cases fail on option
validation before any model is loaded; the few whose input used to crash RDKit (a segmentation
fault kills the test process too) run in a subprocess.

The SMILES size bounds (``molgen.data.MAX_SMILES_CHARS``, ``MAX_ATOMS``) come from measurements
(see the comment above them in ``molgen/data.py``): RDKit's canonical SMILES writer
(``RDKit::Canon::dfsBuildStack``, seen in gdb 18,100 frames deep) recurses once per atom of a
chain and overflows the 8 MiB stack at ~19,000 atoms (18,000 pass). At the bounds, every shape
tried parses in a 256 KiB stack and canonicalizes in 512 KiB; ``test_bounds_leave_stack_margin``
keeps that margin checked with a 1 MiB stack.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEST_DATA = REPO / "tests" / "data"
pytestmark = pytest.mark.integration

BUNDLED_MODEL = REPO / "data" / "pretrained" / "moses-spcauchy-small.pt"
LONG_CHAIN = "C" * 30_000  # crashed RDKit (segmentation fault) before the bounds
IN_PROCESS_LIMIT_S = 30.0
SUBPROCESS_LIMIT_S = 90.0


@dataclass
class Case:
    """One hostile invocation: ``args`` with ``{tmp}`` for the work folder.

    Attributes:
        id: Test id.
        args: Command-line arguments.
        expect: Text the ``Error:`` line must contain (the option's name, say); "" for any.
        subprocess: Run in a separate process (input that used to crash the interpreter).
        nonroot: Needs file permissions to bite (root reads and writes everything).
        needs: A command that must exist (``encode``, ``score``: added by another change).
    """

    id: str
    args: list[str]
    expect: str = ""
    subprocess: bool = False
    nonroot: bool = False
    needs: str = ""
    extra: dict = field(default_factory=dict)


def C(id: str, *args: str, expect: str = "", **kw) -> Case:  # noqa: A002, N802
    return Case(id, list(args), expect, **kw)


RUN = ("--out", "{tmp}/run")  # train options fail before the run folder is touched
MOLS = "{tmp}/mols.smi"
MODEL = "{tmp}/model.pt"

# fmt: off
CASES: list[Case] = [
    # ---- prepare -------------------------------------------------------------------------
    C("prepare-out-is-a-file", "prepare", MOLS, "--out", "{tmp}/results.csv", expect="--out"),
    C("prepare-overwrites-own-input", "prepare", "{tmp}/data/train.smi", "--out", "{tmp}/data",
      expect="input"),
    C("prepare-missing-file", "prepare", "{tmp}/nothing.smi", expect="does not exist"),
    C("prepare-folder-as-file", "prepare", "{tmp}/folder", expect="folder"),
    C("prepare-binary-file", "prepare", "{tmp}/binary.smi", expect="binary"),
    C("prepare-unreadable", "prepare", "{tmp}/unreadable.smi", expect="permission",
      nonroot=True),
    C("prepare-max-length-0", "prepare", MOLS, "--max-length", "0", expect="--max-length"),
    C("prepare-valid-negative", "prepare", MOLS, "--valid-fraction", "-0.1",
      expect="--valid-fraction"),
    C("prepare-valid-fractional-count", "prepare", MOLS, "--valid-fraction", "2.5",
      expect="--valid-fraction"),
    C("prepare-test-nan", "prepare", MOLS, "--test-fraction", "nan", expect="--test-fraction"),
    C("prepare-representation", "prepare", MOLS, "--representation", "inchi",
      expect="--representation"),
    C("prepare-augment-negative", "prepare", MOLS, "--augment", "-1", expect="--augment"),
    C("prepare-jobs-negative", "prepare", MOLS, "--jobs", "-2", expect="--jobs"),
    C("prepare-sep", "prepare", MOLS, "--sep", "::", expect="--sep"),
    C("prepare-seed-negative", "prepare", MOLS, "--seed", "-1", expect="--seed"),
    C("prepare-max-chars-0", "prepare", MOLS, "--max-chars", "0", expect="--max-chars"),
    C("prepare-no-such-column", "prepare", MOLS, "--smiles-column", "nope", expect="nope"),
    C("prepare-unknown-option", "prepare", MOLS, "--bogus", expect="--bogus"),
    # ---- train: option validation before any work ----------------------------------------
    C("train-lr-negative", "train", MOLS, *RUN, "--lr", "-1", expect="--lr"),
    C("train-lr-nan", "train", MOLS, *RUN, "--lr", "nan", expect="--lr"),
    C("train-batch-size-0", "train", MOLS, *RUN, "--batch-size", "0", expect="--batch-size"),
    C("train-dropout-2", "train", MOLS, *RUN, "--dropout", "2", expect="--dropout"),
    C("train-embedding-dim-0", "train", MOLS, *RUN, "--embedding-dim", "0",
      expect="--embedding-dim"),
    C("train-devices-0", "train", MOLS, *RUN, "--devices", "0", expect="--devices"),
    C("train-precision", "train", MOLS, *RUN, "--precision", "garbage", expect="--precision"),
    C("train-epochs-0", "train", MOLS, *RUN, "--epochs", "0", expect="--epochs"),
    C("train-max-steps-0", "train", MOLS, *RUN, "--max-steps", "0", expect="--max-steps"),
    C("train-word-dropout", "train", MOLS, *RUN, "--word-dropout", "1.5",
      expect="--word-dropout"),
    C("train-beta-max-negative", "train", MOLS, *RUN, "--beta-max", "-1", expect="--beta-max"),
    C("train-encoder-layers-0", "train", MOLS, *RUN, "--encoder-layers", "0",
      expect="--encoder-layers"),
    C("train-decoder-hidden-0", "train", MOLS, *RUN, "--decoder-hidden", "0",
      expect="--decoder-hidden"),
    C("train-valid-fraction-0", "train", MOLS, *RUN, "--valid-fraction", "0",
      expect="--valid-fraction"),
    C("train-max-time-words", "train", MOLS, *RUN, "--max-time", "forever",
      expect="--max-time"),
    C("train-max-time-zero", "train", MOLS, *RUN, "--max-time", "0s", expect="--max-time"),
    C("train-max-time-overflow", "train", MOLS, *RUN, "--max-time", "99999999999d",
      expect="--max-time"),
    C("train-latent", "train", MOLS, *RUN, "--latent", "hyperbolic", expect="--latent"),
    C("train-latent-dim-1", "train", MOLS, *RUN, "--latent-dim", "1", expect="--latent-dim"),
    C("train-preset", "train", MOLS, *RUN, "--preset", "huge", expect="--preset"),
    C("train-accelerator", "train", MOLS, *RUN, "--accelerator", "tpu9",
      expect="--accelerator"),
    C("train-strategy", "train", MOLS, *RUN, "--strategy", "magic", expect="--strategy"),
    C("train-num-nodes-0", "train", MOLS, *RUN, "--num-nodes", "0", expect="--num-nodes"),
    C("train-seed-negative", "train", MOLS, *RUN, "--seed", "-5", expect="--seed"),
    C("train-no-out", "train", MOLS, expect="--out"),
    # ---- sample --------------------------------------------------------------------------
    C("sample-n-0", "sample", "-n", "0", expect="-n"),
    C("sample-n-negative", "sample", "-n", "-5", expect="-n"),
    C("sample-n-words", "sample", "-n", "many", expect="-n"),
    C("sample-temperature-nan", "sample", "--temperature", "nan", expect="--temperature"),
    C("sample-temperature-inf", "sample", "--temperature", "inf", expect="--temperature"),
    C("sample-temperature-1e308", "sample", "--temperature", "1e308", expect="--temperature"),
    C("sample-temperature-negative", "sample", "--temperature", "-1", expect="--temperature"),
    C("sample-rho-1", "sample", "--around", "CCO", "--rho", "1", expect="--rho"),
    C("sample-rho-negative", "sample", "--around", "CCO", "--rho", "-0.1", expect="--rho"),
    C("sample-rho-nan", "sample", "--around", "CCO", "--rho", "nan", expect="--rho"),
    C("sample-batch-size-0", "sample", "--batch-size", "0", expect="--batch-size"),
    C("sample-batch-size-negative", "sample", "--batch-size", "-3", expect="--batch-size"),
    C("sample-max-attempts-negative", "sample", "--max-attempts", "-1",
      expect="--max-attempts"),
    C("sample-device", "sample", "--device", "tpu9", expect="--device"),
    C("sample-seed-negative", "sample", "--seed", "-1", expect="--seed"),
    C("sample-bad-around-keeps-results", "sample", "-n", "5", "--around", "C1CC", "-o",
      "{tmp}/results.csv", expect="--around"),
    C("sample-empty-around", "sample", "--around", " ", expect="--around"),
    C("sample-model-as-output", "sample", MODEL, "-n", "3", "-o", MODEL, expect="-o"),
    C("sample-bundled-model-as-output", "sample", "-n", "3", "-o", str(BUNDLED_MODEL),
      expect="-o"),
    C("sample-output-missing-folder", "sample", "-o", "{tmp}/missing/x.csv", expect="-o"),
    C("sample-output-is-folder", "sample", "-o", "{tmp}/folder", expect="-o"),
    C("sample-output-unwritable", "sample", "-o", "{tmp}/readonly/x.csv", expect="-o",
      nonroot=True),
    C("sample-image-txt", "sample", "--image", "{tmp}/grid.txt", expect="--image"),
    C("sample-image-is-output", "sample", "-o", "{tmp}/same.png", "--image", "{tmp}/same.png",
      expect="--image"),
    C("sample-novel-against-missing", "sample", "--novel-against", "{tmp}/nothing.smi",
      expect="nothing.smi"),
    C("sample-not-a-model", "sample", "{tmp}/results.csv", "-n", "2", expect="results.csv"),
    C("sample-huge-around", "sample", "--around", LONG_CHAIN, expect="--around",
      subprocess=True),
    C("sample-unknown-option", "sample", "--bogus", expect="--bogus"),
    # ---- interpolate ---------------------------------------------------------------------
    C("interpolate-steps-1", "interpolate", "CCO", "CCN", "--steps", "1", expect="--steps"),
    C("interpolate-steps-huge", "interpolate", "CCO", "CCN", "--steps", "10000000",
      expect="--steps"),
    C("interpolate-one-smiles", "interpolate", "CCO", expect="SMILES_A SMILES_B"),
    C("interpolate-four-args", "interpolate", MODEL, "CCO", "CCN", "CCC",
      expect="SMILES_A SMILES_B"),
    C("interpolate-bad-smiles", "interpolate", "C1CC", "CCO", expect="SMILES_A"),
    C("interpolate-model-as-output", "interpolate", MODEL, "CCO", "CCN", "-o", MODEL,
      expect="-o"),
    C("interpolate-image-jpg", "interpolate", "CCO", "CCN", "--image", "{tmp}/path.jpg",
      expect="--image"),
    C("interpolate-device", "interpolate", "CCO", "CCN", "--device", "gpu!", expect="--device"),
    C("interpolate-huge-smiles", "interpolate", LONG_CHAIN, "CCO", expect="SMILES_A",
      subprocess=True),
    C("interpolate-no-args", "interpolate", expect="Missing argument"),
    # ---- evaluate: everything checked before the (long) work -----------------------------
    C("evaluate-no-reference", "evaluate", "--samples", MOLS, expect="--reference"),
    C("evaluate-model-and-samples", "evaluate", MODEL, "--samples", MOLS, "-r", MOLS,
      expect="exactly one"),
    C("evaluate-n-0", "evaluate", "--samples", MOLS, "-r", MOLS, "-n", "0", expect="-n"),
    C("evaluate-temperature-nan", "evaluate", "--samples", MOLS, "-r", MOLS, "--temperature",
      "nan", expect="--temperature"),
    C("evaluate-interp-steps-1", "evaluate", "--samples", MOLS, "-r", MOLS, "--interp-steps",
      "1", expect="--interp-steps"),
    C("evaluate-jobs-0", "evaluate", "--samples", MOLS, "-r", MOLS, "-j", "0", expect="--jobs"),
    C("evaluate-device", "evaluate", MODEL, "-r", MOLS, "--device", "tpu9", expect="--device"),
    C("evaluate-json-is-folder", "evaluate", "--samples", MOLS, "-r", MOLS, "--json",
      "{tmp}/folder", expect="--json"),
    C("evaluate-json-is-input", "evaluate", "--samples", MOLS, "-r", "{tmp}/ref.smi", "--json",
      "{tmp}/ref.smi", expect="--json"),
    C("evaluate-report-is-folder", "evaluate", "--samples", MOLS, "-r", MOLS, "--report",
      "{tmp}/folder", expect="--report"),
    C("evaluate-report-picture-is-folder", "evaluate", "--samples", MOLS, "-r", MOLS,
      "--report", "{tmp}/r.md", expect="--report"),
    C("evaluate-report-is-model", "evaluate", MODEL, "-r", MOLS, "--report", MODEL,
      expect="--report"),
    C("evaluate-json-unwritable", "evaluate", "--samples", MOLS, "-r", MOLS, "--json",
      "{tmp}/readonly/r.json", expect="--json", nonroot=True),
    C("evaluate-cache-dir-is-file", "evaluate", "--samples", MOLS, "-r", MOLS, "--cache-dir",
      "{tmp}/results.csv", expect="--cache-dir"),
    C("evaluate-samples-missing", "evaluate", "--samples", "{tmp}/nothing.smi", "-r", MOLS,
      expect="nothing.smi"),
    # ---- mnist ---------------------------------------------------------------------------
    C("mnist-latent", "mnist", "--latent", "euclid", expect="--latent"),
    C("mnist-dim-0", "mnist", "--dim", "0", expect="--dim"),
    C("mnist-epochs-0", "mnist", "--epochs", "0", expect="--epochs"),
    C("mnist-batch-size-0", "mnist", "--batch-size", "0", expect="--batch-size"),
    C("mnist-lr-negative", "mnist", "--lr", "-1", expect="--lr"),
    C("mnist-lr-inf", "mnist", "--lr", "inf", expect="--lr"),
    C("mnist-device", "mnist", "--device", "tpu9", expect="--device"),
    C("mnist-train-subset-0", "mnist", "--train-subset", "0", expect="--train-subset"),
    C("mnist-ll-samples-0", "mnist", "--ll-samples", "0", expect="--ll-samples"),
    C("mnist-threads-0", "mnist", "--threads", "0", expect="--threads"),
    C("mnist-data-dir-missing", "mnist", "--data-dir", "{tmp}/nothing", "--out", "{tmp}/mn",
      expect="nothing"),
    C("mnist-out-is-file", "mnist", "--out", "{tmp}/results.csv", expect="--out"),
    C("mnist-out-holds-folder", "mnist", "--out", "{tmp}/mnist_out", expect="--out"),
    # ---- latent-demo ---------------------------------------------------------------------
    C("latent-demo-dim-1", "latent-demo", "--dim", "1", expect="--dim"),
    C("latent-demo-dim-huge", "latent-demo", "--dim", "100000", expect="--dim"),
    C("latent-demo-n-0", "latent-demo", "--n", "0", expect="--n"),
    C("latent-demo-samples-0", "latent-demo", "--samples", "0", expect="--samples"),
    C("latent-demo-seed-negative", "latent-demo", "--seed", "-1", expect="--seed"),
    # ---- encode / score (when present) ---------------------------------------------------
    C("encode-no-args", "encode", expect="", needs="encode"),
    C("encode-output-is-input", "encode", MOLS, "-o", MOLS, needs="encode"),
    C("encode-output-suffix", "encode", MOLS, "-o", "{tmp}/enc.txt", needs="encode"),
    C("encode-batch-size-0", "encode", MOLS, "-o", "{tmp}/enc.csv", "--batch-size", "0",
      expect="--batch-size", needs="encode"),
    C("score-samples-0", "score", MOLS, "-o", "{tmp}/sc.csv", "--samples", "0",
      expect="--samples", needs="score"),
    C("score-output-is-input", "score", MOLS, "-o", MOLS, needs="score"),
    # ---- optimize / benchmark goal-directed ----------------------------------------------
    C("optimize-no-objective", "optimize", expect="--objective"),
    C("optimize-unknown-objective", "optimize", "--objective", "potency", expect="objective"),
    C("optimize-missing-profile", "optimize", "--objective", "{tmp}/nothing.toml",
      expect="nothing.toml"),
    C("optimize-budget-0", "optimize", "--objective", "qed", "--budget", "0", expect="--budget"),
    C("optimize-huge-similar-to", "optimize", "--objective", "qed", "--similar-to", LONG_CHAIN,
      expect="--similar-to"),
    C("optimize-output-is-seeds", "optimize", "--objective", "qed", "--seeds", MOLS, "-o", MOLS,
      expect="input"),
    C("optimize-missing-seeds", "optimize", "--objective", "qed", "--seeds", "{tmp}/nothing.smi",
      "-o", "{tmp}/out.csv", expect="nothing.smi"),
    C("optimize-not-a-model", "optimize", MODEL, "--objective", "qed", expect="model.pt"),
    C("benchmark-unknown-benchmark", "benchmark", "goal-directed", "--only", "nope",
      "--json", "{tmp}/g.json", expect="nope"),
    C("benchmark-unknown-suite", "benchmark", "goal-directed", "--suite", "v9", expect="--suite"),
    # ---- the app itself ------------------------------------------------------------------
    C("unknown-command", "bogus", expect="bogus"),
]
# fmt: on


def _files(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and os.access(p, os.R_OK)
    }


def _commands() -> set[str]:
    from molgen.cli import app

    return {c.name or c.callback.__name__ for c in app.registered_commands}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with what a careless user has lying around."""
    lines = (TEST_DATA / "moses_sample.smi").read_text().split()[:20]
    (tmp_path / "mols.smi").write_text("\n".join(lines) + "\n")
    (tmp_path / "ref.smi").write_text("\n".join(lines[:10]) + "\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.smi").write_text("\n".join(lines) + "\n")
    (tmp_path / "results.csv").write_text("smiles,valid\nCCO,True\n")  # a user's earlier results
    (tmp_path / "binary.smi").write_bytes(b"CCO\n\x00\x01\x02\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "r_molecules.png").mkdir()  # where --report r.md would draw its grid
    (tmp_path / "mnist_out" / "results.json").mkdir(parents=True)
    (tmp_path / "model.pt").write_bytes(b"not really a model, and the user's only copy")
    unreadable = tmp_path / "unreadable.smi"
    unreadable.write_text("CCO\n")
    unreadable.chmod(0)
    (tmp_path / "readonly").mkdir()
    (tmp_path / "readonly").chmod(0o555)
    yield tmp_path
    unreadable.chmod(0o644)
    (tmp_path / "readonly").chmod(0o755)


def _run(case: Case, tmp: Path, run_cli) -> tuple[int, str, float]:
    args = [a.replace("{tmp}", str(tmp)) for a in case.args]
    start = time.perf_counter()
    if case.subprocess:
        proc = subprocess.run(
            [sys.executable, str(REPO / "cli.py"), *args],
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_LIMIT_S * 2,
            cwd=tmp,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        return proc.returncode, proc.stderr, time.perf_counter() - start
    old = Path.cwd()
    os.chdir(tmp)
    try:
        result = run_cli(*args)
    finally:
        os.chdir(old)
    return result.code, result.stderr, time.perf_counter() - start


def test_the_table_is_large_and_covers_every_command() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
    covered = {c.args[0] for c in CASES}
    assert _commands() - {"encode", "score"} <= covered, _commands() - covered


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_invocation_fails_cleanly(case: Case, work: Path, cli) -> None:
    if case.nonroot and os.geteuid() == 0:
        pytest.skip("root reads and writes everything: file permissions cannot bite")
    if case.needs and case.needs not in _commands():
        pytest.skip(f"no `molgen {case.needs}` command in this version")
    before = _files(work)
    code, stderr, seconds = _run(case, work, cli)
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert code == 1, f"exit {code}; stderr: {stderr[-2000:]}"
    assert len(errors) == 1, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert case.expect in errors[0], errors[0]
    assert len(errors[0]) < 400, errors[0]  # a message, not the 30,000-character input
    limit = SUBPROCESS_LIMIT_S if case.subprocess else IN_PROCESS_LIMIT_S
    assert seconds < limit, f"took {seconds:.1f} s"
    after = _files(work)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"changed or removed: {changed}"
    leftovers = [n for n in set(after) - set(before) if Path(n).name.startswith(".")]
    assert not leftovers, leftovers


def test_around_with_an_unknown_token_fails_before_any_output(cli) -> None:
    # The bundled model has no P token: the query is encoded before the CSV header is written.
    r = cli("sample", "--around", "CCP", "-n", "3")
    assert r.code == 1 and "never saw: P" in r.stderr, r.stderr[-2000:]
    assert r.stdout == "", r.stdout


# ---- what does not fail: careless input that must still work ------------------------------
def test_help_and_no_arguments_exit_0(cli) -> None:
    for args in ((), ("--help",), ("sample", "--help"), ("train", "--help")):
        r = cli(*args)
        assert r.code == 0, (args, r.stderr)
        assert "Usage" in r.stdout and "Error" not in r.stderr, args


def test_rho_within_1e_9_of_1_samples_close_analogues(cli, tmp_path: Path) -> None:
    out = tmp_path / "analogues.csv"
    r = cli("sample", "-n", "3", "--around", "CC(=O)Nc1ccc(O)cc1", "--rho", "0.999999999",
            "-o", out)  # fmt: skip
    assert r.code == 0, r.stderr[-2000:]
    rows = out.read_text().splitlines()
    assert rows[0] == "smiles,valid,similarity" and len(rows) == 4
    # rho within 1e-9 of 1 puts z on mu: every analogue is the model's own reconstruction
    from molgen.data import canonicalize
    from molgen.sampling import load_model

    expected = canonicalize(load_model().reconstruct(["CC(=O)Nc1ccc(O)cc1"])[0])
    assert {row.split(",")[0] for row in rows[1:]} == {expected}


def test_outputs_get_the_usual_file_mode(cli, tmp_path: Path) -> None:
    # The atomic writers use mkstemp, which creates files readable by the owner only.
    src = tmp_path / "mols.smi"
    src.write_text("\n".join((TEST_DATA / "moses_sample.smi").read_text().split()[:30]) + "\n")
    old = os.umask(0o022)
    try:
        r = cli("prepare", src, "--out", tmp_path / "out")
    finally:
        os.umask(old)
    assert r.code == 0, r.stderr
    assert (tmp_path / "out" / "train.smi").stat().st_mode & 0o777 == 0o644


def test_output_through_a_link_or_to_dev_null(cli, tmp_path: Path) -> None:
    real = tmp_path / "shared" / "path.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "path.csv"
    link.symlink_to(real)
    r = cli("interpolate", "CCO", "CCN", "--steps", "3", "-o", link)
    assert r.code == 0, r.stderr[-2000:]
    assert link.is_symlink() and real.read_text().startswith("step,t,smiles")
    r = cli("interpolate", "CCO", "CCN", "--steps", "3", "-o", os.devnull)
    assert r.code == 0, r.stderr[-2000:]
    assert Path(os.devnull).is_char_device()


def test_a_huge_line_is_a_rejected_row_not_a_crash(tmp_path: Path) -> None:
    src = tmp_path / "big.smi"
    src.write_text("\n".join(["CCO", "c1ccccc1", LONG_CHAIN, "CC(=O)O", "x" * 2_000_000, "CCN"]))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "prepare", str(src), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.perf_counter() - start < SUBPROCESS_LIMIT_S
    rejected = (tmp_path / "o" / "rejected.csv").read_text().splitlines()
    assert rejected[1].startswith("3,CCCC") and "30000 characters > 2000" in rejected[1]
    assert rejected[2].startswith("5,xxxx") and "2000000 characters > 2000" in rejected[2]
    assert all(len(line) < 400 for line in rejected)  # the text is cut, the line number kept
    assert "too long 2" in proc.stdout


def test_every_place_that_parses_user_smiles_refuses_a_huge_one() -> None:
    # In a child process: a regression here is a segmentation fault, not a failed assertion.
    code = f"""
from molgen import metrics
from molgen.data import canonicalize, parse_smiles, smiles_size_problem, MAX_ATOMS
from molgen.evaluate import _too_long_lines
long, wide = {LONG_CHAIN!r}, "C" * (MAX_ATOMS + 1)
assert smiles_size_problem(long) == "30000 characters > 2000"
for s in (long, wide):
    assert canonicalize(s) is None and parse_smiles(s) is None and metrics.to_mol(s) is None
assert metrics.canonical_smiles(long) is None
assert _too_long_lines(["CCO", long], [1, 2], drop=False) == (["CCO", ""], [2])
assert _too_long_lines(["CCO", long], [1, 2], drop=True) == (["CCO"], [2])
assert canonicalize("C" * MAX_ATOMS) == "C" * MAX_ATOMS
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_bounds_leave_stack_margin() -> None:
    """At MAX_SMILES_CHARS / MAX_ATOMS RDKit works within 1 MiB of stack (8x under the default)."""
    code = """
from rdkit import Chem
from molgen.data import MAX_ATOMS, MAX_SMILES_CHARS, canonicalize
n = MAX_SMILES_CHARS
shapes = [
    "C" * MAX_ATOMS,                                   # the deepest recursion: a chain
    "C(" * 666 + "C" + ")" * 666,                      # nested branches, 1999 characters
    "c1ccc(cc1)" * (MAX_ATOMS // 6),                   # a chain of rings
]
for s in shapes:
    assert canonicalize(s, largest_fragment=False) is not None, s[:20]
for s in ("C" * n, "C(" * (n // 3) + "C" + ")" * (n // 3), ".".join(["C"] * (n // 2))):
    Chem.MolFromSmiles(s[:n])                        # parsing at the character bound
print("ok")
"""
    import resource

    def small_stack() -> None:
        resource.setrlimit(resource.RLIMIT_STACK, (1 << 20, 1 << 20))

    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
        preexec_fn=small_stack,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr)


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "prepared"  # the bundled MOSES set: a minute of work, interrupted
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "cli.py"), "prepare", "--no-cache", "-j", "2", "--out", out],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:  # until the worker pool runs
        if not children.exists() or children.read_text().strip():
            break
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines() == ["Interrupted."], stderr[-2000:]
    assert not (out / "train.smi").exists()


def test_ctrl_c_in_training_says_how_to_resume(tmp_path: Path) -> None:
    import importlib

    app_module = importlib.import_module("molgen.cli.app")  # the module, not the Typer app

    run = tmp_path / "run"
    app_module.set_run_dir(run)
    try:
        assert "nothing to resume" in app_module.interrupt_message()
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "interrupted.ckpt").write_bytes(b"")
        message = app_module.interrupt_message()
    finally:
        app_module.set_run_dir(None)
    assert message.count("\n") == 0
    assert str(run / "checkpoints" / "interrupted.ckpt") in message
    assert f"molgen train --out {run} --resume" in message
    assert app_module.interrupt_message() == "Interrupted."


@pytest.mark.slow
def test_ctrl_c_during_training_end_to_end(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "cli.py"), "train", str(TEST_DATA / "tiny_train.csv"),
         "--preset", "tiny", "--max-steps", "100000", "--epochs", "100000", "--max-time", "1h",
         "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and not list((run / "checkpoints").glob("*.ckpt")):
        time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert "interrupted.ckpt" in last and "--resume" in last, stderr[-2000:]
    assert "Traceback" not in stderr
    shutil.rmtree(run, ignore_errors=True)
