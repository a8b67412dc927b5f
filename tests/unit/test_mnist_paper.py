"""The paper's MNIST protocol (``molgen.mnist_paper``) on tiny data made here."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from molgen import mnist_paper as mp
from molgen.distributions import (
    HypersphericalUniform,
    PowerSpherical,
    SphericalCauchy,
    VonMisesFisher,
)
from molgen.errors import MolgenError
from molgen.mnist import FAMILIES, MnistConfig, MnistData, run_mnist
from tests.conftest import REPO, run_cli


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _grey_data(n_train=256, n_test=64, seed=0) -> MnistData:
    rng = np.random.default_rng(seed)
    return MnistData(
        train_images=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        train_labels=rng.integers(0, 10, n_train, dtype=np.uint8),
        test_images=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        test_labels=rng.integers(0, 10, n_test, dtype=np.uint8),
    )


@pytest.fixture(scope="module")
def tiny() -> MnistData:
    return _grey_data()


def _config(**kw) -> mp.PaperMnistConfig:
    return mp.PaperMnistConfig(**{"epochs": 1, "progress": False, "plots": False, **kw})


# ---- architecture ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dim", [2, 5])
def test_architecture_shapes_and_head_init(family, dim):
    torch.manual_seed(0)
    model = mp.PaperImageVAE(family, dim)
    amb = dim if family == "gaussian" else dim + 1
    assert model.ambient_dim == amb and model.family == family and model.dim == dim
    x = torch.rand(3, 1, 28, 28)
    conv = model.encoder[:7](x)  # through Flatten
    assert conv.shape == (3, 1152) and mp.ENCODER_FEATURES == 1152
    assert model.encoder(x).shape == (3, 128)
    assert model.head.fc_mu.in_features == 128 and model.head.fc_mu.out_features == amb
    width = amb if family == "gaussian" else 1
    assert model.head.fc_second.out_features == width
    bias = model.head.fc_second.bias.detach()
    expected = {"spcauchy": 2.0, "vmf": 2.0, "power": 0.0}
    if family in expected:
        assert torch.equal(bias, torch.full((1,), expected[family]))
    else:  # torch's default init, not filled
        assert bias.abs().max() <= 1 / math.sqrt(128) and bias.unique().numel() == amb
    assert model.decode(torch.randn(3, amb)).shape == (3, 1, 28, 28)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    # The authors' creation order (so a seed gives their initial weights).
    names = [n for n, _ in model.named_parameters()]
    assert names.index("encoder.7.weight") < names.index("head.fc_mu.weight")
    assert names.index("head.fc_mu.bias") < names.index("head.fc_second.weight")
    assert names.index("head.fc_second.bias") < names.index("decoder.0.weight")
    layers = [type(m).__name__ for m in model.decoder]
    assert layers[-1] == "Conv2d" and layers.count("ConvTranspose2d") == 2  # logits out


def test_posterior_parameterisation_per_family():
    torch.manual_seed(0)
    h = torch.randn(4, 128)
    for family, cls in [
        ("spcauchy", SphericalCauchy),
        ("vmf", VonMisesFisher),
        ("power", PowerSpherical),
    ]:
        head = mp.PaperHead(family, 3)
        q, prior = head(h)
        assert isinstance(q, cls) and isinstance(prior, HypersphericalUniform)
        second = head.fc_second(h).squeeze(-1)
        torch.testing.assert_close(q.loc, F.normalize(head.fc_mu(h), dim=-1))
        if family == "spcauchy":
            torch.testing.assert_close(q.rho, torch.sigmoid(second))
        elif family == "vmf":
            torch.testing.assert_close(q.scale, F.softplus(second) + 1.0)
        else:
            eps = torch.finfo(torch.float32).eps
            torch.testing.assert_close(q.scale, F.softplus(second) + eps)
        assert head.concentration(q).shape == (4,)
    head = mp.PaperHead("gaussian", 3)
    q, prior = head(h)
    logvar = head.fc_second(h)
    torch.testing.assert_close(q.base_dist.scale, torch.exp(0.5 * logvar))
    torch.testing.assert_close(prior.base_dist.scale, torch.ones(3))
    assert head.concentration(q) is None


def test_spcauchy_rho_is_capped_just_below_one():
    cap = mp._rho_logit_cap(torch.float32)
    below_one = float(torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)))
    # rho = sigmoid(cap) is the authors' cap; molgen keeps 1 - rho = sigmoid(-cap) exactly.
    one_minus = float(torch.sigmoid(-torch.tensor(cap, dtype=torch.float64)))
    assert one_minus == pytest.approx(1.0 - below_one, rel=1e-9)
    q = mp._spcauchy(torch.randn(2, 3), torch.tensor([[40.0], [0.5]]))
    assert float(q.rho_logit[0]) == pytest.approx(cap) and float(q.rho_logit[1]) == 0.5
    assert torch.isfinite(q.kl_to_uniform()).all()


def test_gaussian_kl_is_the_closed_form():
    torch.manual_seed(1)
    model = mp.PaperImageVAE("gaussian", 5)
    x = torch.rand(6, 1, 28, 28)
    _, kl, q = mp.elbo_terms(model, x)
    h = model.encoder(x)
    mu, logvar = model.head.fc_mu(h), model.head.fc_second(h)
    closed = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(-1)
    torch.testing.assert_close(kl, closed)


# ---- optimiser, lr ---------------------------------------------------------------------------


def test_lr_and_warmup_per_dim():
    assert [mp.paper_lr(d) for d in (2, 3, 5, 10, 20)] == [3e-4, 3e-4, 1e-4, 1e-4, 1e-4]
    assert [mp.paper_warmup_steps(d) for d in (2, 3, 5, 10, 20)] == [200, 200, 0, 0, 0]
    assert mp.paper_lr(1) == 3e-4 and mp.paper_warmup_steps(1) == 200
    assert mp.paper_lr(4) == 1e-4 and mp.paper_warmup_steps(64) == 0
    lr = [mp.lr_at_step(s, 3e-4, 200) for s in (1, 100, 200, 201, 5000)]
    assert lr == pytest.approx([1.5e-6, 1.5e-4, 3e-4, 3e-4, 3e-4], rel=1e-12)
    assert {mp.lr_at_step(s, 1e-4, 0) for s in (1, 2, 300)} == {1e-4}


def test_optimizer_is_adamw_with_default_weight_decay():
    opt = mp.paper_optimizer(torch.nn.Linear(2, 2), 1e-4)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["weight_decay"] == 0.01
    assert torch.optim.AdamW([torch.zeros(1, requires_grad=True)]).defaults["weight_decay"] == 0.01


def _record_steps(monkeypatch):
    """Record, per training step, the optimiser's lr and the batch handed to the loss."""
    seen = {"opt": [], "lr": [], "x": []}
    make_opt, terms = mp.paper_optimizer, mp.elbo_terms

    def spy_opt(model, lr):
        seen["opt"].append(make_opt(model, lr))
        return seen["opt"][-1]

    def spy_terms(model, x):
        if torch.is_grad_enabled():  # training, not the test-set scoring
            seen["lr"].append(seen["opt"][-1].param_groups[0]["lr"])
            seen["x"].append(x.detach().clone())
        return terms(model, x)

    monkeypatch.setattr(mp, "paper_optimizer", spy_opt)
    monkeypatch.setattr(mp, "elbo_terms", spy_terms)
    return seen


