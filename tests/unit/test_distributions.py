from __future__ import annotations

import csv
import math
from pathlib import Path

import mpmath
import numpy as np
import pytest
import scipy.special
import torch
import torch.nn.functional as F
from power_spherical import HypersphericalUniform as PackageUniform
from torch.distributions import kl_divergence

from molgen.distributions import (
    HypersphericalUniform,
    PowerSpherical,
    SphericalCauchy,
    VonMisesFisher,
    bessel_ratio,
    log_bessel_ive,
    log_sphere_area,
    spcauchy_kl_uniform,
    sphere,
    vmf_kl_uniform,
)

# Copy of /work/shared/reference/spcauchy_kl.csv (40-digit quadrature; see its README there).
REFERENCE = Path(__file__).resolve().parent.parent / "data" / "spcauchy_kl.csv"
F64 = torch.float64


def _rows() -> list[dict[str, str]]:
    with REFERENCE.open() as fh:
        return list(csv.DictReader(fh))


def _unit(*shape: int, dtype: torch.dtype = F64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def _e1(d: int, dtype: torch.dtype = F64) -> torch.Tensor:
    x = torch.zeros(d, dtype=dtype)
    x[0] = 1
    return x


# --------------------------------------------------------------------------------------------------
# spCauchy KL against the independent 40-digit reference
# --------------------------------------------------------------------------------------------------


def _reference_tensors() -> dict[str, np.ndarray]:
    rows = _rows()
    return {
        "d": np.array([int(r["d"]) for r in rows]),
        "rho": np.array([float(r["rho"]) for r in rows]),
        "log1m": np.array([float(r["log1m_rho"]) for r in rows]),
        "kl": np.array([float(r["kl"]) for r in rows]),
        "grad": np.array([float(r["dkl_drho"]) for r in rows]),
    }


def _kl_and_grad(d: int, param: torch.Tensor, logit: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = param.clone().requires_grad_()
    kl = spcauchy_kl_uniform(d, rho_logit=x) if logit else spcauchy_kl_uniform(d, rho=x)
    (g,) = torch.autograd.grad(kl.sum(), x)
    return kl.detach(), g


def test_spcauchy_kl_float64_matches_reference_at_every_row():
    ref = _reference_tensors()
    assert len(ref["d"]) == 220
    worst_kl = worst_grad = 0.0
    for d in np.unique(ref["d"]):
        m = ref["d"] == d
        rho = torch.tensor(ref["rho"][m], dtype=F64)
        kl, grad = _kl_and_grad(int(d), rho, logit=False)
        worst_kl = max(worst_kl, float(np.max(np.abs(kl.numpy() / ref["kl"][m] - 1))))
        worst_grad = max(worst_grad, float(np.max(np.abs(grad.numpy() / ref["grad"][m] - 1))))
    assert worst_kl <= 1e-12
    assert worst_grad <= 1e-9


def test_spcauchy_kl_float64_from_logit_matches_reference():
    ref = _reference_tensors()
    for d in np.unique(ref["d"]):
        m = ref["d"] == d
        rho, log1m = ref["rho"][m], ref["log1m"][m]
        logit = torch.tensor(np.log(rho) - log1m, dtype=F64)
        kl, dlogit = _kl_and_grad(int(d), logit, logit=True)
        # dKL/dlogit = dKL/drho * rho (1 - rho)
        drho = dlogit.numpy() / (rho * np.exp(log1m))
        np.testing.assert_allclose(kl.numpy(), ref["kl"][m], rtol=1e-12, atol=0)
        np.testing.assert_allclose(drho, ref["grad"][m], rtol=1e-9, atol=0)


def test_spcauchy_kl_float32_within_1e_5():
    ref = _reference_tensors()
    for d in np.unique(ref["d"]):
        m = ref["d"] == d
        logit = torch.tensor(np.log(ref["rho"][m]) - ref["log1m"][m], dtype=torch.float32)
        kl, dlogit = _kl_and_grad(int(d), logit, logit=True)
        assert kl.dtype == torch.float32
        rho, log1m = ref["rho"][m], ref["log1m"][m]
        np.testing.assert_allclose(kl.double().numpy(), ref["kl"][m], rtol=1e-5, atol=0)
        drho = dlogit.double().numpy() / (rho * np.exp(log1m))
        np.testing.assert_allclose(drho, ref["grad"][m], rtol=1e-5, atol=0)
        # From rho itself: float32 rounds rho, so compare with float64 at the rounded value.
        rho32 = torch.tensor(ref["rho"][m], dtype=torch.float32)
        keep = rho32 < 1
        kl32, g32 = _kl_and_grad(int(d), rho32[keep], logit=False)
        kl64, g64 = _kl_and_grad(int(d), rho32[keep].double(), logit=False)
        np.testing.assert_allclose(kl32.double().numpy(), kl64.numpy(), rtol=1e-5, atol=0)
        np.testing.assert_allclose(g32.double().numpy(), g64.numpy(), rtol=1e-5, atol=0)


def _kl_quadrature(d: int, rho: float) -> float:
    """(d-1)(E log(1 + rho^2 + 2 rho cos t) - log(1 - rho^2)), t with density ~ sin^(d-2)."""
    mpmath.mp.dps = 30
    r = mpmath.mpf(rho)

    def f(t):
        return mpmath.log((1 - r) ** 2 + 2 * r * (1 + mpmath.cos(t))) * mpmath.sin(t) ** (d - 2)

    eps = 1 - r
    pts = [0, mpmath.pi / 2] + [mpmath.pi - eps * 10**k for k in (2, 1, 0) if eps * 10**k < 1]
    num = mpmath.quad(f, pts + [mpmath.pi])
    den = mpmath.sqrt(mpmath.pi) * mpmath.gamma((d - 1) / mpmath.mpf(2)) / mpmath.gamma(d / 2)
    return float((d - 1) * (num / den - mpmath.log(1 - r * r)))


@pytest.mark.parametrize("d", [10, 11, 100, 257])
def test_spcauchy_kl_at_dimensions_outside_the_table(d):
    for rho in (0.3, 0.97, 1 - 1e-7):
        got = spcauchy_kl_uniform(d, rho=torch.tensor(rho, dtype=F64)).item()
        assert got == pytest.approx(_kl_quadrature(d, rho), rel=1e-12)


def test_spcauchy_kl_small_cases_closed_forms():
    rho = torch.tensor([1e-6, 0.2, 0.6, 0.999], dtype=F64)
    d2 = torch.where(rho < 0.5, -torch.log1p(-rho * rho), -torch.log1p(-rho) - torch.log1p(rho))
    np.testing.assert_allclose(spcauchy_kl_uniform(2, rho=rho), d2, rtol=1e-15)
    d3 = (1 + rho**2) / rho * torch.log((1 + rho) / (1 - rho)) - 2
    np.testing.assert_allclose(spcauchy_kl_uniform(3, rho=rho)[1:], d3[1:], rtol=1e-13)
    assert spcauchy_kl_uniform(7, rho=torch.zeros(3, dtype=F64)).abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spcauchy_finite_for_huge_logits(dtype):
    logits = torch.tensor([-1e4, -80.0, 16.6, 17.0, 30.0, 80.0, 1e3, 1e4], dtype=dtype)
    for d in (2, 3, 5, 16, 17, 64, 65, 512, 2048):
        x = logits.clone().requires_grad_()
        kl = spcauchy_kl_uniform(d, rho_logit=x)
        kl.sum().backward()
        assert torch.isfinite(kl).all() and torch.isfinite(x.grad).all()
        assert (kl >= 0).all() and (x.grad >= 0).all()
        # KL ~ (d-1) logit for large logits: log(1 - rho) = -logit
        assert kl[-1].item() == pytest.approx((d - 1) * 1e4, rel=1e-2)
        loc = _unit(len(logits), d, dtype=dtype).requires_grad_()
        t = x.detach().clone().requires_grad_()
        q = SphericalCauchy(loc, rho_logit=t)
        z = q.rsample((2,))
        lp = q.log_prob(z)
        (z.sum() + lp.sum() + q.entropy().sum() + q.mean.sum()).backward()
        for value in (z, lp, loc.grad, t.grad):
            assert torch.isfinite(value).all()
        assert sphere.check(z).all()


def test_spcauchy_kl_any_dimension_is_cheap_to_plan_and_monotone():
    rho = torch.linspace(0.0, 0.999, 50, dtype=F64)
    previous = None
    for d in (2, 3, 4, 31, 100, 1000, 4097, 100_000):
        kl = spcauchy_kl_uniform(d, rho=rho)
        assert torch.isfinite(kl).all() and (kl.diff() > 0).all()
        if previous is not None:
            assert (kl[1:] > previous[1:]).all()  # more dimensions, more nats
        previous = kl


# --------------------------------------------------------------------------------------------------
# spCauchy density and sampler
# --------------------------------------------------------------------------------------------------


_ANGLE_BREAKS = (0.0, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 2.0, math.pi)
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(64)


def _zonal_moment(dist, d: int, k: int = 0) -> float:
    """E[(mu^T x)^k] (k = 0: total mass) of a distribution with mode e_1 on S^{d-1}.

    The density depends on the angle t to e_1 only: integral = |S^{d-2}| int_0^pi f(t) sin^{d-2} t
    dt, by 64-point Gauss-Legendre on pieces refined towards the mode (vectorised log_prob).
    """
    a, b = np.array(_ANGLE_BREAKS[:-1]), np.array(_ANGLE_BREAKS[1:])
    half = (b - a)[:, None] / 2
    t = torch.tensor((a[:, None] + b[:, None]) / 2 + half * _NODES, dtype=F64).reshape(-1)
    w = torch.tensor(half * _WEIGHTS, dtype=F64).reshape(-1)
    x = torch.zeros(len(t), d, dtype=F64)
    x[:, 0], x[:, 1] = torch.cos(t), torch.sin(t)
    log_s2 = log_sphere_area(d - 1) if d > 2 else math.log(2.0)
    log_f = dist.log_prob(x) + log_s2 + (d - 2) * torch.log(torch.sin(t))
    return float((w * torch.cos(t) ** k * torch.exp(log_f)).sum())


@pytest.mark.parametrize("d", [2, 3, 5, 16])
@pytest.mark.parametrize("rho", [0.2, 0.7])
def test_spcauchy_log_prob_integrates_to_one(d, rho):
    q = SphericalCauchy(_e1(d), rho=torch.tensor(rho, dtype=F64))
    assert _zonal_moment(q, d) == pytest.approx(1.0, abs=1e-10)


def test_spcauchy_log_prob_importance_sampling_high_dim():
    torch.manual_seed(0)
    d = 40
    q = SphericalCauchy(_e1(d), rho=torch.tensor(0.15, dtype=F64))
    u = HypersphericalUniform(d, dtype=F64).sample((200_000,))
    w = torch.exp(q.log_prob(u) + log_sphere_area(d))
    stderr = w.std().item() / math.sqrt(len(w))
    assert abs(w.mean().item() - 1) < 5 * stderr


@pytest.mark.parametrize(("d", "rho"), [(3, 0.3), (3, 0.9), (10, 0.6), (64, 0.8), (512, 0.95)])
def test_spcauchy_rsample_moments_match_log_prob(d, rho):
    torch.manual_seed(1)
    mu = _unit(d, seed=d)
    q = SphericalCauchy(mu, rho=torch.tensor(rho, dtype=F64))
    z = q.rsample((20_000,))
    assert sphere.check(z).all()
    s = z @ mu
    zonal = SphericalCauchy(_e1(d), rho=torch.tensor(rho, dtype=F64))
    assert _zonal_moment(zonal, d) == pytest.approx(1.0, abs=1e-10)
    for k in (1, 2, 3):
        exact = _zonal_moment(zonal, d, k)
        sk = s**k
        assert abs(sk.mean().item() - exact) < 5 * sk.std().item() / math.sqrt(len(s))
        if k == 1:
            assert q.mean_resultant_length.item() == pytest.approx(exact, rel=1e-9)
    # directions orthogonal to mu are isotropic: the mean is along mu
    assert torch.allclose(z.mean(0), q.mean, atol=6 / math.sqrt(len(z)))


@pytest.mark.parametrize(("d", "rho"), [(3, 0.5), (16, 0.2)])
def test_spcauchy_rsample_agrees_with_importance_weighted_uniform(d, rho):
    torch.manual_seed(8)
    mu = _unit(d, seed=d)
    q = SphericalCauchy(mu, rho=torch.tensor(rho, dtype=F64))
    s = q.rsample((100_000,)) @ mu
    u = HypersphericalUniform(d, dtype=F64).sample((400_000,))
    w = torch.exp(q.log_prob(u) + log_sphere_area(d))
    assert w.sum() ** 2 / (w * w).sum() > 5_000  # effective sample size: the check means something
    su = u @ mu
    for k in (1, 2):
        weighted = ((w * su**k).sum() / w.sum()).item()
        err = (s**k).std().item() / math.sqrt(len(s)) + (w * su**k).std().item() / math.sqrt(len(u))
        assert abs((s**k).mean().item() - weighted) < 5 * err


def test_spcauchy_entropy_is_minus_expected_log_prob():
    torch.manual_seed(2)
    q = SphericalCauchy(_unit(3, 12), rho=torch.tensor([0.1, 0.6, 0.95], dtype=F64))
    lp = q.log_prob(q.sample((50_000,)))
    est, err = -lp.mean(0), lp.std(0) / math.sqrt(lp.shape[0])
    assert ((est - q.entropy()).abs() < 5 * err).all()


def test_spcauchy_rsample_gradients_are_pathwise_derivatives():
    # d/drho E[mu^T z] estimated through rsample == derivative of the exact mean resultant length
    torch.manual_seed(3)
    d = 8
    for logit in (-0.5, 1.0, 3.0):
        t = torch.tensor(logit, dtype=F64, requires_grad=True)
        loc_param = _unit(d).requires_grad_()
        loc = loc_param / loc_param.norm()
        q = SphericalCauchy(loc, rho_logit=t)
        z = q.rsample((50_000,))  # relative standard error of the estimate here: <= 0.0065
        (z @ loc.detach()).mean().backward()
        t_exact = torch.tensor(logit, dtype=F64, requires_grad=True)
        exact = SphericalCauchy(_unit(d), rho_logit=t_exact).mean_resultant_length
        (g_exact,) = torch.autograd.grad(exact, t_exact)
        assert t.grad.item() == pytest.approx(g_exact.item(), rel=0.03)
        assert torch.isfinite(loc_param.grad).all() and loc_param.grad.abs().sum() > 0


def test_spcauchy_rsample_gradient_matches_finite_differences():
    d = 5
    loc_param = torch.randn(3, d, generator=torch.Generator().manual_seed(4), dtype=F64)
    loc_param.requires_grad_()

    def sample(loc_param: torch.Tensor, param: torch.Tensor, logit: bool) -> torch.Tensor:
        loc = loc_param / loc_param.norm(dim=-1, keepdim=True)
        q = SphericalCauchy(loc, rho_logit=param) if logit else SphericalCauchy(loc, rho=param)
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the same noise at every evaluation
            return q.rsample((2,))

    cases = ((True, [-1.0, 0.5, 4.0]), (False, [0.1, 0.5, 0.9]))
    for logit, values in cases:
        p = torch.tensor(values, dtype=F64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda a, b, logit=logit: sample(a, b, logit), (loc_param, p)
        )


def test_spcauchy_contract_shapes_expand_and_validation():
    loc = _unit(4, 3, 6)
    q = SphericalCauchy(loc, rho=torch.full((4, 3), 0.5, dtype=F64))
    assert q.batch_shape == (4, 3) and q.event_shape == (6,)
    assert q.rsample((2,)).shape == (2, 4, 3, 6)
    assert q.log_prob(q.sample()).shape == (4, 3)
    assert q.entropy().shape == (4, 3) and q.mean.shape == (4, 3, 6)
    assert torch.equal(q.mode, q.loc)
    assert SphericalCauchy(_unit(6), rho=torch.tensor([0.1, 0.2], dtype=F64)).batch_shape == (2,)
    e = SphericalCauchy(_unit(6), rho_logit=torch.tensor(0.0, dtype=F64)).expand((5,))
    assert e.batch_shape == (5,) and e.rsample().shape == (5, 6)
    assert torch.allclose(e.rho, torch.full((5,), 0.5, dtype=F64))
    with pytest.raises(ValueError):
        SphericalCauchy(loc)  # neither rho nor logit
    with pytest.raises(ValueError):
        SphericalCauchy(loc, rho=0.5, rho_logit=0.0)
    with pytest.raises(ValueError):
        SphericalCauchy(2 * loc, rho=0.5)  # not unit vectors
    with pytest.raises(ValueError):
        SphericalCauchy(loc, rho=1.0)  # rho must be < 1
    with pytest.raises(ValueError):
        SphericalCauchy(_unit(1), rho=0.5)  # S^0 is not supported
    with pytest.raises(ValueError):
        q.log_prob(torch.ones(4, 3, 6, dtype=F64))  # off the sphere
    assert q.has_rsample and q.support is sphere


def test_kl_divergence_is_registered_and_checks_dimensions():
    loc = _unit(5, 8)
    conc = torch.full((5,), 2.0, dtype=F64)
    p = HypersphericalUniform(8, dtype=F64)
    for q in (
        SphericalCauchy(loc, rho=conc / 4),
        VonMisesFisher(loc, conc),
        PowerSpherical(loc, conc),
    ):
        kl = kl_divergence(q, p)
        assert kl.shape == (5,) and (kl > 0).all()
        assert torch.allclose(kl, log_sphere_area(8) - q.entropy())
        with pytest.raises(ValueError, match="ambient dimensions differ"):
            kl_divergence(q, HypersphericalUniform(9, dtype=F64))
    # the package's own uniform also works for its class (same ambient dim convention)
    ps = PowerSpherical(loc, conc)
    assert torch.allclose(kl_divergence(ps, PackageUniform(8, dtype=F64)), kl_divergence(ps, p))


# --------------------------------------------------------------------------------------------------
# Uniform
# --------------------------------------------------------------------------------------------------


def test_uniform_contract():
    torch.manual_seed(5)
    u = HypersphericalUniform(7, batch_shape=(3,), dtype=F64)
    x = u.sample((20_000,))
    assert x.shape == (20_000, 3, 7) and sphere.check(x).all()
    assert x.mean((0, 1)).abs().max() < 0.02
    assert torch.allclose(u.log_prob(x[:2]), torch.full((2, 3), -log_sphere_area(7), dtype=F64))
    assert torch.allclose(u.entropy(), torch.full((3,), log_sphere_area(7), dtype=F64))
    assert u.expand((4, 3)).batch_shape == (4, 3)
    assert HypersphericalUniform(3).sample().dtype == torch.get_default_dtype()
    assert log_sphere_area(3) == pytest.approx(math.log(4 * math.pi))
    assert log_sphere_area(2) == pytest.approx(math.log(2 * math.pi))
    with pytest.raises(ValueError):
        HypersphericalUniform(1)


# --------------------------------------------------------------------------------------------------
# Bessel functions and von Mises-Fisher
# --------------------------------------------------------------------------------------------------

KAPPAS = [1e-6, 1e-3, 0.1, 1.0, 3.0, 15.0, 60.0, 300.0, 1e4, 1e5]


@pytest.mark.parametrize("d", [2, 3, 8, 33, 64, 100])
def test_log_bessel_matches_scipy_where_scipy_is_finite(d):
    v = d / 2 - 1
    x = np.array(KAPPAS)
    with np.errstate(all="ignore"):
        ref = np.log(scipy.special.ive(v, x))
        ref_ratio = scipy.special.ive(v + 1, x) / scipy.special.ive(v, x)
    ours = log_bessel_ive(v, torch.tensor(x, dtype=F64)).numpy()
    ratio = bessel_ratio(v, torch.tensor(x, dtype=F64)).numpy()
    ok = np.isfinite(ref) & np.isfinite(ref_ratio) & (ref_ratio > 0)
    assert ok.sum() >= 6
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ratio[ok], ref_ratio[ok], rtol=1e-10)


@pytest.mark.parametrize("d", [129, 512, 2048])
def test_log_bessel_large_orders_against_mpmath(d):
    mpmath.mp.dps = 30
    v = d / 2 - 1
    x = torch.tensor([1e-3, 1.0, 50.0, 700.0, 1e5], dtype=F64, requires_grad=True)
    lv = log_bessel_ive(v, x)
    ratio = bessel_ratio(v, x.detach())
    (g,) = torch.autograd.grad(lv.sum(), x)
    assert torch.isfinite(lv).all() and torch.isfinite(g).all()
    for i, xv in enumerate(x.tolist()):
        mx = mpmath.mpf(xv)
        i_v, i_v1 = mpmath.besseli(v, mx), mpmath.besseli(v + 1, mx)
        assert lv[i].item() == pytest.approx(float(mpmath.log(i_v) - mx), rel=1e-13)
        assert ratio[i].item() == pytest.approx(float(i_v1 / i_v), rel=1e-12)
        assert g[i].item() == pytest.approx(float(i_v1 / i_v + v / mx - 1), rel=1e-10, abs=1e-15)


def test_bessel_gradients_match_finite_differences():
    x = torch.tensor([0.01, 0.7, 5.0, 40.0, 900.0], dtype=F64, requires_grad=True)
    for v in (0.0, 0.5, 7.0, 20.5, 300.0):
        assert torch.autograd.gradcheck(lambda t, v=v: log_bessel_ive(v, t), (x,))
        assert torch.autograd.gradcheck(lambda t, v=v: bessel_ratio(v, t), (x,))


def _vmf_kl_mpmath(d: int, kappa: float) -> float:
    mpmath.mp.dps = 40
    v, k = mpmath.mpf(d) / 2 - 1, mpmath.mpf(kappa)
    a = mpmath.besseli(v + 1, k) / mpmath.besseli(v, k)
    log_c = (
        v * mpmath.log(k) - (v + 1) * mpmath.log(2 * mpmath.pi) - mpmath.log(mpmath.besseli(v, k))
    )
    log_area = mpmath.log(2) + d * mpmath.log(mpmath.pi) / 2 - mpmath.loggamma(mpmath.mpf(d) / 2)
    return float(log_c + k * a + log_area)


@pytest.mark.parametrize("d", [2, 3, 16, 128, 2048])
def test_vmf_kl_against_mpmath_and_finite(d):
    kappas = [1e-3, 0.5, 10.0, 300.0, 1e5]
    x = torch.tensor(kappas, dtype=F64, requires_grad=True)
    kl = vmf_kl_uniform(d, x)
    (g,) = torch.autograd.grad(kl.sum(), x)
    for i, k in enumerate(kappas):
        assert kl[i].item() == pytest.approx(_vmf_kl_mpmath(d, k), rel=1e-10)
    assert (g > 0).all()
    for dtype in (torch.float32, torch.float64):
        xx = torch.tensor(kappas, dtype=dtype, requires_grad=True)
        k2 = vmf_kl_uniform(d, xx)
        k2.sum().backward()
        ent = VonMisesFisher(_unit(5, d, dtype=dtype), xx.detach()).entropy()
        assert (
            torch.isfinite(k2).all() and torch.isfinite(xx.grad).all() and torch.isfinite(ent).all()
        )


def test_vmf_kl_gradient_matches_derivative():
    x = torch.tensor([0.2, 3.0, 80.0, 5e3], dtype=F64, requires_grad=True)
    for d in (2, 5, 40):
        assert torch.autograd.gradcheck(lambda k, d=d: vmf_kl_uniform(d, k), (x,))


@pytest.mark.parametrize("d", [2, 3, 10])
@pytest.mark.parametrize("kappa", [0.5, 20.0])
def test_vmf_log_prob_integrates_to_one(d, kappa):
    q = VonMisesFisher(_e1(d), torch.tensor(kappa, dtype=F64))
    assert _zonal_moment(q, d) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize(("d", "kappa"), [(2, 10.0), (5, 2000.0), (64, 0.3), (64, 2000.0)])
def test_vmf_sampler_moments(d, kappa):
    torch.manual_seed(6)
    mu = _unit(d, seed=d)
    q = VonMisesFisher(mu, torch.tensor(kappa, dtype=F64))
    z = q.sample((20_000,))
    assert sphere.check(z).all()
    s = z @ mu
    err = s.std().item() / math.sqrt(len(s))
    assert abs(s.mean().item() - q.mean.norm().item()) < 5 * err + 1e-12
    # E[1 - s^2] = (d-1) A / kappa for the vMF
    a = bessel_ratio(d / 2 - 1, torch.tensor(kappa, dtype=F64)).item()
    one_m = 1 - s**2
    assert abs(one_m.mean().item() - (d - 1) * a / kappa) < 5 * one_m.std().item() / math.sqrt(
        len(s)
    )


def test_vmf_rsample_gradients_flow_and_are_finite():
    torch.manual_seed(7)
    for dtype in (torch.float32, torch.float64):
        for d in (2, 3, 64, 2048):
            loc_param = torch.randn(16, d, dtype=dtype, requires_grad=True)
            kappa = torch.logspace(-3, 5, 16, dtype=dtype).requires_grad_()
            q = VonMisesFisher(F.normalize(loc_param, dim=-1), kappa)
            z = q.rsample()
            (z.sum() + kl_divergence(q, HypersphericalUniform(d, dtype=dtype)).sum()).backward()
            assert torch.isfinite(z).all() and sphere.check(z).all()
            assert torch.isfinite(loc_param.grad).all() and torch.isfinite(kappa.grad).all()


def test_vmf_contract():
    loc = _unit(4, 2, 5)
    q = VonMisesFisher(loc, torch.full((4, 2), 3.0, dtype=F64))
    assert q.batch_shape == (4, 2) and q.event_shape == (5,)
    assert q.rsample((3,)).shape == (3, 4, 2, 5)
    assert q.expand((7, 4, 2)).sample().shape == (7, 4, 2, 5)
    assert q.mean.shape == (4, 2, 5)
    with pytest.raises(ValueError):
        VonMisesFisher(loc, torch.full((4, 2), -1.0, dtype=F64))
    with pytest.raises(ValueError):
        q.log_prob(torch.zeros(4, 2, 5, dtype=F64))


# --------------------------------------------------------------------------------------------------
# Power spherical
# --------------------------------------------------------------------------------------------------


def test_power_spherical_contract_and_density():
    loc = _unit(3, 4, dtype=torch.float64)
    q = PowerSpherical(loc, torch.tensor([0.5, 2.0, 30.0], dtype=F64))
    assert q.batch_shape == (3,) and q.event_shape == (4,)
    z = q.rsample((6,))
    assert z.shape == (6, 3, 4) and sphere.check(z).all()
    assert q.expand((2, 3)).batch_shape == (2, 3)
    assert q.expand((2, 3)).sample().shape == (2, 3, 4)
    for d, kappa in ((3, 2.0), (6, 15.0)):
        one = PowerSpherical(_e1(d), torch.tensor(kappa, dtype=F64))
        assert _zonal_moment(one, d) == pytest.approx(1.0, abs=1e-10)
    with pytest.raises(ValueError):
        q.log_prob(2 * z)
