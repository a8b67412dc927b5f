"""molgen.objectives: built-ins, transforms, TOML profiles, user functions, parallel scoring."""

from __future__ import annotations

import math
import textwrap
import warnings

import numpy as np
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import QED, Crippen, Descriptors, rdFingerprintGenerator

from molgen.errors import MolgenError
from molgen.objectives import (
    ParallelScorer,
    ScoreRecord,
    available_objectives,
    build_objective,
    per_molecule,
    register_objective,
)
from molgen.objectives.base import BUILTINS
from molgen.objectives.builtins import sascorer
from molgen.objectives.transforms import available_transforms, make_transform

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
IBUPROFEN = "CC(C)Cc1ccc(C(C)C(=O)O)cc1"
NITROBENZENE = "O=[N+]([O-])c1ccccc1"
GLYCEROL = "OCC(O)CO"  # Crippen logP -1.67
CELECOXIB = "CC1=CC=C(C=C1)C1=CC(=NN1C1=CC=C(C=C1)S(N)(=O)=O)C(F)(F)F"
MOLS = [ASPIRIN, IBUPROFEN, "c1ccccc1", "CCO", "C1CCCCCCC1"]


def _mol(smiles):
    return Chem.MolFromSmiles(smiles)


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def _transform(**table):
    return make_transform(table, "test")


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------


def test_sigmoid_matches_reinvent_formula():
    f = _transform(type="sigmoid", low=0, high=10, k=0.5)
    # 1 / (1 + 10 ** (-10 k (x - 5) / 10)): x=6 -> 1 / (1 + 10 ** -0.5)
    np.testing.assert_allclose(
        f(np.array([5.0, 6.0, 4.0, 15.0])),
        [0.5, 0.7597469266, 0.2402530734, 1 / (1 + 1e-5)],
        rtol=1e-9,
    )
    r = _transform(type="reverse_sigmoid", low=0, high=10, k=0.5)
    np.testing.assert_allclose(r(np.array([5.0, 6.0])), [0.5, 1 - 0.7597469266], rtol=1e-9)


def test_sigmoid_with_low_equal_high_is_a_hard_step():
    f = _transform(type="sigmoid", low=2, high=2, k=1)
    np.testing.assert_array_equal(f(np.array([1.0, 2.0, 3.0])), [0.0, 0.0, 1.0])


def test_double_sigmoid_matches_reinvent4_formula():
    f = _transform(type="double_sigmoid", low=200, high=450, coef_div=500, coef_si=20, coef_se=20)
    # slope 20/500 = 0.04 per unit on both sides; 0.5 at low and high, ~1 at the midpoint
    np.testing.assert_allclose(
        f(np.array([200.0, 450.0, 325.0, 150.0, 500.0])),
        [0.5, 0.5, 1 - 1 / (1 + 1e5), 1 / 101, 1 - 1 / 1.01],
        rtol=1e-9,
    )
    defaults = _transform(type="double_sigmoid", low=0, high=10)  # coef 100/150/150
    assert defaults(np.array([0.0]))[0] == pytest.approx(0.5)
    assert defaults(np.array([-1.0]))[0] == pytest.approx(1 / (1 + 10**1.5))