def test_training_lr_per_step_d2_warms_up_d10_is_constant(monkeypatch, tiny):
    seen = _record_steps(monkeypatch)
    # batch 1 (a library override) gives 202 steps in one epoch: past the 200-step warm-up.
    cfg = _config(dim=2, batch_size=1, train_subset=202, test_subset=8)
    _, result, _ = mp.train_paper(cfg, tiny)
    lrs = seen["lr"]
    assert len(lrs) == 202
    assert lrs[0] == pytest.approx(3e-4 / 200, rel=1e-12)
    assert lrs[99] == pytest.approx(1.5e-4, rel=1e-12)
    assert lrs[199] == pytest.approx(3e-4, rel=1e-12) and lrs[200] == lrs[201] == 3e-4
    assert isinstance(seen["opt"][0], torch.optim.AdamW)
    assert seen["opt"][0].param_groups[0]["weight_decay"] == 0.01
    assert result.overrides == {"batch_size": 1} and result.lr_warmup_steps == 200

    seen["lr"].clear()
    _, result, _ = mp.train_paper(_config(dim=10, epochs=2, test_subset=8), tiny)
    assert seen["lr"] == [1e-4] * 4 and result.lr == 1e-4 and result.lr_warmup_steps == 0
    assert result.overrides == {} and result.batch_size == 128


