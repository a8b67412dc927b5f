"""Distributions on the unit sphere, following the ``torch.distributions`` contract.

Everywhere in this module ``dim`` (or ``d``) is the AMBIENT dimension: a sample has ``d`` entries
and lies on the sphere S^{d-1} in R^d. Densities (``log_prob``) are with respect to the surface
measure of S^{d-1}, so the uniform density is ``1 / |S^{d-1}|``, ``|S^{d-1}| = 2 pi^{d/2} /
Gamma(d/2)``.

Families:

* :class:`SphericalCauchy` (Kato & McCullagh 2020), the posterior of Sablica & Hornik
  (arXiv 2506.21278): exact Moebius-transform sampler, closed-form KL to the uniform distribution
  evaluated to float64 accuracy for every ``d >= 2`` by series / closed forms chosen per ``d``.
* :class:`VonMisesFisher`: Wood's rejection sampler with the reparameterization part of the
  Davidson et al. (2018) gradient; log-Bessel functions in torch for any order and argument.
* :class:`PowerSpherical`: the ``power_spherical`` package's class with torch's shape contract.
* :class:`HypersphericalUniform`: the prior of the spherical families.

KL divergences to :class:`HypersphericalUniform` are registered with
:func:`torch.distributions.kl.register_kl`, so ``torch.distributions.kl_divergence(q, p)`` works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cache, lru_cache
from typing import Any

import power_spherical as _ps
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.distributions import Distribution, constraints
from torch.distributions.kl import register_kl
from torch.distributions.utils import lazy_property

__all__ = [
    "HypersphericalUniform",
    "PowerSpherical",
    "SphericalCauchy",
    "VonMisesFisher",
    "bessel_ratio",
    "log_bessel_iv",
    "log_bessel_ive",
    "log_sphere_area",
    "sphere",
    "spcauchy_kl_uniform",
    "vmf_kl_uniform",
]


# --------------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------------


def log_sphere_area(dim: int) -> float:
    """Log surface area of the unit sphere S^{dim-1} in R^dim.

    Args:
        dim: AMBIENT dimension (the number of entries of a point on the sphere), >= 1.

    Returns:
        ``log(2 pi^{dim/2} / Gamma(dim/2))``.
    """
    return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


class _Sphere(constraints.Constraint):
    """Unit vectors: ``| ||x|| - 1 | <= 16 sqrt(d) eps(dtype)`` over the last dimension.

    The tolerance grows like ``sqrt(d)`` because rounding errors of a normalised d-vector add up
    like a random walk; 16 is a safety factor that normalised float32 vectors with d = 2048 pass.
    """

    is_discrete = False
    event_dim = 1

    def check(self, value: Tensor) -> Tensor:
        """Boolean tensor of shape ``value.shape[:-1]``: which rows are unit vectors."""
        if not value.is_floating_point():
            return torch.zeros(value.shape[:-1], dtype=torch.bool, device=value.device)
        tol = 16.0 * torch.finfo(value.dtype).eps * max(1.0, math.sqrt(value.shape[-1]))
        norm = torch.linalg.vector_norm(value, dim=-1)
        return (norm - 1.0).abs() <= tol

    def __repr__(self) -> str:
        return "Sphere()"


sphere = _Sphere()
"""Constraint of points on the unit sphere (event_dim 1), used as ``support`` and for ``loc``."""


def _broadcast_shape(*shapes: tuple[int, ...]) -> torch.Size:
    """``torch.broadcast_shapes`` without its overhead (~15 us a call, on the hot path here)."""
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for shape in shapes:
        for i, n in enumerate(shape, start=ndim - len(shape)):
            if n != 1:
                if out[i] not in (1, n):
                    raise ValueError(f"shapes {shapes} cannot be broadcast together")
                out[i] = n
    return torch.Size(out)


def _work_dtype(x: Tensor) -> torch.dtype:
    # Scalar special functions run in float64 (cheap: one value per example); MPS has no float64.
    return torch.float32 if x.device.type == "mps" else torch.float64


def _check_dim(dim: int, what: str) -> int:
    if int(dim) != dim or dim < 2:
        raise ValueError(f"{what}: the ambient dimension must be an integer >= 2, got {dim}.")
    return int(dim)


# --------------------------------------------------------------------------------------------------
# Spherical Cauchy: KL to the uniform distribution
# --------------------------------------------------------------------------------------------------
#
# KL(spCauchy(mu, rho) || U(S^{d-1})) = (d - 1) * F(rho) with
#     F(rho) = h(rho) - log(1 - rho^2),   h(rho) = E_s log(1 + rho^2 + 2 rho s),
# s = mu^T U for U uniform, density of s proportional to (1 - s^2)^((d-3)/2). Two expansions of h:
#   rho-series:  h = -sum_k c_k rho^(2k) / k,  c_k = (1 - d/2)_k / (d/2)_k   (finite for even d),
#   r-series:    h = log(1 + rho^2) - sum_k a_k r^(2k) / (2k),  a_k = (1/2)_k / (d/2)_k,
#                r = 2 rho / (1 + rho^2).
# Both converge at rho = 1 for d >= 2, at rates k^-d and k^-(d+1)/2 (times a fast-decaying factor
# for large d). Per d we pick the one needing fewer terms for float64 accuracy at rho -> 1. For odd
# d <= 15 both are slow near rho = 1; there h has an exact closed form
#     h = (1 - rho)^(d-1) A(rho) log(1 - rho) + B(rho) log(1 + rho) + P(rho)
# with Laurent polynomials A, B, P generated exactly (rational arithmetic, partial fractions of
# c_k / k), used for rho >= 1/2, with the rho-series below 1/2. A series is evaluated as a matrix
# of powers times a coefficient matrix (value and derivative columns), in float64.
#
# _spcauchy_kl_terms returns (d-1) F and (d-1) G with G = (1 - rho) dF/drho, both finite as
# rho -> 1; then dKL/drho = (d-1) G / (1 - rho) and dKL/dlogit = (d-1) G rho.

_ODD_CLOSED_MAX = 15  # odd d up to here use the closed form near rho = 1
_CLOSED_FROM = 0.5  # closed form for rho >= this, rho-series below
_SERIES_CAP = 120  # never use a truncated series longer than this
_TAIL_VALUE = 2.0**-56  # truncation error relative to F: below float64 rounding
_TAIL_GRAD = 1e-14  # truncation error relative to dF/drho
_R_SERIES_HANDICAP = 40  # prefer the rho-series unless it needs this many more terms


@dataclass(frozen=True)
class _Plan:
    """How KL(spCauchy || uniform) is evaluated for one ambient dimension ``d``."""

    kind: str  # "d2", "rho", "r" or "closed"
    exponents: tuple[float, ...] = ()  # powers of x (rho^2 or r^2) or of rho (closed form)
    coef: tuple[tuple[float, ...], ...] = ()  # rows per exponent, one column per output
    series: _Plan | None = None  # the rho-series used below _CLOSED_FROM ("closed" only)
    m: int = 0  # (d - 1) / 2 for the closed form


def _rho_series_coef(d: int, n: int) -> list[Fraction]:
    """Exact c_k = (1 - d/2)_k / (d/2)_k for k = 1..n."""
    c = Fraction(d, 2)
    out, ck = [], Fraction(1)
    for k in range(1, n + 1):
        ck *= (k - c) / (c + k - 1)
        out.append(ck)
    return out


def _r_series_coef(d: int, n: int) -> list[Fraction]:
    """Exact a_k = (1/2)_k / (d/2)_k for k = 1..n."""
    c = Fraction(d, 2)
    out, ak = [], Fraction(1)
    for k in range(1, n + 1):
        ak *= (k - Fraction(1, 2)) / (c + k - 1)
        out.append(ak)
    return out


def _terms_needed(
    mags: list[float], value_tail: float, grad_tail: float, scale: float = 1.0, kmax: int = 0
) -> int | None:
    """Fewest terms K whose truncation error is below the tolerances, or None if K > kmax.

    ``mags[k-1] = |coefficient_k|``. The dropped terms, relative to the leading one (x^1), are
    bounded by sum_{k>K} mags_k / k * scale^(k-1) for the value and sum_{k>K} mags_k *
    scale^(k-1) for the derivative, where x <= scale. The sums stop at ``len(mags)``; callers pass
    enough terms that the rest is negligible.
    """
    n = len(mags)
    tail_v = [0.0] * (n + 1)
    tail_g = [0.0] * (n + 1)
    for k in range(n, 0, -1):
        tail_v[k - 1] = tail_v[k] + mags[k - 1] / k * scale ** (k - 1)
        tail_g[k - 1] = tail_g[k] + mags[k - 1] * scale ** (k - 1)
    for big_k in range(0, min(n, kmax) + 1):
        if tail_v[big_k] <= value_tail and tail_g[big_k] <= grad_tail:
            return big_k
    return None


def _magnitudes(n: int, d: int, kind: str) -> list[float]:
    """|c_k| (kind "rho") or a_k (kind "r") as floats for k = 1..n (only used to count terms)."""
    c = d / 2.0
    out, v = [], 1.0
    for k in range(1, n + 1):
        v *= abs(k - c) / (c + k - 1) if kind == "rho" else (k - 0.5) / (c + k - 1)
        out.append(v)
        if v == 0.0:
            out.extend([0.0] * (n - k))
            break
    return out


def _series_plan(d: int, kind: str, big_k: int) -> _Plan:
    if kind == "rho":
        ck = _rho_series_coef(d, big_k)
        # columns: h = sum x^k (-c_k / k);  S1 = sum x^(k-1) (-c_k)  [h' = 2 rho S1]
        rows = [[0.0, 0.0] for _ in range(big_k + 1)]
        for k, c in enumerate(ck, start=1):
            rows[k][0] = float(-c / k)
            rows[k - 1][1] = float(-c)
    else:
        ak = _r_series_coef(d, big_k)
        # columns: g = sum x^k (-a_k / (2k));  S1 = sum x^(k-1) a_k
        rows = [[0.0, 0.0] for _ in range(big_k + 1)]
        for k, a in enumerate(ak, start=1):
            rows[k][0] = float(-a / (2 * k))
            rows[k - 1][1] = float(a)
    return _Plan(
        kind=kind,
        exponents=tuple(float(k) for k in range(big_k + 1)),
        coef=tuple(tuple(r) for r in rows),
    )


def _laurent_diff(a: dict[int, Fraction]) -> dict[int, Fraction]:
    return {k - 1: k * v for k, v in a.items() if k != 0 and v != 0}


_Laurent = dict[int, Fraction]  # exponent -> coefficient


def _closed_form_odd(d: int) -> tuple[_Laurent, _Laurent, _Laurent]:
    """Exact h for odd d = 2m + 1 as (A, B, P): h = (1-rho)^(2m) A log(1-rho) + B log(1+rho) + P.

    From c_k / k = C / (k prod_i (k^2 - beta_i^2)), beta_i = i - 1/2, split into partial fractions;
    each sum_k rho^(2k) / (k -+ beta) is rho^(+-2 beta) times artanh(rho) minus a finite sum.
    """
    m = (d - 1) // 2
    betas = [Fraction(2 * i - 1, 2) for i in range(1, m + 1)]
    double_fact = 1
    for j in range(1, 2 * m, 2):
        double_fact *= j
    big_c = Fraction((-1) ** m) * Fraction(double_fact, 2**m) ** 2  # Gamma(m+1/2) / Gamma(1/2-m)
    a0 = Fraction(1)
    for b in betas:
        a0 /= -b * b
    log_minus: dict[int, Fraction] = {0: big_c * a0}  # coefficient of log(1 - rho)
    log_plus: dict[int, Fraction] = {0: big_c * a0}  # coefficient of log(1 + rho)
    poly: dict[int, Fraction] = {}

    def add(dct: dict[int, Fraction], p: int, v: Fraction) -> None:
        dct[p] = dct.get(p, Fraction(0)) + v

    for i, b in enumerate(betas):
        den = b * 2 * b
        for j, bj in enumerate(betas):
            if j != i:
                den *= b * b - bj * bj
        coef = -big_c * 2 / den  # times [rho^(2b)(artanh + N) + rho^(-2b)(artanh - P)]
        tb = int(2 * b)
        for p in (tb, -tb):  # artanh = (log(1+rho) - log(1-rho)) / 2
            add(log_plus, p, coef / 2)
            add(log_minus, p, -coef / 2)
        for n in range(2 - tb, 0, 2):
            add(poly, tb + n, coef / n)
        for n in range(1, tb + 1, 2):
            add(poly, n - tb, -coef / n)
    # log_minus * rho^(2m-1) is a polynomial with a root of order 2m at rho = 1: divide it out.
    shift = 2 * m - 1
    num = [Fraction(0)] * (4 * m - 1)
    for p, v in log_minus.items():
        num[p + shift] += v
    quotient = [Fraction(0)] * (len(num) - 2 * m)
    rem = num[:]
    divisor = [Fraction(1)]
    for _ in range(2 * m):  # (1 - rho)^(2m), ascending powers
        divisor = [
            a - b for a, b in zip(divisor + [Fraction(0)], [Fraction(0)] + divisor, strict=True)
        ]
    for i in range(len(rem) - 1, len(divisor) - 2, -1):  # long division from the top power
        q = rem[i] / divisor[-1]
        quotient[i - len(divisor) + 1] = q
        for j, dv in enumerate(divisor):
            rem[i - len(divisor) + 1 + j] -= q * dv
    if any(rem):
        raise AssertionError(f"closed form for d={d}: log(1-rho) coefficient is not divisible")
    a_poly = {i - shift: q for i, q in enumerate(quotient) if q != 0}
    clean = {k: v for k, v in poly.items() if v != 0}
    return a_poly, {k: v for k, v in log_plus.items() if v != 0}, clean


@cache
def _spcauchy_plan(d: int) -> _Plan:
    """Choose and precompute the evaluation of KL(spCauchy || uniform) for ambient dimension d."""
    if d == 2:
        return _Plan(kind="d2")
    n_count = 1000  # beyond this, every candidate's remainder is far below float64 rounding
    rho_mag = _magnitudes(n_count, d, "rho")
    if d % 2 == 1 and d <= _ODD_CLOSED_MAX:
        # rho-series below _CLOSED_FROM: x = rho^2 <= 1/4 shrinks the tail.
        c1 = abs(rho_mag[0])
        big_k = _terms_needed(
            rho_mag,
            _TAIL_VALUE * (1 + c1),
            _TAIL_GRAD * (1 + c1),
            scale=_CLOSED_FROM**2,
            kmax=_SERIES_CAP,
        )
        assert big_k is not None
        series = _series_plan(d, "rho", big_k)
        a_poly, b_poly, p_poly = _closed_form_odd(d)
        cols = [a_poly, _laurent_diff(a_poly), b_poly, _laurent_diff(b_poly), p_poly]
        cols.append(_laurent_diff(p_poly))
        exps = sorted({e for col in cols for e in col})
        rows = tuple(tuple(float(col.get(e, 0)) for col in cols) for e in exps)
        return _Plan(
            kind="closed",
            exponents=tuple(float(e) for e in exps),
            coef=rows,
            series=series,
            m=(d - 1) // 2,
        )
    c1 = 1.0 - 2.0 / d  # F >= (1 - c_1) x with c_1 = (1 - d/2) / (d/2)
    if d % 2 == 0:
        exact = d // 2 - 1  # c_k = 0 from k = d/2 on
        k_rho = _terms_needed(
            rho_mag[:exact], _TAIL_VALUE * (1 + c1), _TAIL_GRAD * (1 + c1), kmax=_SERIES_CAP
        )
    else:
        k_rho = _terms_needed(
            rho_mag, _TAIL_VALUE * (1 + c1), _TAIL_GRAD * (1 + c1), kmax=_SERIES_CAP
        )
    r_mag = _magnitudes(n_count, d, "r")
    a1 = 1.0 / d
    k_r = _terms_needed(r_mag, _TAIL_VALUE * (1 - a1) / 2, _TAIL_GRAD * (1 - a1), kmax=_SERIES_CAP)
    # The r-series needs ~12 more elementwise kernels than the rho-series; one kernel costs about
    # as much as 15 extra terms in the running product, hence the handicap.
    if k_r is not None and (k_rho is None or k_r + _R_SERIES_HANDICAP < k_rho):
        return _series_plan(d, "r", k_r)
    if k_rho is None:
        raise AssertionError(f"no series converges fast enough for d={d}")
    return _series_plan(d, "rho", k_rho)


@lru_cache(maxsize=256)
def _plan_tensors(
    d: int, device: torch.device, dtype: torch.dtype, which: str = "main"
) -> tuple[Tensor, Tensor]:
    """Exponents and coefficient matrix of a plan on a device; series columns pre-scaled."""
    plan = _spcauchy_plan(d)
    if which == "series":
        assert plan.series is not None
        plan = plan.series
    exps = torch.tensor(plan.exponents, dtype=dtype, device=device)
    coef = torch.tensor(plan.coef, dtype=dtype, device=device)
    # rho-series: columns -> (d-1) h and (d-1) h' / rho;  r-series: (d-1) g and -4 (d-1) S1
    if plan.kind == "rho":
        coef = coef * torch.tensor([d - 1.0, 2.0 * (d - 1)], dtype=dtype, device=device)
    elif plan.kind == "r":
        coef = coef * torch.tensor([d - 1.0, -4.0 * (d - 1)], dtype=dtype, device=device)
    return exps, coef.T.contiguous()  # (outputs, terms), the layout _power_matmul takes


def _power_matmul(x: Tensor, coef: Tensor) -> Tensor:
    """sum_k coef[j, k] x^k (k = 0..K) for every row j of coef: shape x.shape + (n_rows,).

    Powers by a running product (relative error <= k eps / 2 each, far below the tolerance here
    and ~4x cheaper than ``torch.pow`` at these sizes). The contraction is an elementwise product
    and sum, not a BLAS matmul: for such tiny products a multithreaded BLAS costs milliseconds
    of thread synchronisation when the other cores are busy (measured on the shared 2-core
    machine), for a few microseconds saved otherwise. ``coef`` is stored transposed (columns, K+1).
    """
    shape = x.shape + (coef.shape[-1] - 1,)
    powers = torch.cat([x.new_ones(x.shape + (1,)), x.unsqueeze(-1).expand(shape)], -1)
    return torch.linalg.vecdot(torch.cumprod(powers, -1).unsqueeze(-2), coef)


def _spcauchy_kl_terms(d: int, rho: Tensor, om: Tensor, log_om: Tensor) -> tuple[Tensor, Tensor]:
    """KL = (d-1) F and (d-1) G with G = (1 - rho) dF/drho, from rho, 1 - rho, log(1 - rho).

    Pure torch (autograd can differentiate it); the KL itself uses the analytic G instead.
    """
    plan = _spcauchy_plan(d)
    dm1 = d - 1.0
    rho2 = rho * rho
    # log(1 - rho^2): log1p(-rho^2) for small rho (the split form cancels there), split near 1
    small = rho < _CLOSED_FROM
    log_1m_rho2 = torch.where(small, torch.log1p(-rho2), log_om + torch.log1p(rho))
    if plan.kind == "d2":
        return -log_1m_rho2, 2 * rho / (1 + rho)
    if plan.kind == "rho":
        _, coef = _plan_tensors(d, rho.device, rho.dtype)
        out0, out1 = _power_matmul(rho2, coef).unbind(-1)
        return torch.sub(out0, log_1m_rho2, alpha=dm1), rho * (om * out1 + 2 * dm1 / (1 + rho))
    if plan.kind == "r":
        _, coef = _plan_tensors(d, rho.device, rho.dtype)
        one_p = 1 + rho2
        out0, out1 = _power_matmul(4 * rho2 / (one_p * one_p), coef).unbind(-1)
        kl = torch.add(out0, torch.log1p(rho2) - log_1m_rho2, alpha=dm1)
        dkl = rho * (
            2 * dm1 * (om / one_p + 1 / (1 + rho)) + om * om * (1 + rho) / one_p.pow(3) * out1
        )
        return kl, dkl
    # closed form (odd d <= _ODD_CLOSED_MAX): series below _CLOSED_FROM, closed form above
    _, coef_s = _plan_tensors(d, rho.device, rho.dtype, "series")
    rho_s = torch.where(small, rho, torch.zeros_like(rho))
    out0, out1 = _power_matmul(rho_s * rho_s, coef_s).unbind(-1)
    kl_s = torch.sub(out0, torch.log1p(-rho_s * rho_s), alpha=dm1)
    dkl_s = rho_s * ((1 - rho_s) * out1 + 2 * dm1 / (1 + rho_s))
    half = torch.full_like(rho, _CLOSED_FROM)
    rho_c = torch.where(small, half, rho)
    om_c = torch.where(small, half, om)
    lom_c = torch.where(small, torch.full_like(rho, math.log(_CLOSED_FROM)), log_om)
    lop_c = torch.log1p(rho_c)
    exps, coef = _plan_tensors(d, rho.device, rho.dtype)
    powers = torch.pow(rho_c.unsqueeze(-1), exps).unsqueeze(-2)
    a, da, b, db, p, dp = torch.linalg.vecdot(powers, coef).unbind(-1)
    two_m = 2 * plan.m
    om_pow = om_c.pow(two_m - 1)
    h = om_pow * om_c * a * lom_c + b * lop_c + p
    dh = om_pow * ((-two_m * a + om_c * da) * lom_c - a) + db * lop_c + b / (1 + rho_c) + dp
    kl_c = dm1 * (h - lom_c - lop_c)
    dkl_c = dm1 * (om_c * dh + 2 * rho_c / (1 + rho_c))
    return torch.where(small, kl_s, kl_c), torch.where(small, dkl_s, dkl_c)


def _spcauchy_inputs(x: Tensor, is_logit: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(rho, 1 - rho, log(1 - rho)) from rho or from its logit, precise as rho -> 1."""
    if is_logit:
        # log(1 - rho) = -softplus(logit); not F.logsigmoid, whose CPU kernel opens a parallel
        # region even for 128 values (milliseconds lost when the other cores are busy). The
        # threshold keeps softplus(x) = x + log1p(e^-x) exact to float64 rounding.
        return torch.sigmoid(x), torch.sigmoid(-x), -F.softplus(x, threshold=50.0)
    return x, 1 - x, torch.log1p(-x)