def test_gaussian_steps_and_decay():
    np.testing.assert_allclose(
        _transform(type="gaussian", mu=2, sigma=1)(np.array([2.0, 3.0, 0.0])),
        [1.0, math.exp(-0.5), math.exp(-2)],
    )
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(_transform(type="step", low=1, high=3)(x), [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(_transform(type="left_step", low=2)(x), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(_transform(type="right_step", high=2)(x), [0, 0, 1, 1, 1])
    np.testing.assert_allclose(
        _transform(type="exponential_decay", k=1)(np.array([-1.0, 0.0, 1.0])),
        [1.0, 1.0, math.exp(-1)],
    )


@pytest.mark.parametrize(
    ("table", "direction"),
    [
        ({"type": "sigmoid", "low": 0, "high": 4, "k": 0.25}, 1),
        ({"type": "reverse_sigmoid", "low": 0, "high": 4, "k": 0.25}, -1),
        ({"type": "double_sigmoid", "low": -1, "high": 1}, 0),
        ({"type": "gaussian", "mu": 0, "sigma": 2}, 0),
        ({"type": "exponential_decay", "k": 0.1}, -1),
    ],
)
def test_transforms_are_in_unit_range_and_monotone_without_overflow(table, direction):
    x = np.concatenate([[-1e6, -1e3], np.linspace(-10, 10, 201), [1e3, 1e6]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings at extreme inputs
        y = _transform(**table)(x)
    assert np.all((y >= 0) & (y <= 1))
    if direction:
        assert np.all(np.diff(y) * direction >= 0)
    else:  # a bump: rises to a maximum, then falls
        top = int(np.argmax(y))
        assert np.all(np.diff(y[: top + 1]) >= 0) and np.all(np.diff(y[top:]) <= 0)


def test_every_registered_transform_is_covered():
    assert set(available_transforms()) == {
        "sigmoid",
        "reverse_sigmoid",
        "double_sigmoid",
        "gaussian",
        "step",
        "left_step",
        "right_step",
        "exponential_decay",
    }


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"type": "sigmoidal"}, "unknown transform type 'sigmoidal'"),
        ({"low": 1}, "unknown transform type None"),
        ({"type": "sigmoid", "low": 0, "high": 1}, "missing parameter(s) ['k']"),
        ({"type": "step", "low": 0, "high": 1, "k": 2}, "unknown parameter(s) ['k']"),
        ({"type": "sigmoid", "low": "a", "high": 1, "k": 1}, "low must be a finite number"),
        ({"type": "sigmoid", "low": 0, "high": 1, "k": -1}, "k (-1.0) must be > 0"),
        ({"type": "step", "low": 3, "high": 1}, "low (3.0) must be <= high (1.0)"),
        ({"type": "gaussian", "mu": 0, "sigma": 0}, "sigma must be > 0"),
        ({"type": "double_sigmoid", "low": 0, "high": 1, "coef_div": 0}, "coef_div must be > 0"),
    ],
)
def test_bad_transforms_are_rejected(table, message):
    with pytest.raises(MolgenError) as err:
        make_transform(table, "component 2 (QED)")
    assert message in str(err.value) and "component 2 (QED)" in str(err.value)


# ---------------------------------------------------------------------------------------------
# Built-ins
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fn"),
    [
        ("qed", QED.qed),
        ("logp", Crippen.MolLogP),
        ("tpsa", Descriptors.TPSA),
        ("mw", Descriptors.MolWt),
        ("sa", lambda m: sascorer().calculateScore(m)),
    ],
)
def test_builtins_equal_rdkit(spec, fn):
    records = build_objective(spec).score(MOLS)
    for smiles, rec in zip(MOLS, records, strict=True):
        assert rec.score == pytest.approx(fn(_mol(smiles)))
        assert rec.raw == rec.transformed == {spec: rec.score}
        assert rec.error is None


def test_sa_is_between_1_and_10_and_harder_for_complex_molecules():
    easy, hard = (r.score for r in build_objective("sa").score(["CCO", CELECOXIB]))
    assert 1 <= easy < hard <= 10


def test_plogp_is_logp_minus_sa_minus_ring_penalty():
    sa = sascorer().calculateScore
    for smiles, penalty in [(ASPIRIN, 0), ("C1CCCCCCC1", 2)]:  # cyclooctane: ring of 8
        mol = _mol(smiles)
        expected = Crippen.MolLogP(mol) - sa(mol) - penalty
        assert build_objective("plogp").score([smiles])[0].score == pytest.approx(expected)


def test_unparsable_and_odd_inputs_are_failures_not_errors():
    records = build_objective("qed").score(["C1CC", "", "   ", None, "CCO"])  # type: ignore[list-item]
    assert [r.score is None for r in records] == [True, True, True, True, False]
    assert records[0].error == "unparsable SMILES"
    assert records[0].raw == {"qed": None}


def test_similarity_and_smarts():
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    expected = DataStructs.TanimotoSimilarity(
        gen.GetFingerprint(_mol(ASPIRIN)), gen.GetFingerprint(_mol(IBUPROFEN))
    )
    same, other = build_objective(f"similarity:{ASPIRIN}").score([ASPIRIN, IBUPROFEN])
    assert same.score == 1.0 and other.score == pytest.approx(expected)
    nitro = build_objective("smarts:[N+](=O)[O-]")
    assert [r.score for r in nitro.score([NITROBENZENE, ASPIRIN])] == [1.0, 0.0]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("similarity:C1CC", "'C1CC' is not a valid SMILES"),
        ("smarts:[N+(", "is not a valid SMARTS"),
        ("similarity", "needs an argument: similarity:SMILES"),
        ("qed:x", "takes no argument"),
        ("qedd", "unknown objective 'qedd'; use one of guacamol:NAME, logp"),
    ],
)
def test_builtin_build_errors(spec, message):
    with pytest.raises(MolgenError, match=None) as err:
        build_objective(spec)
    assert message in str(err.value)


