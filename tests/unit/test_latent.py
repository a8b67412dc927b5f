from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent

from molgen.distributions import HypersphericalUniform, sphere
from molgen.errors import MolgenError
from molgen.latent import (
    INITIAL_MEAN_COSINE,
    LATENT_FAMILIES,
    GaussianHead,
    LatentHead,
    SphericalCauchyHead,
    build_latent,
    format_latent_demo,
    interpolate,
    kl_to_prior,
    latent_demo,
    register_latent,
)

FAMILIES = ["spcauchy", "vmf", "power", "gaussian"]


def test_registry_has_the_four_families():
    assert set(FAMILIES) <= set(LATENT_FAMILIES)
    assert list(LATENT_FAMILIES)[0] == "spcauchy"
    for name in FAMILIES:
        head = build_latent(name, 16, 8)
        assert isinstance(head, LATENT_FAMILIES[name]) and head.family == name


def test_unknown_family_lists_known_names():
    with pytest.raises(MolgenError) as err:
        build_latent("cauchy", 4, 8)
    for name in FAMILIES:
        assert name in str(err.value)


def test_too_small_dimensions_are_user_errors():
    with pytest.raises(MolgenError, match="at least 2"):
        build_latent("spcauchy", 4, 1)
    with pytest.raises(MolgenError):
        build_latent("vmf", 0, 8)
    assert build_latent("gaussian", 4, 1).dim == 1


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_shapes_kl_and_gradients(family, dtype):
    torch.manual_seed(0)
    head = build_latent(family, 12, 6).to(dtype)
    h = torch.randn(5, 12, dtype=dtype)
    posterior, prior = head(h)
    assert posterior.batch_shape == (5,) and posterior.event_shape == (6,)
    assert prior.batch_shape == () and prior.event_shape == (6,)
    z = posterior.rsample()
    assert z.shape == (5, 6) and z.dtype == dtype
    kl = kl_to_prior(posterior, prior)
    assert kl.shape == (5,) and torch.isfinite(kl).all() and (kl >= 0).all()
    mode = head.mode(posterior)
    assert mode.shape == (5, 6)
    conc = head.concentration(posterior)
    assert conc.shape == (5,) and (conc > 0).all()
    assert head.concentration_name in {"rho", "kappa", "scale", "inv_sigma"}
    if head.spherical:
        assert sphere.check(z).all() and sphere.check(mode).all()
        assert isinstance(prior, HypersphericalUniform)
    else:
        assert isinstance(posterior, Independent)
    (z.sum() + kl.sum()).backward()
    for p in head.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert head.loc_layer.weight.grad.abs().sum() > 0
    assert head.concentration_layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["spcauchy", "vmf", "power"])
@pytest.mark.parametrize("dim", [3, 64])
def test_spherical_heads_start_at_the_target_mean_cosine(family, dim):
    torch.manual_seed(1)
    head = build_latent(family, 4, dim)
    posterior, _ = head(torch.randn(1, 4).expand(4000, 4))
    z = posterior.sample()
    cos = (z * head.mode(posterior)).sum(-1)
    assert cos.mean().item() == pytest.approx(INITIAL_MEAN_COSINE, abs=5 * cos.std().item() / 63)
    # every example starts at the same concentration
    conc = head.concentration(head(torch.randn(7, 4))[0])
    assert torch.allclose(conc, conc[0].expand(7))


def test_gaussian_head_prior_and_clamp():
    head = GaussianHead(3, 4)
    prior = head.prior(dtype=torch.float64)
    assert prior.mean.dtype == torch.float64 and torch.equal(prior.stddev, torch.ones(4).double())
    posterior = head.posterior_from_params(
        torch.zeros(2, 4), torch.tensor([[-50.0] * 4, [50.0] * 4])
    )
    sigma = posterior.base_dist.scale
    assert sigma[0, 0].item() == pytest.approx(math.exp(head.log_sigma_min))
    assert sigma[1, 0].item() == pytest.approx(math.exp(head.log_sigma_max))
    assert torch.equal(head.mode(posterior), torch.zeros(2, 4))


def test_vmf_head_caps_kappa():
    head = build_latent("vmf", 2, 5)
    posterior = head.posterior_from_params(torch.randn(2, 5), torch.tensor([0.0, 1e9]))
    assert posterior.scale[1].item() == head.cap
    assert posterior.scale[0].item() > head.floor


