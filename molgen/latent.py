"""Latent layers shared by the molecule VAE and the MNIST VAE: one registry of latent families.

A :class:`LatentHead` maps encoder features ``h`` to ``(posterior, prior)``. ``dim`` is always the
AMBIENT dimension of z: spherical families put z on S^{dim-1} in R^dim, the Gaussian in R^dim.

Families (``LATENT_FAMILIES``):

* ``spcauchy`` (default): :class:`~molgen.distributions.SphericalCauchy`, learned logit of rho.
* ``vmf``: :class:`~molgen.distributions.VonMisesFisher`.
* ``power``: :class:`~molgen.distributions.PowerSpherical`.
* ``gaussian``: diagonal Normal, standard Normal prior.

Adding a family is one decorated class::

    @register_latent("myfamily")
    class MyHead(LatentHead):
        ...
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from molgen.distributions import (
    HypersphericalUniform,
    PowerSpherical,
    SphericalCauchy,
    VonMisesFisher,
    bessel_ratio,
)
from molgen.errors import MolgenError

__all__ = [
    "LATENT_FAMILIES",
    "GaussianHead",
    "LatentHead",
    "PowerSphericalHead",
    "SphericalCauchyHead",
    "VonMisesFisherHead",
    "DemoRow",
    "build_latent",
    "format_latent_demo",
    "interpolate",
    "kl_to_prior",
    "latent_demo",
    "register_latent",
]

# Initial mean cosine between z and the mode for spherical families: informative but noisy.
INITIAL_MEAN_COSINE = 0.5

LATENT_FAMILIES: dict[str, type[LatentHead]] = {}
"""Registered latent families by name (filled by :func:`register_latent`)."""

_H = TypeVar("_H", bound="type[LatentHead]")


def register_latent(name: str) -> Callable[[_H], _H]:
    """Class decorator registering a :class:`LatentHead` subclass under ``name``."""

    def decorate(cls: _H) -> _H:
        if name in LATENT_FAMILIES:
            raise ValueError(f"latent family {name!r} is already registered")
        cls.family = name
        LATENT_FAMILIES[name] = cls
        return cls

    return decorate


class LatentHead(nn.Module):
    """Base class: features ``h`` (..., in_features) -> (posterior, prior) over z.

    Subclasses define :meth:`raw_params` (the linear layers) and :meth:`posterior_from_params`
    (the map from raw parameters to a distribution), so the map can be timed and tested alone.

    Args:
        in_features: Size of the encoder features.
        dim: AMBIENT dimension of z (z on S^{dim-1} for spherical families, in R^dim otherwise).

    Attributes:
        spherical: True when z lies on the unit sphere.
        concentration_name: Name of the logged per-example concentration.
        family: Registry name (set by :func:`register_latent`).
    """

    spherical: bool = True
    concentration_name: str = ""
    family: str = ""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        min_dim = 2 if self.spherical else 1
        if int(in_features) != in_features or in_features < 1:
            raise MolgenError(
                f"Latent head: in_features must be a positive integer, got {in_features}."
            )
        if int(dim) != dim or dim < min_dim:
            space = f"the sphere S^{dim - 1} in R^{dim}" if self.spherical else f"R^{dim}"
            raise MolgenError(
                f"Latent dimension {dim} is too small for the {self.family or type(self).__name__} "
                f"family (z would live on {space}); use a latent dimension of at least {min_dim}."
            )
        self.in_features = int(in_features)
        self.dim = int(dim)
        self.loc_layer = nn.Linear(self.in_features, self.dim)
        self.concentration_layer = nn.Linear(self.in_features, self._concentration_width())
        # All examples start at the same moderate concentration: zero weights, bias at the target.
        nn.init.zeros_(self.concentration_layer.weight)
        with torch.no_grad():
            self.concentration_layer.bias.fill_(self._initial_concentration_param())

    def _concentration_width(self) -> int:
        return 1

    def _initial_concentration_param(self) -> float:
        return self.concentration_param_for_cosine(INITIAL_MEAN_COSINE)

    def concentration_param_for_cosine(self, cosine: float) -> float:
        """Raw concentration parameter at which E[cos(z, mode)] equals ``cosine`` (in (0, 1))."""
        raise NotImplementedError

    def raw_params(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """(loc parameter, concentration parameter) straight from the linear layers."""
        conc = self.concentration_layer(h)
        if conc.shape[-1] == 1:
            conc = conc.squeeze(-1)
        return self.loc_layer(h), conc

    def posterior_from_params(self, loc_param: Tensor, conc_param: Tensor) -> Distribution:
        """Posterior from raw parameters (batch shape ``loc_param.shape[:-1]``)."""
        raise NotImplementedError

    def forward(self, h: Tensor) -> tuple[Distribution, Distribution]:
        """(posterior, prior) for features ``h``; the posterior has batch shape ``h.shape[:-1]``."""
        posterior = self.posterior_from_params(*self.raw_params(h))
        return posterior, self.prior(h.device, h.dtype)

    def prior(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Distribution:
        """Prior over z: batch shape (), event shape (dim,)."""
        return HypersphericalUniform(self.dim, device=device, dtype=dtype)

    def mode(self, posterior: Distribution) -> Tensor:
        """The point to decode greedily: the posterior mode (shape (..., dim))."""
        return posterior.loc  # type: ignore[attr-defined]

    def concentration(self, posterior: Distribution) -> Tensor:
        """Per-example concentration scalar for logging, shape ``posterior.batch_shape``."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        """Family and sizes in the module's repr."""
        return f"family={self.family}, in_features={self.in_features}, dim={self.dim}"