def test_register_objective_adds_a_builtin():
    @register_objective("heavy_atoms_test")
    def _heavy():
        return per_molecule(lambda mol: mol.GetNumHeavyAtoms())

    try:
        assert "heavy_atoms_test" in available_objectives()
        assert build_objective("heavy_atoms_test").score(["CCO"])[0].score == 3.0
    finally:
        BUILTINS.pop("heavy_atoms_test")


def test_guacamol_objective_and_unknown_name():
    records = build_objective("guacamol:celecoxib_rediscovery").score([CELECOXIB, ASPIRIN, "C1CC"])
    assert records[0].score == pytest.approx(1.0)
    assert 0 <= records[1].score < 0.5
    assert records[2].score is None and records[2].error == "unparsable SMILES"
    with pytest.raises(MolgenError) as err:
        build_objective("guacamol:celecoxib")
    for name in ("celecoxib_rediscovery", "osimertinib_mpo", "median_molecules_1", "deco_hop"):
        assert name in str(err.value)


# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------

PROFILE = """
aggregate = "{aggregate}"
[[component]]
objective = "qed"
weight = 2
[[component]]
objective = "logp"
name = "LogP"
transform = {{ type = "sigmoid", low = 0, high = 4, k = 0.5 }}
"""


@pytest.mark.parametrize("aggregate", ["geometric", "arithmetic"])
def test_profile_aggregates(tmp_path, aggregate):
    path = _write(tmp_path / "p.toml", PROFILE.format(aggregate=aggregate))
    objective = build_objective(str(path))
    assert objective.component_names == ["qed", "LogP"]
    for smiles, rec in zip(MOLS, objective.score(MOLS), strict=True):
        q, logp = QED.qed(_mol(smiles)), Crippen.MolLogP(_mol(smiles))
        t = 1 / (1 + 10 ** (-10 * 0.5 * (logp - 2) / 4))
        assert rec.raw == {"qed": pytest.approx(q), "LogP": pytest.approx(logp)}
        assert rec.transformed == {"qed": pytest.approx(q), "LogP": pytest.approx(t)}
        expected = (q**2 * t) ** (1 / 3) if aggregate == "geometric" else (2 * q + t) / 3
        assert rec.score == pytest.approx(expected)
    failed = objective.score(["C1CC"])[0]
    assert failed.score is None and failed.transformed == {"qed": None, "LogP": None}


def test_geometric_mean_is_zero_when_a_component_is_zero(tmp_path):
    text = '[[component]]\nobjective = "qed"\n[[component]]\nobjective = "smarts:c1ccccc1"\n'
    geo = build_objective(str(_write(tmp_path / "g.toml", text)))
    ari = build_objective(str(_write(tmp_path / "a.toml", 'aggregate = "arithmetic"\n' + text)))
    assert geo.score(["CCO"])[0].score == 0.0
    assert ari.score(["CCO"])[0].score == pytest.approx(QED.qed(_mol("CCO")) / 2)


def test_filters_veto_without_entering_the_mean(tmp_path):
    path = _write(
        tmp_path / "f.toml",
        """
        [[component]]
        objective = "qed"
        [[component]]
        objective = "smarts:[N+](=O)[O-]"
        name = "no_nitro"
        filter = true
        transform = { type = "left_step", low = 0.5 }
        """,
    )
    nitro, aspirin = build_objective(str(path)).score([NITROBENZENE, ASPIRIN])
    assert nitro.score == 0.0 and nitro.transformed["no_nitro"] == 0.0
    assert aspirin.score == pytest.approx(QED.qed(_mol(ASPIRIN)))  # the filter is not averaged
    assert aspirin.raw["no_nitro"] == 0.0 and aspirin.transformed["no_nitro"] == 1.0


def test_failed_component_fails_the_molecule_and_negative_geometric(tmp_path):
    geo = build_objective(str(_write(tmp_path / "n.toml", PROFILE_NO_TRANSFORM)))
    bad, neg, ok = geo.score(["C1CC", GLYCEROL, ASPIRIN])
    assert bad.score is None and bad.error == "qed: unparsable SMILES"
    assert bad.raw == {"qed": None, "logp": None}
    assert neg.score is None and "negative value in a geometric mean" in neg.error
    assert ok.score is not None
    text = 'aggregate = "arithmetic"\n' + PROFILE_NO_TRANSFORM
    ari = build_objective(str(_write(tmp_path / "a.toml", text)))
    q, logp = QED.qed(_mol(GLYCEROL)), Crippen.MolLogP(_mol(GLYCEROL))
    assert ari.score([GLYCEROL])[0].score == pytest.approx((q + logp) / 2)