def test_lr_is_rewritten_every_step_like_the_authors(monkeypatch, tiny):
    # Force a plateau cut after every epoch: the authors' loop puts the base lr back at the next
    # step; with reset_lr_every_step=False the cut stays.
    recon = iter([100.0] + [200.0] * 20)

    def fake_eval(model, images, batch_size=128):
        r = next(recon)
        return {"recon": r, "kl": 1.0, "neg_elbo": r + 1.0, "concentration": None, "batches": 1}

    monkeypatch.setattr(mp, "PLATEAU_PATIENCE", 0)
    monkeypatch.setattr(mp, "evaluate_paper", fake_eval)
    seen = _record_steps(monkeypatch)
    _, result, _ = mp.train_paper(_config(dim=10, epochs=3), tiny)
    assert seen["lr"] == [1e-4] * 6
    assert [h["scheduler_lr"] for h in result.history] == [1e-4, 5e-5, 5e-5]

    seen["lr"].clear()
    recon = iter([100.0] + [200.0] * 20)
    _, result, _ = mp.train_paper(_config(dim=10, epochs=3, reset_lr_every_step=False), tiny)
    assert seen["lr"] == pytest.approx([1e-4] * 4 + [5e-5] * 2)
    assert result.overrides == {"reset_lr_every_step": False}


# ---- data -----------------------------------------------------------------------------------


def test_training_targets_are_grey_levels_not_binarized(monkeypatch, tiny):
    seen = _record_steps(monkeypatch)
    mp.train_paper(_config(seed=3, test_subset=8), tiny)
    assert [len(x) for x in seen["x"]] == [128, 128]
    order = mp.PaperShuffler(256, 3).epoch()
    for step, x in enumerate(seen["x"]):
        idx = order[step * 128 : (step + 1) * 128].numpy()
        want = torch.from_numpy(tiny.train_images[idx]).float().unsqueeze(1) / 255.0
        assert torch.equal(x, want)
    x = torch.cat(seen["x"])
    assert ((x > 0) & (x < 1)).float().mean() > 0.9  # grey, not 0/1


def test_last_training_batch_is_kept_short(monkeypatch):
    seen = _record_steps(monkeypatch)
    mp.train_paper(_config(test_subset=8), _grey_data(n_train=300, n_test=8))
    assert [len(x) for x in seen["x"]] == [128, 128, 44]


@pytest.mark.parametrize("workers", [0, 1])
def test_shuffle_order_is_the_authors_dataloader(workers):
    n, seed = 300, 7
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        TensorDataset(torch.arange(n)),
        batch_size=128,
        shuffle=True,
        generator=g,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    ours = mp.PaperShuffler(n, seed)
    # Their runs used 4 persistent workers (one base-seed draw); without workers the loader
    # draws a base seed every epoch, so only the first epoch agrees.
    for _ in range(3 if workers else 1):
        got = torch.cat([b[0] for b in loader])
        assert torch.equal(got, ours.epoch())


# ---- scoring and selection -----------------------------------------------------------------


def test_test_metrics_are_a_mean_of_per_batch_means(monkeypatch):
    # 130 images -> batches of 128 and 2; image i has recon i and KL 2i.
    images = torch.arange(130, dtype=torch.uint8).view(130, 1, 1).expand(130, 28, 28).clone()
    real = mp.elbo_terms

    def fake_terms(model, x):
        _, _, q = real(model, x)
        v = (x[:, 0, 0, 0] * 255).round()
        return v, 2 * v, q

    monkeypatch.setattr(mp, "elbo_terms", fake_terms)
    model = mp.PaperImageVAE("spcauchy", 2)
    out = mp.evaluate_paper(model, images)
    values = torch.arange(130, dtype=torch.float64)
    per_batch = (values[:128].mean() + values[128:].mean()) / 2  # (63.5 + 128.5) / 2 = 96
    assert out["batches"] == 2
    assert out["recon"] == pytest.approx(float(per_batch)) and out["recon"] != values.mean()
    assert out["kl"] == pytest.approx(2 * float(per_batch))
    assert out["neg_elbo"] == pytest.approx(3 * float(per_batch))
    assert 0 < out["concentration"] < 1