def test_prior_on_device_and_dtype():
    head = build_latent("spcauchy", 2, 5)
    p = head.prior(device="cpu", dtype=torch.float64)
    assert p.sample((3,)).dtype == torch.float64
    assert head.prior().sample().dtype == torch.get_default_dtype()


def test_register_latent_adds_a_family():
    @register_latent("test-tmp-family")
    class Tmp(SphericalCauchyHead):
        pass

    try:
        assert build_latent("test-tmp-family", 3, 4).family == "test-tmp-family"
        with pytest.raises(ValueError):
            register_latent("test-tmp-family")(Tmp)
    finally:
        del LATENT_FAMILIES["test-tmp-family"]


def test_concentration_targets_are_validated():
    with pytest.raises(MolgenError):
        build_latent("power", 2, 5).concentration_param_for_cosine(1.0)


# --------------------------------------------------------------------------------------------------
# interpolate
# --------------------------------------------------------------------------------------------------


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(
        torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1
    )


def test_slerp_endpoints_unit_norm_and_constant_speed():
    a, b = _unit(6), _unit(6, seed=1)
    path = interpolate(True, a, b, 9)
    assert path.shape == (9, 6)
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b)
    assert torch.allclose(path.norm(dim=-1), torch.ones(9, dtype=torch.float64))
    angles = torch.acos((path[1:] * path[:-1]).sum(-1).clamp(-1, 1))
    assert torch.allclose(angles, angles[0].expand(8), atol=1e-10)
    total = torch.acos((a * b).sum())
    assert angles.sum().item() == pytest.approx(total.item(), rel=1e-10)


def test_slerp_identical_and_antipodal_endpoints():
    a = _unit(5)
    same = interpolate(True, a, a.clone(), 4)
    assert torch.allclose(same, a.expand(4, 5))
    anti = interpolate(True, a, -a, 5)
    assert torch.isfinite(anti).all()
    assert torch.allclose(anti[0], a) and torch.allclose(anti[-1], -a, atol=1e-12)
    assert torch.allclose(anti.norm(dim=-1), torch.ones(5, dtype=torch.float64))
    assert (anti[2] * a).sum().abs().item() < 1e-12  # half way: orthogonal to both ends


def test_linear_for_gaussian_and_batches():
    head = build_latent("gaussian", 2, 3)
    a, b = torch.zeros(3), torch.tensor([2.0, 4.0, -2.0])
    path = interpolate(head, a, b, 3)
    assert torch.allclose(path, torch.tensor([[0.0, 0, 0], [1.0, 2, -1], [2.0, 4, -2]]))
    batched = interpolate(build_latent("vmf", 2, 4), _unit(2, 4), _unit(2, 4, seed=3), 5)
    assert batched.shape == (5, 2, 4)
    with pytest.raises(MolgenError):
        interpolate(True, a, b, 1)
    with pytest.raises(MolgenError):
        interpolate(True, torch.ones(3), torch.ones(4), 5)


# --------------------------------------------------------------------------------------------------
# latent demo
# --------------------------------------------------------------------------------------------------


def test_latent_demo_hits_its_targets():
    rows = latent_demo(dim=16, levels=3, seed=0, samples=3000)
    assert [r.family for r in rows] == [f for f in LATENT_FAMILIES for _ in range(3)]
    for r in rows:
        assert r.kl >= 0 and math.isfinite(r.kl)
        tolerance = 0.05 if r.family == "gaussian" else 0.03  # Gaussian target is approximate
        assert r.mean_cosine == pytest.approx(r.target_cosine, abs=tolerance)
    for family in ("spcauchy", "vmf", "power"):  # more concentration, more KL
        kls = [r.kl for r in rows if r.family == family]
        assert kls == sorted(kls)
    text = format_latent_demo(rows, dim=16, samples=3000)
    assert "spcauchy" in text and "rho=" in text and "kappa=" in text


@pytest.mark.integration
def test_latent_demo_cli(cli):
    result = cli("latent-demo", "--dim", "8", "--n", "2", "--samples", "300")
    assert result.code == 0, result.stderr
    assert "KL to prior" in result.stdout
    assert sum(line.startswith(f) for line in result.stdout.splitlines() for f in FAMILIES) == 8
    bad = cli("latent-demo", "--dim", "1")
    assert bad.code == 1 and bad.stderr.startswith("Error:") and "Traceback" not in bad.stderr


def test_latent_head_is_abstract():
    class Incomplete(LatentHead):
        pass

    with pytest.raises(NotImplementedError):
        Incomplete(2, 3)