PROFILE_NO_TRANSFORM = '[[component]]\nobjective = "qed"\n[[component]]\nobjective = "logp"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('aggregate = "geometric"\n[[component]\nobjective = "qed"\n', "line 2"),
        ('colour = "red"\n[[component]]\nobjective = "qed"\n', "unknown key(s) ['colour']"),
        ('[[component]]\nobjective = "qed"\nwieght = 2\n', "component 1: unknown key(s)"),
        ('[[component]]\nobjective = "qed"\ntransform = { type = "sigmoidal" }\n', "sigmoidal"),
        (
            '[[component]]\nobjective = "qed"\nname = "Q"\ntransform = { type = "step", low = 1 }',
            "component 1 (Q): transform 'step' has missing parameter(s) ['high']",
        ),
        ('[[component]]\nobjective = "qed"\nweight = 0\n', "'weight' must be a finite number > 0"),
        ('[[component]]\nobjective = "qed"\nweight = -1.5\n', "'weight' must be"),
        ('[[component]]\nobjective = "qed"\nweight = "1"\n', "'weight' must be"),
        (
            '[[component]]\nobjective = "qed"\n[[component]]\nobjective = "qed"\n',
            "names must be unique; repeated: ['qed']",
        ),
        ('aggregate = "geometric"\n', "needs at least one [[component]]"),
        ("component = []\n", "needs at least one [[component]]"),
        ('[[component]]\nobjective = "other.toml"\n', "cannot be another profile"),
        ('[[component]]\nobjective = "qed"\nfilter = true\n', "not a filter"),
        ('aggregate = "median"\n[[component]]\nobjective = "qed"\n', "aggregate must be one"),
        ('[[component]]\nobjective = "qedd"\n', "component 1 (qedd): unknown objective 'qedd'"),
        ('[[component]]\nname = "x"\n', "'objective' must be a non-empty string"),
    ],
)
def test_profile_errors(tmp_path, text, message):
    path = _write(tmp_path / "bad.toml", text)
    with pytest.raises(MolgenError) as err:
        build_objective(str(path))
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_profile(tmp_path):
    with pytest.raises(MolgenError, match="does not exist"):
        build_objective(str(tmp_path / "missing.toml"))


# ---------------------------------------------------------------------------------------------
# User functions
# ---------------------------------------------------------------------------------------------

USER_FILE = """
from dataclasses import dataclass


@dataclass
class Config:  # a dataclass needs its module in sys.modules
    scale: float = 1.0


def no_nitrogen(smiles):
    out = []
    for s in smiles:
        if "N" in s:
            raise ValueError(f"nitrogen in {s}")
        out.append(len(s) * Config().scale)
    return out


def nan_for_oxygen(smiles):
    return [float("nan") if "O" in s else 1.0 for s in smiles]


def not_numbers(smiles):
    return ["1.0" for s in smiles]


def wrong_length(smiles):
    return [1.0] * (len(smiles) + 1) if len(smiles) > 1 else [2.0]


def batch_size(smiles):
    return [float(len(smiles))] * len(smiles)


NOT_CALLABLE = 3
"""

TEN = ["CCO", "CCC", "CCCC", "c1ccccc1", "CCN", "CC(C)O", "CCCCC", "CCOC", "CCCl", "CCBr"]


@pytest.fixture
def user_file(tmp_path):
    return _write(tmp_path / "my_objectives.py", USER_FILE)


def test_user_function_isolates_failing_molecules(user_file):
    objective = build_objective(f"{user_file}:no_nitrogen")
    assert objective.name == "no_nitrogen" and objective.component_names == ["no_nitrogen"]
    records = objective.score(TEN)
    for smiles, rec in zip(TEN, records, strict=True):
        if "N" in smiles:
            assert rec.score is None and rec.error == f"ValueError: nitrogen in {smiles}"
        else:
            assert rec.score == len(smiles) and rec.error is None


def test_user_function_bad_values(user_file):
    nan = build_objective(f"{user_file}:nan_for_oxygen").score(["CCO", "CCC"])
    assert nan[0].score is None and "not finite" in nan[0].error
    assert nan[1].score == 1.0
    strings = build_objective(f"{user_file}:not_numbers").score(["CCO"])
    assert strings[0].score is None and "not a number: str" in strings[0].error
    # a wrong-length batch is retried one at a time
    wrong = build_objective(f"{user_file}:wrong_length").score(TEN[:3])
    assert [r.score for r in wrong] == [2.0] * 3