def test_best_checkpoint_keeps_the_first_minimum():
    model = torch.nn.Linear(1, 1)
    best = mp.BestCheckpoint()
    for epoch, recon in enumerate([5.0, 3.0, 3.0, 4.0], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        best.update(epoch, recon, model)
    assert best.epoch == 2 and best.recon == 3.0
    assert float(best.state["weight"]) == 2.0  # a copy, not the live tensor


def test_selection_scores_the_best_epoch_and_reports_the_last(monkeypatch, tiny):
    during = iter([150.0, 140.0, 145.0])  # epoch 2 is best, not the last
    snapshots: list[dict] = []
    rescored: list[tuple[int, float]] = []

    def fake_eval(model, images, batch_size=128):
        if len(snapshots) < 3:
            snapshots.append(copy.deepcopy(model.state_dict()))
            r = next(during)
            return {"recon": r, "kl": 5.0, "neg_elbo": r + 5.0, "concentration": None, "batches": 1}
        state = model.state_dict()
        epoch = 1 + next(
            i for i, s in enumerate(snapshots) if all(torch.equal(s[k], state[k]) for k in s)
        )
        rescored.append((epoch, float(torch.rand(()))))  # the draw after re-seeding
        r = 100.0 + epoch
        return {"recon": r, "kl": epoch, "neg_elbo": r + epoch, "concentration": None, "batches": 1}

    monkeypatch.setattr(mp, "evaluate_paper", fake_eval)
    model, result, _ = mp.train_paper(_config(epochs=3, seed=5, test_subset=8), tiny)
    assert [h["test_reconstruction"] for h in result.history] == [150.0, 140.0, 145.0]
    assert result.best_epoch == 2
    # The selected model is epoch 2's state, the last is epoch 3's; each scored after re-seeding.
    torch.manual_seed(5)
    first_draw = float(torch.rand(()))
    assert rescored == [(2, first_draw), (3, first_draw)]
    assert (result.selected_reconstruction, result.selected_kl) == (102.0, 2.0)
    assert result.selected_neg_elbo == 104.0
    assert (result.last_reconstruction, result.last_kl, result.last_neg_elbo) == (103.0, 3, 106.0)
    assert all(torch.equal(snapshots[2][k], v) for k, v in model.state_dict().items())


def test_real_scoring_after_reseeding_is_reproducible(tiny):
    _, result, _ = mp.train_paper(_config(epochs=2, test_subset=64), tiny)
    _, again, _ = mp.train_paper(_config(epochs=2, test_subset=64), tiny)
    drop = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    assert [drop(h) for h in result.history] == [drop(h) for h in again.history]
    assert result.selected_reconstruction == again.selected_reconstruction
    if result.best_epoch == 2:  # same model, same seed: the same numbers
        assert result.selected_reconstruction == result.last_reconstruction
    assert result.selected_neg_elbo == pytest.approx(
        result.selected_reconstruction + result.selected_kl
    )


# ---- failures -------------------------------------------------------------------------------


def test_non_finite_gradient_is_a_molgen_error(monkeypatch, tiny):
    real = mp.elbo_terms

    def nan_grad(model, x):
        recon, kl, q = real(model, x)
        b = model.head.fc_mu.bias.sum()
        return recon + torch.sqrt(b - b), kl, q  # value 0, gradient inf - inf = nan

    monkeypatch.setattr(mp, "elbo_terms", nan_grad)
    with pytest.raises(MolgenError, match="Non-finite gradient at epoch 1, step 1"):
        mp.train_paper(_config(test_subset=8), tiny)


def test_non_finite_loss_is_a_molgen_error(monkeypatch, tiny):
    real = mp.elbo_terms
    monkeypatch.setattr(
        mp, "elbo_terms", lambda m, x: (lambda r, k, q: (r + math.inf, k, q))(*real(m, x))
    )
    with pytest.raises(MolgenError, match="Non-finite training loss"):
        mp.train_paper(_config(test_subset=8), tiny)


@pytest.mark.parametrize(
    "bad",
    [dict(epochs=0), dict(latent="cauchy"), dict(dim=0), dict(lr=0.0), dict(batch_size=0)],
)
def test_bad_settings_are_molgen_errors(tiny, bad):
    with pytest.raises(MolgenError):
        mp.train_paper(_config(**bad), tiny)


# ---- results files --------------------------------------------------------------------------


def test_results_json_records_the_protocol(tmp_path, tiny):
    out = tmp_path / "paper"
    result = mp.run_paper(_config(dim=2, epochs=2, test_subset=64, plots=True, out=str(out)), tiny)
    saved = json.loads((out / "results.json").read_text())
    assert saved["protocol"] == "paper" == result.protocol
    assert saved["best_epoch"] in (1, 2) and len(saved["history"]) == 2
    for key in ("selected", "last"):
        assert saved[f"{key}_neg_elbo"] == pytest.approx(
            saved[f"{key}_reconstruction"] + saved[f"{key}_kl"]
        )
    assert saved["lr"] == 3e-4 and saved["lr_warmup_steps"] == 200 and saved["batch_size"] == 128
    assert saved["weight_decay"] == 0.01 and saved["config"]["epochs"] == 2
    assert saved["train_size"] == 256 and saved["test_size"] == 64 and saved["wall_seconds"] > 0
    for name in ("training_curves", "reconstructions", "prior_samples", "latent_sphere"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    text = mp.format_paper_result(result)
    assert text.startswith("protocol") and "paper" in text.splitlines()[0]

    molgen_cfg = MnistConfig(epochs=1, ll_images=0, progress=False, plots=False)
    molgen_cfg.out = str(tmp_path / "molgen")
    run_mnist(molgen_cfg, tiny)
    saved = json.loads((tmp_path / "molgen" / "results.json").read_text())
    assert saved["protocol"] == "molgen"


# ---- CLI ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        ("--lr", "1e-3"),
        ("--batch-size", "128"),  # even the paper's own value: the protocol fixes it
        ("--lr-warmup-steps", "200"),
        ("--ll-images", "5"),
    ],
)
def test_cli_paper_rejects_options_it_fixes(tmp_path, extra):
    r = run_cli("mnist", "--protocol", "paper", *extra, "--out", tmp_path / "o")
    assert r.code == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert extra[0] in lines[0] and "--protocol paper" in lines[0]
    assert not (tmp_path / "o").exists()