class _Normalize(torch.autograd.Function):
    """x / |x| over the last dimension with a 3-kernel backward (autograd's takes ~8)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> Tensor:  # type: ignore[override]
        inv = (
            torch.linalg.vector_norm(x, dim=-1, keepdim=True)
            .clamp_min(torch.finfo(x.dtype).tiny)
            .reciprocal_()
        )
        y = x * inv
        ctx.save_for_backward(y, inv)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor) -> Tensor:  # type: ignore[override]
        y, inv = ctx.saved_tensors
        # (I - y y^T) gy / |x|
        return torch.addcmul(gy, y, -torch.linalg.vecdot(y, gy).unsqueeze(-1)).mul_(inv)


def _unit(x: Tensor) -> Tensor:
    """Unit vectors along the last dimension (the mean direction of the spherical heads)."""
    return _Normalize.apply(x)


def _bisect(f: Callable[[float], float], lo: float, hi: float, target: float) -> float:
    """Solve f(x) = target on [lo, hi] for increasing f (60 halvings: float64 resolution)."""
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@register_latent("spcauchy")
class SphericalCauchyHead(LatentHead):
    """Spherical Cauchy posterior: ``mu = normalize(W h)``, ``rho = sigmoid(w^T h + b)``."""

    concentration_name = "rho"

    def concentration_param_for_cosine(self, cosine: float) -> float:
        """The rho logit with E[mu^T z] = ``cosine`` (exact mean resultant length, bisection)."""
        loc = torch.zeros(self.dim, dtype=torch.float64)
        loc[0] = 1.0

        def mean_cos(t: float) -> float:
            q = SphericalCauchy(loc, rho_logit=torch.tensor(t, dtype=torch.float64))
            return float(q.mean_resultant_length)

        return _bisect(mean_cos, -40.0, 40.0, _check_cosine(cosine))

    def posterior_from_params(self, loc_param: Tensor, conc_param: Tensor) -> Distribution:
        """``SphericalCauchy(normalize(loc_param), rho_logit=conc_param)``."""
        return SphericalCauchy(_unit(loc_param), rho_logit=conc_param)

    def concentration(self, posterior: Distribution) -> Tensor:
        """The concentration rho."""
        assert isinstance(posterior, SphericalCauchy)
        return posterior.rho


@register_latent("vmf")
class VonMisesFisherHead(LatentHead):
    """von Mises-Fisher posterior: ``kappa = min(softplus(w^T h + b) + floor, cap)``.

    The cap (1e5) is where z and mu agree to ~d/2e5 in cosine; beyond it nothing is gained and
    float32 samples stop resolving the spread.
    """

    concentration_name = "kappa"
    floor = 1e-3
    cap = 1e5

    def concentration_param_for_cosine(self, cosine: float) -> float:
        """The raw parameter with A_d(kappa) = E[mu^T z] = ``cosine`` (bisection on log kappa)."""
        v = self.dim / 2 - 1

        def mean_cos(log_kappa: float) -> float:
            kappa = torch.tensor(math.exp(log_kappa), dtype=torch.float64)
            return float(bessel_ratio(v, kappa))

        kappa = math.exp(_bisect(mean_cos, -10.0, math.log(self.cap), _check_cosine(cosine)))
        return _softplus_inverse(max(kappa - self.floor, 1e-12))

    def posterior_from_params(self, loc_param: Tensor, conc_param: Tensor) -> Distribution:
        """``VonMisesFisher(normalize(loc_param), kappa)``."""
        kappa = (F.softplus(conc_param) + self.floor).clamp_max(self.cap)
        return VonMisesFisher(_unit(loc_param), kappa)

    def concentration(self, posterior: Distribution) -> Tensor:
        """The concentration kappa."""
        assert isinstance(posterior, VonMisesFisher)
        return posterior.scale


@register_latent("power")
class PowerSphericalHead(LatentHead):
    """Power spherical posterior: ``scale = softplus(w^T h + b) + floor``."""

    concentration_name = "scale"
    floor = 1e-3

    def concentration_param_for_cosine(self, cosine: float) -> float:
        """The raw parameter with E[mu^T z] = kappa / (kappa + d - 1) = ``cosine``."""
        c = _check_cosine(cosine)
        kappa = c * (self.dim - 1) / (1 - c)
        return _softplus_inverse(max(kappa - self.floor, 1e-12))

    def posterior_from_params(self, loc_param: Tensor, conc_param: Tensor) -> Distribution:
        """``PowerSpherical(normalize(loc_param), scale)``."""
        return PowerSpherical(_unit(loc_param), F.softplus(conc_param) + self.floor)

    def concentration(self, posterior: Distribution) -> Tensor:
        """The power spherical scale (kappa)."""
        assert isinstance(posterior, PowerSpherical)
        return posterior.scale


@register_latent("gaussian")
class GaussianHead(LatentHead):
    """Diagonal Gaussian posterior ``N(W h, diag(sigma^2))`` with a standard Normal prior.

    ``log sigma`` is clamped to [-10, 4] so exp() neither underflows nor explodes; it starts at
    log(1/2) (z carries the mean plus noise of half the prior's scale).
    """

    spherical = False
    concentration_name = "inv_sigma"
    log_sigma_min = -10.0
    log_sigma_max = 4.0
    initial_log_sigma = math.log(0.5)

    def _concentration_width(self) -> int:
        return self.dim

    def _initial_concentration_param(self) -> float:
        return self.initial_log_sigma

    def concentration_param_for_cosine(self, cosine: float) -> float:
        """The log sigma with E[cos(z, loc)] ~ ``cosine`` for a unit-norm loc.

        Uses the high-dimensional approximation cos ~ 1 / sqrt(1 + d sigma^2).
        """
        c = _check_cosine(cosine)
        return 0.5 * math.log((1 / (c * c) - 1) / self.dim)

    def posterior_from_params(self, loc_param: Tensor, conc_param: Tensor) -> Distribution:
        """``Independent(Normal(loc_param, exp(clamp(conc_param))), 1)``."""
        sigma = conc_param.clamp(self.log_sigma_min, self.log_sigma_max).exp()
        return Independent(Normal(loc_param, sigma), 1)

    def prior(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Distribution:
        """Standard Normal over R^dim (batch shape (), event shape (dim,))."""
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        zeros = torch.zeros(self.dim, device=device, dtype=dtype)
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def mode(self, posterior: Distribution) -> Tensor:
        """The posterior mean."""
        return posterior.mean

    def concentration(self, posterior: Distribution) -> Tensor:
        """Mean of 1/sigma over the dimensions."""
        assert isinstance(posterior, Independent)
        return posterior.base_dist.scale.reciprocal().mean(-1)  # type: ignore[attr-defined]


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _check_cosine(cosine: float) -> float:
    if not 0.0 < cosine < 1.0:
        raise MolgenError(f"A target mean cosine must lie strictly between 0 and 1, got {cosine}.")
    return float(cosine)


def build_latent(family: str, in_features: int, dim: int) -> LatentHead:
    """Build the latent head of a registered family.

    Args:
        family: A name in :data:`LATENT_FAMILIES`.
        in_features: Encoder feature size.
        dim: AMBIENT dimension of z.

    Raises:
        MolgenError: Unknown family (the message lists the known ones) or a bad dimension.
    """
    if family not in LATENT_FAMILIES:
        names = ", ".join(sorted(LATENT_FAMILIES))
        raise MolgenError(f"Unknown latent family {family!r}; choose one of: {names}.")
    return LATENT_FAMILIES[family](in_features, dim)


def kl_to_prior(posterior: Distribution, prior: Distribution) -> Tensor:
    """``KL(posterior || prior)`` per example (shape: the posterior's batch shape), in nats."""
    return kl_divergence(posterior, prior)


def interpolate(
    head_or_spherical: LatentHead | bool, z_a: Tensor, z_b: Tensor, steps: int
) -> Tensor:
    """Points from ``z_a`` to ``z_b`` (both included).

    Spherical latents use the great circle (slerp), written with an orthonormal pair so identical
    and antipodal endpoints work: identical gives a constant path, antipodal picks a deterministic
    half great circle. Gaussian latents use the straight line.

    Args:
        head_or_spherical: A :class:`LatentHead` or a bool (True: spherical).
        z_a: (..., dim) start point(s).
        z_b: (..., dim) end point(s).
        steps: Number of points, >= 2.

    Returns:
        (steps, ..., dim): shape ``(steps, dim)`` for single points.
    """
    if isinstance(head_or_spherical, LatentHead):
        spherical = head_or_spherical.spherical
    else:
        spherical = bool(head_or_spherical)
    if int(steps) != steps or steps < 2:
        raise MolgenError(f"Interpolation needs at least 2 steps, got {steps}.")
    if z_a.shape[-1] != z_b.shape[-1]:
        raise MolgenError(
            f"Cannot interpolate between latent vectors of sizes {z_a.shape[-1]} and "
            f"{z_b.shape[-1]}; both must come from the same model."
        )
    z_a, z_b = torch.broadcast_tensors(z_a, z_b)
    shape = (steps,) + (1,) * (z_a.dim())
    t = torch.linspace(0.0, 1.0, steps, dtype=z_a.dtype, device=z_a.device).view(shape)
    if not spherical:
        return (1 - t) * z_a + t * z_b
    a, b = _unit(z_a), _unit(z_b)
    # angle from the chord lengths: accurate at 0 and at pi (acos(a.b) is not)
    omega = 2 * torch.atan2(
        torch.linalg.vector_norm(a - b, dim=-1), torch.linalg.vector_norm(a + b, dim=-1)
    )
    perp = b - (a * b).sum(-1, keepdim=True) * a
    perp_norm = torch.linalg.vector_norm(perp, dim=-1, keepdim=True)
    # Antipodal (or numerically so): any unit vector orthogonal to a; take the axis least aligned.
    axis = F.one_hot(a.abs().argmin(-1), a.shape[-1]).to(a.dtype)
    fallback = _unit(axis - (a * axis).sum(-1, keepdim=True) * a)
    degenerate = perp_norm <= 64 * torch.finfo(a.dtype).eps
    p = torch.where(degenerate, fallback, perp / perp_norm.clamp_min(torch.finfo(a.dtype).tiny))
    angle = t * omega.unsqueeze(-1)
    return _unit(torch.cos(angle) * a + torch.sin(angle) * p)


@dataclass
class DemoRow:
    """One line of :func:`latent_demo`."""

    family: str
    concentration_name: str
    concentration: float
    target_cosine: float
    mean_cosine: float
    kl: float


def latent_demo(
    dim: int = 64, levels: int = 5, seed: int = 0, samples: int = 2000
) -> list[DemoRow]:
    """Exercise every registered latent family at a few concentrations.

    For each family a head is built; at ``levels`` target mean cosines from 0.1 to 0.99 its
    concentration parameter is solved for (exactly for the spherical families, by the
    high-dimensional approximation for the Gaussian with a unit-norm mean), then ``samples`` z are
    drawn through the head's own parameter map and the KL to the prior is computed.

    Args:
        dim: AMBIENT latent dimension.
        levels: Number of concentrations per family (>= 1).
        seed: Seed of the heads, the mean direction and the samples.
        samples: Samples per row for the mean cosine.

    Returns:
        Rows in family order, then by increasing concentration.
    """
    if levels < 1 or samples < 1:
        raise MolgenError("latent demo: --n and the sample count must be at least 1.")
    if levels == 1:
        targets = [INITIAL_MEAN_COSINE]
    else:
        targets = [1 - 0.9 * 10 ** (-2 * i / (levels - 1)) for i in range(levels)]
    rows = []
    for family in LATENT_FAMILIES:
        torch.manual_seed(seed)
        head = build_latent(family, 1, dim)
        direction = _unit(torch.randn(1, dim))
        with torch.no_grad():
            for target in targets:
                conc = head.concentration_param_for_cosine(target)
                width = head._concentration_width()
                shape = (samples, width) if width > 1 else (samples,)
                conc_param = torch.full(shape, conc)
                posterior = head.posterior_from_params(direction.expand(samples, dim), conc_param)
                z = posterior.rsample()
                mode = head.mode(posterior)
                cos = F.cosine_similarity(z, mode, dim=-1).mean()
                kl = kl_to_prior(posterior, head.prior())
                rows.append(
                    DemoRow(
                        family=family,
                        concentration_name=head.concentration_name,
                        concentration=float(head.concentration(posterior)[0]),
                        target_cosine=target,
                        mean_cosine=float(cos),
                        kl=float(kl[0]),
                    )
                )
    return rows


def format_latent_demo(rows: list[DemoRow], dim: int, samples: int) -> str:
    """Plain-text table of :func:`latent_demo` rows."""
    lines = [
        f"Latent families at d={dim} (z has {dim} entries; spherical families live on "
        f"S^{dim - 1}), {samples} samples per row.",
        "target cos = E[cos(z, mode)] the concentration was solved for (Gaussian: approximate).",
        "",
        f"{'family':<10} {'concentration':>22} {'KL to prior':>12} {'target cos':>11} "
        f"{'sampled cos':>12}",
    ]
    for r in rows:
        conc = f"{r.concentration_name}={r.concentration:.6g}"
        lines.append(
            f"{r.family:<10} {conc:>22} {r.kl:>12.4f} {r.target_cosine:>11.3f} "
            f"{r.mean_cosine:>12.3f}"
        )
    return "\n".join(lines)