def test_user_function_never_sees_unparsable_smiles(user_file):
    records = build_objective(f"{user_file}:batch_size").score(["CCO", "C1CC", "CCC"])
    assert [r.score for r in records] == [2.0, None, 2.0]  # called with the 2 valid ones
    assert records[1].error == "unparsable SMILES"


@pytest.mark.parametrize(
    ("content", "spec_tail", "message"),
    [
        (None, "nope.py:f", "nope.py does not exist"),
        ("def f(smiles:\n    return smiles\n", "f", "cannot be imported: SyntaxError"),
        ("raise ImportError('needs torch_geometric')\n", "f", "ImportError: needs torch_geometric"),
        ("def g(smiles):\n    return smiles\n", "f", "has no function 'f'"),
        ("f = 3\n", "f", "'f' in objective file"),
    ],
)
def test_user_function_import_errors(tmp_path, content, spec_tail, message):
    if content is None:
        spec = str(tmp_path / spec_tail)
    else:
        spec = f"{_write(tmp_path / 'obj.py', content)}:{spec_tail}"
    with pytest.raises(MolgenError) as err:
        build_objective(spec)
    assert message in str(err.value)


def test_profile_user_function_path_is_relative_to_the_profile(tmp_path, user_file, monkeypatch):
    path = _write(
        tmp_path / "p.toml", '[[component]]\nobjective = "my_objectives.py:nan_for_oxygen"\n'
    )
    monkeypatch.chdir("/")
    assert build_objective(str(path)).score(["CCC"])[0].score == 1.0


# ---------------------------------------------------------------------------------------------
# Similarity constraint, parallel scoring
# ---------------------------------------------------------------------------------------------


def test_similarity_constraint():
    objective = build_objective("qed", similar_to=ASPIRIN, min_similarity=0.5)
    assert objective.component_names == ["qed", "similarity"]
    same, other, bad = objective.score([ASPIRIN, "CCCCCCN", "C1CC"])
    assert same.score == pytest.approx(QED.qed(_mol(ASPIRIN)))
    assert same.raw["similarity"] == same.transformed["similarity"] == 1.0
    assert other.score == 0.0 and other.error is None and other.raw["similarity"] < 0.5
    assert bad.score is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_similarity": 0.4}, "min_similarity needs similar_to"),
        ({"similar_to": "CCO"}, "similar_to needs min_similarity"),
        ({"similar_to": "CCO", "min_similarity": 1.5}, "must be in [0, 1]"),
        ({"similar_to": "CCO", "min_similarity": float("nan")}, "must be in [0, 1]"),
        ({"similar_to": "C1CC", "min_similarity": 0.4}, "similar_to: 'C1CC' is not a valid"),
    ],
)
def test_similarity_constraint_errors(kwargs, message):
    with pytest.raises(MolgenError) as err:
        build_objective("qed", **kwargs)
    assert message in str(err.value)


def test_parallel_scorer_matches_in_process(tmp_path, user_file):
    path = _write(
        tmp_path / "p.toml",
        """
        aggregate = "arithmetic"
        [[component]]
        objective = "my_objectives.py:no_nitrogen"
        name = "length"
        transform = { type = "sigmoid", low = 2, high = 8, k = 0.5 }
        [[component]]
        objective = "qed"
        """,
    )
    molecules = [*TEN, "C1CC", ASPIRIN, IBUPROFEN]
    with ParallelScorer(str(path), jobs=1) as serial:
        expected = serial.score(molecules)
    with ParallelScorer(str(path), jobs=2, similar_to=ASPIRIN, min_similarity=0.0) as parallel:
        assert parallel.component_names == ["length", "qed", "similarity"]
        got = parallel.score(molecules)
        again = parallel.score(molecules[:3])  # the pool is reused
    assert len(got) == len(molecules)
    for want, rec in zip(expected, got, strict=True):
        assert isinstance(rec, ScoreRecord)
        assert rec.score == want.score and rec.error == want.error
        assert {k: v for k, v in rec.raw.items() if k != "similarity"} == want.raw
    assert got[4].score is None and "nitrogen in CCN" in got[4].error
    assert [r.score for r in again] == [r.score for r in expected[:3]]


def test_parallel_scorer_rejects_bad_spec_before_starting_workers():
    with pytest.raises(MolgenError, match="unknown objective"):
        ParallelScorer("nope", jobs=2)
    with pytest.raises(MolgenError, match="jobs must be >= 1"):
        ParallelScorer("qed", jobs=0)