def test_cli_unknown_protocol_is_one_error_line():
    r = run_cli("mnist", "--protocol", "bogus")
    assert r.code == 1 and r.stderr.strip().startswith("Error: ")
    assert "molgen, paper" in r.stderr


# ---- benchmark table -----------------------------------------------------------------------


def _table_module():
    spec = importlib.util.spec_from_file_location("mnist_table", REPO / "benchmarks/mnist_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_never_reuses_the_other_protocols_runs(tmp_path, tiny):
    table = _table_module()
    paper_cfg = _config(epochs=2, test_subset=64, out=str(tmp_path / "p"))
    paper = json.loads(json.dumps(asdict(mp.run_paper(paper_cfg, tiny))))
    molgen = {"protocol": "molgen", "config": asdict(MnistConfig(epochs=2, test_subset=64))}
    legacy = {"config": molgen["config"]}  # written before results carried a protocol
    want_paper = _config(epochs=2, test_subset=64)
    want_molgen = MnistConfig(epochs=2, test_subset=64)
    assert table._matches(paper, want_paper)
    assert not table._matches(paper, want_molgen)
    assert not table._matches(molgen, want_paper) and not table._matches(legacy, want_paper)
    assert table._matches(molgen, want_molgen) and table._matches(legacy, want_molgen)
    assert not table._matches(paper, _config(epochs=3, test_subset=64))
    assert not table._matches(paper, _config(epochs=2, test_subset=64, dim=3))
    # A run made elsewhere (e.g. by the CLI into another folder) is found by its settings.
    found = table._saved(tmp_path / "absent" / "results.json", want_paper, [molgen, paper])
    assert found is paper


def test_paper_table_rows_and_targets():
    table = _table_module()
    args = table.parse_args(["--protocol", "paper", "--dims", "2", "--families", "spcauchy,vmf"])
    assert args.runs_dir.as_posix() == "runs/mnist_paper"

    def run(fam, seed, recon, neg_elbo):
        return {
            "protocol": "paper", "latent": fam, "dim": 2, "seed": seed, "best_epoch": 38,
            "selected_reconstruction": recon, "selected_kl": neg_elbo - recon,
            "selected_neg_elbo": neg_elbo, "last_reconstruction": recon + 1,
            "last_kl": neg_elbo - recon, "last_neg_elbo": neg_elbo + 1,
            "train_size": 60000, "test_size": 10000, "device": "cpu",
        }  # fmt: skip

    results = [run("spcauchy", 0, 131.0, 139.0), run("spcauchy", 1, 132.0, 140.0)]
    results.append(run("vmf", 0, 137.0, 144.0))  # 4.97 above 132.03: outside max(2, 2.64)
    text = table.render_paper(results, args, "cmd", 60.0, done=True)
    assert "protocol paper" in text
    row = next(line for line in text.splitlines() if line.startswith("| 2 | spCauchy"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:8] == ["2", "131.50 ± 0.71", "130.29 ± 0.40", "+1.21", "yes", "139.50 ± 0.71"]
    assert cells[8:10] == ["137.95", "+1.55"]
    row = next(line for line in text.splitlines() if line.startswith("| 2 | vMF"))
    assert "| no |" in row and "| 138.00 |" in row  # last-epoch recon
    with pytest.raises(SystemExit):
        table.parse_args(["--protocol", "paper", "--lr", "1e-3"])