class _SpCauchyKL(torch.autograd.Function):
    """KL(spCauchy || uniform) with the analytic derivative (no graph through the series)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, d: int, is_logit: bool) -> Tensor:  # type: ignore[override]
        work = _work_dtype(x)
        xw = x if x.dtype == work else x.to(work)
        rho, om, log_om = _spcauchy_inputs(xw, is_logit)
        kl, dkl = _spcauchy_kl_terms(d, rho, om, log_om)
        # dKL/dlogit = (d-1) G rho;  dKL/drho = (d-1) G / (1 - rho)
        grad = dkl * rho if is_logit else dkl / om
        if work != x.dtype:
            kl, grad = kl.to(x.dtype), grad.to(x.dtype)
        ctx.save_for_backward(grad)
        return kl

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad_out * grad, None, None


def spcauchy_kl_uniform(
    dim: int, rho: Tensor | None = None, rho_logit: Tensor | None = None
) -> Tensor:
    """KL( spCauchy(mu, rho) || Uniform(S^{dim-1}) ), which depends on rho and dim only.

    Accurate to float64 rounding (relative error ~1e-15) for every integer ``dim >= 2`` and every
    rho in [0, 1); from the logit it stays finite and precise for any finite logit (rho -> 1).
    Gradients are analytic: d/drho, or d/dlogit computed without forming 1 - rho from rho.

    Args:
        dim: AMBIENT dimension d (points have d entries).
        rho: Concentration in [0, 1), any shape. Exactly one of ``rho``/``rho_logit``.
        rho_logit: ``logit(rho)``, any shape.

    Returns:
        KL in nats, same shape and dtype as the given parameter.
    """
    d = _check_dim(dim, "spcauchy_kl_uniform")
    if (rho is None) == (rho_logit is None):
        raise ValueError("Pass exactly one of rho and rho_logit.")
    if rho_logit is not None:
        return _SpCauchyKL.apply(rho_logit, d, True)
    assert rho is not None
    return _SpCauchyKL.apply(rho, d, False)


def _spcauchy_mean_resultant(d: int, x: Tensor, is_logit: bool) -> Tensor:
    """E[mu^T X] = (1 + rho) G / 2 (from E[(s + rho)/(1 + rho^2 + 2 rho s)] = h'(rho) / 2)."""
    xw = x.to(_work_dtype(x))
    rho, om, log_om = _spcauchy_inputs(xw, is_logit)
    _, dkl = _spcauchy_kl_terms(d, rho, om, log_om)
    return ((1 + rho) * dkl / (2 * (d - 1))).to(x.dtype)


class _MoebiusSample(torch.autograd.Function):
    """Sample y = (1 - rho^2) v / |v|^2 + rho mu, v = u + rho mu, u = g / |g|, g ~ N(0, I).

    Multiplying by r |v|^2 (r = |g|, s = mu^T u) gives the same direction without |v|^2:
    y = z / |z|, z = (1 - rho^2) g + 2 rho (r + rho g^T mu) mu, and |z| = r |v|^2. So a sample
    costs a norm, a dot product and two axpys, and one autograd node with a hand-written backward
    replaces ~15 (the latent step is dominated by per-op overhead at VAE batch sizes). Where u is
    within ~sqrt(eps) of -mu and rho ~ 1 (probability ~eps^((d-1)/2)) r + g^T mu loses relative
    precision, as u + rho mu does in any form; those samples still land on the sphere.

    The backward differentiates y = (1 - rho^2) v / |v|^2 + rho mu with |v|^2 = |z| / r. That
    ignores the final division by the computed |z| (rounding only): exact, since y stays on the
    sphere for every parameter value, so perturbations are tangent and the normalisation's
    Jacobian is the identity on them.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, g: Tensor, loc: Tensor, x: Tensor, is_logit: bool
    ) -> Tensor:
        xu = x.unsqueeze(-1)
        if is_logit:
            rho, om = torch.sigmoid(xu), torch.sigmoid(-xu)
        else:
            rho, om = xu, 1 - xu
        r = torch.linalg.vector_norm(g, dim=-1, keepdim=True)
        p = torch.linalg.vecdot(g, loc).unsqueeze(-1)
        one_m_rho2 = torch.addcmul(om, om, rho)  # (1 - rho)(1 + rho)
        c_mu = 2 * rho * torch.addcmul(r, rho, p)
        # In-place updates and a fused norm: at large d every (batch, d) pass costs memory
        # traffic, and each fresh (batch, d) result costs more than an update in place.
        z = (c_mu * loc).addcmul_(g, one_m_rho2)
        q = (
            torch.linalg.vector_norm(z, dim=-1, keepdim=True)
            .clamp_min(torch.finfo(z.dtype).tiny)
            .reciprocal_()
        )
        ctx.save_for_backward(g, loc, rho, om, r, p, q, one_m_rho2)
        ctx.is_logit = is_logit
        ctx.shapes = (loc.shape, x.shape)
        return z.mul_(q)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor) -> tuple[None, Tensor | None, Tensor | None, None]:  # type: ignore[override]
        g, loc, rho, om, r, p, q, one_m_rho2 = ctx.saved_tensors
        loc_shape, x_shape = ctx.shapes
        g_gy = torch.linalg.vecdot(g, gy).unsqueeze(-1)
        mu_gy = torch.linalg.vecdot(loc.expand_as(gy), gy).unsqueeze(-1)
        v_gy = torch.addcmul(g_gy / r, rho, mu_gy)  # v . gy, v = g / r + rho mu
        w = r * q  # 1 / |v|^2
        a = one_m_rho2 * w  # (1 - rho^2) / |v|^2
        one_pa = 1 + a
        g_loc = g_x = None
        if ctx.needs_input_grad[1]:
            # dy = rho (1 + a) dmu - 2 a rho w (v . dmu) v
            k = -2 * a * rho * w * v_gy
            g_loc = ((rho * one_pa) * gy).addcmul_(g, k / r).addcmul_(loc, k * rho)
            g_loc = g_loc.sum_to_size(loc_shape)
        if ctx.needs_input_grad[2]:
            # dy/drho = (1 + a) mu - 2 w (rho + a (v . mu)) v,  v . mu = p / r + rho
            k_rho = w * torch.addcmul(rho, a, p / r + rho)
            g_rho = torch.addcmul(one_pa * mu_gy, k_rho, v_gy, value=-2)
            if ctx.is_logit:
                g_rho = g_rho * rho * om
            g_x = g_rho.squeeze(-1).sum_to_size(x_shape)
        return None, g_loc, g_x, None


# --------------------------------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------------------------------


def _expand_loc_scale(dist: Any, cls: type, batch_shape: Any, instance: Any) -> Any:
    """``expand`` of a (loc, scale) family: broadcast both, keep the validation flag."""
    new = dist._get_checked_instance(cls, instance)
    batch_shape = torch.Size(batch_shape)
    cls.__init__(  # type: ignore[misc]
        new,
        dist.loc.expand(batch_shape + dist.event_shape),
        dist.scale.expand(batch_shape),
        validate_args=False,
    )
    new._validate_args = dist._validate_args
    return new


class HypersphericalUniform(Distribution):
    """Uniform distribution on S^{dim-1}; ``dim`` is the AMBIENT dimension (dim entries a sample).

    Args:
        dim: Ambient dimension d >= 2.
        batch_shape: Optional batch shape (samples are ``sample_shape + batch_shape + (dim,)``).
        device: Device of samples (default: CPU).
        dtype: Floating dtype of samples (default: ``torch.get_default_dtype()``).
        validate_args: As in ``torch.distributions``.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = sphere
    has_rsample = True

    def __init__(
        self,
        dim: int,
        batch_shape: tuple[int, ...] | torch.Size = (),
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self.dim = _check_dim(dim, "HypersphericalUniform")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype if dtype is not None else torch.get_default_dtype()
        self._log_area = log_sphere_area(self.dim)
        super().__init__(torch.Size(batch_shape), torch.Size([self.dim]), validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> HypersphericalUniform:
        """Same distribution with a new batch shape."""
        new = self._get_checked_instance(HypersphericalUniform, _instance)
        HypersphericalUniform.__init__(
            new, self.dim, torch.Size(batch_shape), self.device, self.dtype, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: Any = torch.Size()) -> Tensor:
        """Uniform points: normalised standard normal vectors (no parameters to differentiate)."""
        shape = self._extended_shape(torch.Size(sample_shape))
        g = torch.randn(shape, device=self.device, dtype=self.dtype)
        return F.normalize(g, dim=-1, eps=torch.finfo(self.dtype).tiny)

    def sample(self, sample_shape: Any = torch.Size()) -> Tensor:
        """Uniform points on the sphere."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """``-log |S^{dim-1}|`` at every point (density w.r.t. surface area)."""
        if self._validate_args:
            self._validate_sample(value)
        shape = _broadcast_shape(value.shape[:-1], self.batch_shape)
        return torch.full(shape, -self._log_area, dtype=value.dtype, device=value.device)

    def entropy(self) -> Tensor:
        """``log |S^{dim-1}|``, shape batch_shape."""
        return torch.full(self.batch_shape, self._log_area, dtype=self.dtype, device=self.device)

    @property
    def mean(self) -> Tensor:
        """The zero vector."""
        return torch.zeros(self._extended_shape(), dtype=self.dtype, device=self.device)

    @property
    def mode(self) -> Tensor:
        """Every point is a mode: NaN, like torch does for flat densities."""
        return torch.full(self._extended_shape(), math.nan, dtype=self.dtype, device=self.device)

    def __repr__(self) -> str:
        return f"HypersphericalUniform(dim={self.dim}, batch_shape={tuple(self.batch_shape)})"


class SphericalCauchy(Distribution):
    """Spherical Cauchy distribution on S^{d-1} (Kato & McCullagh 2020).

    Density w.r.t. the uniform probability measure:
    ``((1 - rho^2) / (1 + rho^2 - 2 rho mu^T x))^(d-1)``; ``log_prob`` is w.r.t. surface area like
    the other families. ``rho = 0`` is the uniform distribution; rho -> 1 concentrates at ``loc``.
    ``d = loc.shape[-1]`` is the AMBIENT dimension. ``rsample``, the KL and the entropy have
    hand-written backward passes (first derivatives only).

    Args:
        loc: (..., d) unit vectors (the mode), d >= 2.
        rho: (...) concentration in [0, 1). Exactly one of ``rho`` / ``rho_logit``.
        rho_logit: (...) ``logit(rho)`` (like ``Bernoulli(logits=)``); use it when rho can approach
            1: 1 - rho is then computed as ``sigmoid(-logit)`` and nothing is lost.
        validate_args: As in ``torch.distributions``.
    """

    arg_constraints = {
        "loc": sphere,
        "rho": constraints.half_open_interval(0.0, 1.0),
        "rho_logit": constraints.real,
    }
    support = sphere
    has_rsample = True

    def __init__(
        self,
        loc: Tensor,
        rho: Tensor | float | None = None,
        rho_logit: Tensor | float | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if (rho is None) == (rho_logit is None):
            raise ValueError("SphericalCauchy: pass exactly one of rho and rho_logit.")
        self._dim = _check_dim(loc.shape[-1], "SphericalCauchy")
        param = rho if rho is not None else rho_logit
        if not isinstance(param, Tensor):
            param = torch.tensor(param, dtype=loc.dtype, device=loc.device)
        batch_shape = _broadcast_shape(loc.shape[:-1], param.shape)
        self.loc = loc.expand(batch_shape + loc.shape[-1:])
        self._is_logit = rho is None
        if self._is_logit:
            self.rho_logit = param.expand(batch_shape)
        else:
            self.rho = param.expand(batch_shape)
        super().__init__(batch_shape, loc.shape[-1:], validate_args)

    @lazy_property
    def rho(self) -> Tensor:
        """Concentration rho in [0, 1)."""
        return torch.sigmoid(self.rho_logit)

    @lazy_property
    def rho_logit(self) -> Tensor:
        """``logit(rho)``."""
        return torch.logit(self.rho)

    @property
    def _param(self) -> Tensor:
        return self.rho_logit if self._is_logit else self.rho

    def _rho_om_logom(self) -> tuple[Tensor, Tensor, Tensor]:
        return _spcauchy_inputs(self._param, self._is_logit)

    def expand(self, batch_shape: Any, _instance: Any = None) -> SphericalCauchy:
        """Same distribution broadcast to a new batch shape."""
        new = self._get_checked_instance(SphericalCauchy, _instance)
        batch_shape = torch.Size(batch_shape)
        loc = self.loc.expand(batch_shape + self.event_shape)
        param = self._param.expand(batch_shape)
        if self._is_logit:
            SphericalCauchy.__init__(new, loc, rho_logit=param, validate_args=False)
        else:
            SphericalCauchy.__init__(new, loc, rho=param, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: Any = torch.Size()) -> Tensor:
        """Exact reparameterized sample by a Moebius transformation of a uniform point.

        ``y = (1 - rho^2)(u + rho mu) / |u + rho mu|^2 + rho mu`` with u uniform: no rejection,
        differentiable in ``loc`` and rho / rho_logit.
        """
        shape = self._extended_shape(torch.Size(sample_shape))
        dtype = self.loc.dtype
        g = torch.randn(shape, dtype=dtype, device=self.loc.device)
        return _MoebiusSample.apply(g, self.loc, self._param, self._is_logit)

    def sample(self, sample_shape: Any = torch.Size()) -> Tensor:
        """Sample without gradient."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log density w.r.t. surface area on S^{d-1}."""
        if self._validate_args:
            self._validate_sample(value)
        d = self._dim
        rho, om, log_om = self._rho_om_logom()
        sq = (value - self.loc).pow(2).sum(-1)  # |x - mu|^2 = 2 - 2 mu^T x, without cancellation
        # 1 + rho^2 - 2 rho mu^T x = (1 - rho)^2 + rho |x - mu|^2, added in logs so nothing
        # underflows as rho -> 1; the masked log keeps gradients finite where rho |x - mu|^2 = 0.
        b = rho * sq
        pos = b > 0
        log_b = torch.log(torch.where(pos, b, torch.ones_like(b)))
        log_den = torch.where(pos, torch.logaddexp(2 * log_om, log_b), 2 * log_om)
        return (d - 1) * (log_om + torch.log1p(rho) - log_den) - log_sphere_area(d)

    def entropy(self) -> Tensor:
        """``log |S^{d-1}| - KL(self || uniform)``."""
        return log_sphere_area(self._dim) - self.kl_to_uniform()

    def kl_to_uniform(self) -> Tensor:
        """KL(self || Uniform(S^{d-1})), shape batch_shape (see :func:`spcauchy_kl_uniform`)."""
        return _SpCauchyKL.apply(self._param, self._dim, self._is_logit)

    @property
    def mean_resultant_length(self) -> Tensor:
        """``E[mu^T X]`` (in [0, 1)), differentiable."""
        return _spcauchy_mean_resultant(self._dim, self._param, self._is_logit)

    @property
    def mean(self) -> Tensor:
        """``E[X] = loc * E[mu^T X]``."""
        return self.loc * self.mean_resultant_length.unsqueeze(-1)

    @property
    def mode(self) -> Tensor:
        """The mode is ``loc``."""
        return self.loc


# --------------------------------------------------------------------------------------------------
# Modified Bessel functions of the first kind, any order v >= 0, in torch
# --------------------------------------------------------------------------------------------------
#
# log ive_v(x) = log I_v(x) - x and B_v(x) = 1 - I_{v+1}(x) / I_v(x) (so the ratio A = 1 - B keeps
# its relative precision where A -> 1). For v >= _DEBYE_MIN: the uniform (Debye) expansion with
# _DEBYE_TERMS terms (relative error ~1e-15 there, checked against mpmath in the tests); the
# ratio from the difference of two expansions written without cancellation. For smaller v: the
# expansion at N = v + n >= _DEBYE_MIN, then the three-term recurrence run downward in terms of
# q_j = I_{j-1}/I_j - 1 = 2j/x - B_j, which is stable (errors do not grow going down).

_DEBYE_MIN = 16.0
_DEBYE_TERMS = 12


@lru_cache(maxsize=1)
def _debye_polynomials() -> tuple[tuple[float, ...], ...]:
    """Coefficients (ascending powers of t) of Debye's u_k(t), k = 0.._DEBYE_TERMS.

    u_{k+1}(t) = t^2 (1 - t^2) u_k'(t) / 2 + (1/8) int_0^t (1 - 5 s^2) u_k(s) ds  (DLMF 10.41.9).
    """
    polys = [[Fraction(1)]]
    for _ in range(_DEBYE_TERMS):
        p = polys[-1]
        dp = [i * p[i] for i in range(1, len(p))]
        res = [Fraction(0)] * (len(p) + 4)
        for i, c in enumerate(dp):
            res[i + 2] += c / 2
            res[i + 4] -= c / 2
        for i, c in enumerate(p):  # (1/8) int (1 - 5 s^2) s^i
            res[i + 1] += c / (8 * (i + 1))
            res[i + 3] -= 5 * c / (8 * (i + 3))
        while len(res) > 1 and res[-1] == 0:
            res.pop()
        polys.append(res)
    return tuple(tuple(float(c) for c in p) for p in polys)


@lru_cache(maxsize=64)
def _debye_matrix(v: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Column of coefficients c_i with sum_{k>=1} u_k(t) / v^k = sum_i c_i t^i."""
    polys = _debye_polynomials()
    n = max(len(p) for p in polys)
    coef = [0.0] * n
    for k, p in enumerate(polys[1:], start=1):
        for i, c in enumerate(p):
            coef[i] += c / v**k
    return torch.tensor(coef, dtype=dtype, device=device).unsqueeze(0)


def _debye_log_ive(v: float, x: Tensor, s: Tensor) -> Tensor:
    """Debye expansion of log I_v(x) - x, with s = sqrt(v^2 + x^2)."""
    corr = torch.log1p(_power_matmul(v / s, _debye_matrix(v, x.device, x.dtype)).squeeze(-1))
    return v * v / (s + x) + v * torch.log(x / (v + s)) - 0.5 * torch.log(2 * math.pi * s) + corr


def _debye_log_ratio(v: float, x: Tensor) -> tuple[Tensor, Tensor]:
    """(log ive_v(x), log(I_{v+1}(x) / I_v(x))) for v >= _DEBYE_MIN."""
    s0 = torch.sqrt(v * v + x * x)
    s1 = torch.sqrt((v + 1) ** 2 + x * x)
    c0 = _debye_matrix(v, x.device, x.dtype)
    c1 = _debye_matrix(v + 1, x.device, x.dtype)
    # log1p of the corrections and of 1 - x/(v+1+s1): both are small where x >> v, and the ratio
    # must keep their relative precision (the downward recurrence turns absolute errors at the top
    # into relative errors of 1 - A at the bottom).
    corr0 = torch.log1p(_power_matmul(v / s0, c0).squeeze(-1))
    corr1 = torch.log1p(_power_matmul((v + 1) / s1, c1).squeeze(-1))
    log_ive = v * v / (s0 + x) + v * torch.log(x / (v + s0)) - 0.5 * torch.log(2 * math.pi * s0)
    log_ive = log_ive + corr0
    ds = (2 * v + 1) / (s1 + s0)  # s1 - s0
    log_ratio = (
        ds
        - torch.log1p((v + 1) * (1 + (v + 1) / (s1 + x)) / x)  # log(x / (v + 1 + s1))
        - v * torch.log1p((1 + ds) / (v + s0))
        - 0.5 * torch.log1p(ds / s0)
        + corr1
        - corr0
    )
    return log_ive, log_ratio


def _bessel_core(v: float, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(log I_v(x) - x, A, B) with A = I_{v+1}(x)/I_v(x) and B = 1 - A.

    Each to full relative precision; order v >= 0, x > 0, computed in x's dtype.
    """
    if v < 0:
        raise ValueError(f"Bessel order must be >= 0, got {v}.")
    if v >= _DEBYE_MIN:
        log_ive, log_ratio = _debye_log_ratio(v, x)
        return log_ive, torch.exp(log_ratio), -torch.expm1(log_ratio)
    steps = math.ceil(_DEBYE_MIN - v)
    top = v + steps
    log_ive, log_ratio = _debye_log_ratio(top, x)
    b = -torch.expm1(log_ratio)  # B at order `top`: 1 - I_{top+1}/I_top
    two_over_x = 2 / x
    qs = []
    for i in range(steps):  # j = top, top-1, ..., v+1:  I_{j-1}/I_j = 2j/x + I_{j+1}/I_j
        j = top - i
        q = j * two_over_x - b
        qs.append(q)
        b = q / (1 + q)  # 1 - I_j / I_{j-1}
    log_ive = log_ive + torch.log1p(torch.stack(qs, -1)).sum(-1)
    return log_ive, 1 / (1 + qs[-1]), b


class _LogIve(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, v: float) -> Tensor:  # type: ignore[override]
        xw = x.to(_work_dtype(x))
        log_ive, _, b = _bessel_core(v, xw)
        ctx.save_for_backward((v / xw - b).to(x.dtype))  # d/dx = A + v/x - 1
        return log_ive.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad_out * grad, None


class _BesselRatio(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, v: float) -> Tensor:  # type: ignore[override]
        xw = x.to(_work_dtype(x))
        _, a, b = _bessel_core(v, xw)
        # A' = 1 - A^2 - (2v+1) A / x, with 1 - A^2 = B (2 - B) to keep precision where A -> 1
        ctx.save_for_backward((b * (2 - b) - (2 * v + 1) * a / xw).to(x.dtype))
        return a.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad_out * grad, None


def log_bessel_ive(v: float, x: Tensor) -> Tensor:
    """``log(I_v(x) e^{-x})`` for order ``v >= 0`` and ``x > 0``, differentiable in x.

    Finite for any order (tested up to 1023.5) and x up to 1e5 and beyond, where scipy's ``ive``
    under- or overflows.
    """
    return _LogIve.apply(x, float(v))


def log_bessel_iv(v: float, x: Tensor) -> Tensor:
    """``log I_v(x)`` for order ``v >= 0`` and ``x > 0``, differentiable in x."""
    return log_bessel_ive(v, x) + x


def bessel_ratio(v: float, x: Tensor) -> Tensor:
    """``I_{v+1}(x) / I_v(x)`` for order ``v >= 0`` and ``x > 0``, differentiable in x.

    For the von Mises-Fisher on S^{d-1}, ``A_d(kappa) = bessel_ratio(d/2 - 1, kappa) = E[mu^T X]``.
    """
    return _BesselRatio.apply(x, float(v))


# --------------------------------------------------------------------------------------------------
# von Mises-Fisher
# --------------------------------------------------------------------------------------------------


_VMF_SERIES_TERMS = 21  # 0F1 terms for kappa <= 2 sqrt(v + 1): the tail is below 1/21!


@lru_cache(maxsize=64)
def _vmf_series_coef(v: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Coefficients of y^0..y^n of 0F1(; v+1; y) - 1 and 0F1(; v+2; y) - 1 (two columns)."""
    rows, c1, c2 = [(0.0, 0.0)], 1.0, 1.0
    for j in range(1, _VMF_SERIES_TERMS + 1):
        c1 /= (v + j) * j
        c2 /= (v + 1 + j) * j
        rows.append((c1, c2))
    return torch.tensor(rows, dtype=dtype, device=device).T.contiguous()


class _VmfKL(torch.autograd.Function):
    """KL(vMF(kappa) || uniform) = kappa A + v log kappa - (v+1) log 2pi - log I_v + log|S|.

    For small kappa the KL (~ kappa^2 / (2d)) is far below the terms of that formula, so there
    KL = kappa A - log 0F1(; v+1; kappa^2/4) (the constants cancel exactly) from the series.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, kappa: Tensor, d: int) -> Tensor:  # type: ignore[override]
        k = kappa.to(_work_dtype(kappa))
        v = d / 2 - 1
        log_ive, a, b = _bessel_core(v, k)
        # kappa A - log I_v = -kappa B - log ive (both O(d), no cancellation of kappa-size terms)
        kl = -k * b - log_ive + v * torch.log(k) - (v + 1) * math.log(2 * math.pi)
        kl = kl + log_sphere_area(d)
        small = k <= 2 * math.sqrt(v + 1)
        y = torch.where(small, k * k / 4, torch.zeros_like(k))
        s1, s2 = _power_matmul(y, _vmf_series_coef(v, k.device, k.dtype)).unbind(-1)
        kl_small = 2 * y * (1 + s2) / ((v + 1) * (1 + s1)) - torch.log1p(s1)
        kl = torch.where(small, kl_small, kl)
        # dKL/dkappa = kappa A'(kappa), with 1 - A^2 = B (2 - B)
        ctx.save_for_backward((k * b * (2 - b) - (2 * v + 1) * a).to(kappa.dtype))
        return kl.to(kappa.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad_out * grad, None


def vmf_kl_uniform(dim: int, kappa: Tensor) -> Tensor:
    """KL( vMF(mu, kappa) || Uniform(S^{dim-1}) ) for AMBIENT dimension ``dim``, differentiable.

    Finite for dim up to 2048 and beyond and kappa from ~1e-6 to 1e5 and beyond (float64 inside).
    """
    return _VmfKL.apply(kappa, _check_dim(dim, "vmf_kl_uniform"))


class VonMisesFisher(Distribution):
    """von Mises-Fisher distribution on S^{d-1}: density ``C_d(kappa) exp(kappa mu^T x)``.

    ``d = loc.shape[-1]`` is the AMBIENT dimension. Sampling: Wood (1994)'s rejection sampler for
    ``w = mu^T x`` (vectorised; proposals drawn four at a time), then a uniform tangent direction.

    Gradient of ``rsample``: the reparameterization term g_rep of Davidson et al. (2018):
    w = h(eps, kappa) is differentiated through kappa with the *accepted* Beta variate eps held
    fixed, and the tangent direction through ``loc``. Their correction term g_cor (a score-function
    term for the kappa-dependence of the acceptance step) is omitted: it needs the downstream loss,
    which ``rsample`` cannot see. So the sample-based d/dkappa of an expectation is biased: for
    d/dkappa E[mu^T z] we measured about -20% at d = 3, kappa = 1, -5% at d = 16, kappa = 10 and
    under 1% at d = 128 (BENCHMARKS_latent.md). The KL and entropy gradients are exact
    (analytic), and gradients w.r.t. ``loc`` are unaffected.

    Args:
        loc: (..., d) unit vectors (the mean direction), d >= 2.
        scale: (...) concentration kappa > 0.
        validate_args: As in ``torch.distributions``.
    """

    arg_constraints = {"loc": sphere, "scale": constraints.positive}
    support = sphere
    has_rsample = True
    _proposals = 4  # Beta proposals per example and round: usually one round suffices

    def __init__(self, loc: Tensor, scale: Tensor | float, validate_args: bool | None = None):
        self._dim = _check_dim(loc.shape[-1], "VonMisesFisher")
        if not isinstance(scale, Tensor):
            scale = torch.tensor(scale, dtype=loc.dtype, device=loc.device)
        batch_shape = _broadcast_shape(loc.shape[:-1], scale.shape)
        self.loc = loc.expand(batch_shape + loc.shape[-1:])
        self.scale = scale.expand(batch_shape)
        super().__init__(batch_shape, loc.shape[-1:], validate_args)

    @property
    def kappa(self) -> Tensor:
        """Alias of ``scale``."""
        return self.scale

    def expand(self, batch_shape: Any, _instance: Any = None) -> VonMisesFisher:
        """Same distribution broadcast to a new batch shape."""
        return _expand_loc_scale(self, VonMisesFisher, batch_shape, _instance)

    def _sample_w(self, shape: torch.Size) -> tuple[Tensor, Tensor]:
        """(w, sqrt(1 - w^2)) of shape ``shape`` (sample + batch), in the work dtype."""
        d = self._dim
        kappa = self.scale.to(_work_dtype(self.scale)).expand(shape)
        dm1 = d - 1.0
        # b = (d-1) / (2 kappa + sqrt(4 kappa^2 + (d-1)^2)), the stable form of Wood's b
        b = dm1 / (2 * kappa + torch.sqrt(4 * kappa * kappa + dm1 * dm1))
        with torch.no_grad():
            kd, bd = kappa.detach(), b.detach()
            alpha = torch.full((), dm1 / 2, dtype=kd.dtype, device=kd.device)
            proposal = torch.distributions.Beta(alpha, alpha)
            eps = torch.zeros_like(kd)
            done = torch.zeros(shape, dtype=torch.bool, device=kd.device)
            log_mid = torch.log1p(bd) - math.log(2.0)
            for _ in range(10_000):
                z = proposal.sample(torch.Size([self._proposals]) + shape)
                den = 1 - (1 - bd) * z
                # Wood's test kappa w + (d-1) log(1 - x0 w) - c >= log U, written with
                # w - x0 = 2b(1-2z)/((1+b)(1-(1-b)z)), (1-x0 w)/(1-x0^2) = (1+b)/(2(1-(1-b)z))
                lhs = 2 * kd * bd * (1 - 2 * z) / ((1 + bd) * den) + dm1 * (
                    log_mid - torch.log(den)
                )
                accept = lhs >= torch.log(torch.rand_like(z))
                first = accept.to(torch.uint8).argmax(0, keepdim=True)
                picked = z.gather(0, first).squeeze(0)
                got = accept.any(0) & ~done
                eps = torch.where(got, picked, eps)
                done = done | got
                if bool(done.all()):
                    break
            else:  # pragma: no cover - acceptance probability is bounded away from 0
                raise RuntimeError("von Mises-Fisher rejection sampler did not finish")
        den = 1 - (1 - b) * eps
        one_m_w = 2 * b * eps / den
        w = 1 - one_m_w
        sin = 2 * torch.sqrt((b * eps * (1 - eps)).clamp_min(0)) / den  # sqrt(1 - w^2)
        return w, sin

    def rsample(self, sample_shape: Any = torch.Size()) -> Tensor:
        """Reparameterized sample (gradient: see the class docstring)."""
        shape = self._extended_shape(torch.Size(sample_shape))
        w, sin = self._sample_w(shape[:-1])
        dtype = self.loc.dtype
        tiny = torch.finfo(dtype).tiny
        mu = self.loc.expand(shape)
        g = torch.randn(shape, dtype=dtype, device=mu.device)
        tangent = F.normalize(g - (g * mu).sum(-1, keepdim=True) * mu, dim=-1, eps=tiny)
        z = w.to(dtype).unsqueeze(-1) * mu + sin.to(dtype).unsqueeze(-1) * tangent
        # Where g is nearly parallel to mu the projected tangent is orthogonal to mu only up to
        # eps / |g - (g.mu) mu|, which shows in |z|; renormalise (a no-op in exact arithmetic).
        return z * torch.rsqrt(torch.linalg.vecdot(z, z).unsqueeze(-1).clamp_min(tiny))

    def sample(self, sample_shape: Any = torch.Size()) -> Tensor:
        """Sample without gradient."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log density w.r.t. surface area: ``log C_d(kappa) + kappa (mu^T x - 1) + kappa``."""
        if self._validate_args:
            self._validate_sample(value)
        d = self._dim
        v = d / 2 - 1
        kappa = self.scale
        log_norm = v * torch.log(kappa) - (v + 1) * math.log(2 * math.pi) - log_bessel_ive(v, kappa)
        # kappa (mu^T x - 1) = -kappa |x - mu|^2 / 2: no overflow, no cancellation near the mode
        return log_norm - kappa * (value - self.loc).pow(2).sum(-1) / 2

    def entropy(self) -> Tensor:
        """``log |S^{d-1}| - KL(self || uniform)``."""
        return log_sphere_area(self._dim) - vmf_kl_uniform(self._dim, self.scale)

    @property
    def mean(self) -> Tensor:
        """``A_d(kappa) loc``."""
        return self.loc * bessel_ratio(self._dim / 2 - 1, self.scale).unsqueeze(-1)

    @property
    def mode(self) -> Tensor:
        """The mode is ``loc``."""
        return self.loc


# --------------------------------------------------------------------------------------------------
# Power spherical (the maintained package's implementation)
# --------------------------------------------------------------------------------------------------


class PowerSpherical(_ps.PowerSpherical):
    """Power spherical distribution (De Cao & Aziz 2020) from the ``power_spherical`` package.

    Density ``proportional to (1 + mu^T x)^kappa``. Subclassed only to follow torch's shape contract
    (``batch_shape = loc.shape[:-1]``, ``event_shape = (d,)``; the package reports ``()`` for both),
    validate samples, support ``expand`` and register the KL to our :class:`HypersphericalUniform`.
    Sampling and densities are the package's. ``d = loc.shape[-1]`` is the AMBIENT dimension.

    Args:
        loc: (..., d) unit vectors, d >= 2.
        scale: (...) concentration kappa > 0.
        validate_args: As in ``torch.distributions``.
    """

    arg_constraints = {"loc": sphere, "scale": constraints.positive}
    support = sphere
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor | float, validate_args: bool | None = None):
        _check_dim(loc.shape[-1], "PowerSpherical")
        if not isinstance(scale, Tensor):
            scale = torch.tensor(scale, dtype=loc.dtype, device=loc.device)
        batch_shape = _broadcast_shape(loc.shape[:-1], scale.shape)
        loc = loc.expand(batch_shape + loc.shape[-1:])
        scale = scale.expand(batch_shape)
        super().__init__(loc, scale, validate_args=validate_args)
        self._batch_shape = batch_shape
        self._event_shape = loc.shape[-1:]

    def expand(self, batch_shape: Any, _instance: Any = None) -> PowerSpherical:
        """Same distribution broadcast to a new batch shape."""
        return _expand_loc_scale(self, PowerSpherical, batch_shape, _instance)

    def rsample(self, sample_shape: Any = torch.Size()) -> Tensor:
        """The package's reparameterized sample, renormalised.

        The package's Householder step divides by ``|u| + 1e-7``, which leaves samples ~1e-7 off
        the sphere (outside the float64 support tolerance); dividing by the norm removes that.
        """
        z = super().rsample(sample_shape)
        return z * torch.rsqrt(torch.linalg.vecdot(z, z).unsqueeze(-1))

    def log_prob(self, value: Tensor) -> Tensor:
        """Log density w.r.t. surface area (the package's formula, with sample validation)."""
        if self._validate_args:
            self._validate_sample(value)
        return super().log_prob(value)

    def sample(self, sample_shape: Any = torch.Size()) -> Tensor:
        """Sample without gradient."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    @property
    def mode(self) -> Tensor:
        """The mode is ``loc``."""
        return self.loc


# --------------------------------------------------------------------------------------------------
# KL divergences to the uniform prior
# --------------------------------------------------------------------------------------------------


def _match_uniform(p: Distribution, q: HypersphericalUniform, kl: Tensor) -> Tensor:
    if p.event_shape[-1] != q.dim:
        raise ValueError(
            f"KL between a distribution on S^{p.event_shape[-1] - 1} and the uniform on "
            f"S^{q.dim - 1}: the ambient dimensions differ ({p.event_shape[-1]} vs {q.dim})."
        )
    shape = _broadcast_shape(p.batch_shape, q.batch_shape)
    return kl if kl.shape == shape else kl.expand(shape)


@register_kl(SphericalCauchy, HypersphericalUniform)
def _kl_spcauchy_uniform(p: SphericalCauchy, q: HypersphericalUniform) -> Tensor:
    return _match_uniform(p, q, p.kl_to_uniform())


@register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(p: VonMisesFisher, q: HypersphericalUniform) -> Tensor:
    return _match_uniform(p, q, vmf_kl_uniform(p._dim, p.scale))


@register_kl(PowerSpherical, HypersphericalUniform)
def _kl_power_uniform(p: PowerSpherical, q: HypersphericalUniform) -> Tensor:
    d = p.event_shape[-1]
    return _match_uniform(p, q, log_sphere_area(d) - p.entropy())
