"""GuacaMol on today's libraries: shims, generator adapters and the distribution-learning suite.

* :func:`apply_guacamol_shims` makes guacamol 0.5.5 work with today's SciPy and fcd 1.2.2
  (applied when this module is imported).
* :class:`MolgenGenerator` (a molgen model) and :class:`ListGenerator` (a fixed list, e.g. a
  samples file) are GuacaMol ``DistributionMatchingGenerator`` adapters.
* :func:`guacamol_scores` runs GuacaMol's five distribution-learning benchmarks (validity,
  uniqueness, novelty, FCD, KL divergence) with the ``guacamol`` package's own benchmark classes.

``molgen.evaluate`` runs them as part of an evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from molgen import metrics
from molgen.errors import MolgenError
from molgen.evaluate_report import _plain

#: fcd 1.2.2 ships this ChemNet file; guacamol 0.5.5 defaults to fcd 1.1's ``.h5`` name.
CHEMNET_FILE = "ChemNet_v0.13_pretrained.pt"


def apply_guacamol_shims() -> None:
    """Make guacamol 0.5.5 work with today's SciPy and fcd 1.2.2 (never edits site-packages).

    * ``guacamol.utils.chemistry`` does ``from scipy import histogram``, which SciPy removed;
      it was an alias of ``numpy.histogram``.
    * ``FrechetBenchmark`` reads its ChemNet file from the ``fcd`` package by name (with
      ``pkgutil.get_data``) and passes the path to ``fcd.load_ref_model``, which
      ``torch.load``s it; the default name is fcd 1.1's ``ChemNet_v0.13_pretrained.h5``, which fcd
      1.2.2 does not ship. The default becomes fcd 1.2.2's ``.pt`` file, so guacamol's own
      ``assess_distribution_learning`` works too.
    """
    import scipy

    if not hasattr(scipy, "histogram"):
        scipy.histogram = np.histogram  # type: ignore[attr-defined]
    from guacamol.frechet_benchmark import FrechetBenchmark

    init = FrechetBenchmark.__init__
    if init.__defaults__ and init.__defaults__[0] != CHEMNET_FILE:
        init.__defaults__ = (CHEMNET_FILE, *init.__defaults__[1:])


apply_guacamol_shims()

from guacamol.distribution_matching_generator import DistributionMatchingGenerator  # noqa: E402

#: GuacaMol's standard sample count (its public ``assess_distribution_learning`` uses 10,000).
GUACAMOL_STANDARD_SAMPLES = 10_000


class MolgenGenerator(DistributionMatchingGenerator):
    """GuacaMol generator adapter around a molgen model (``molgen.sampling.load_model``).

    Every ``generate`` call draws fresh prior samples: call ``i`` uses a seed derived from
    ``(seed, i)``, so a run is reproducible and repeated calls (GuacaMol tops up invalid or
    duplicate molecules by calling again) do not repeat molecules.

    With ``max_retries=None`` (the default) it is the single-pass decoder: each prior code is
    decoded once and the raw string handed out, valid or not, which is what MOSES and GuacaMol
    tables report. With ``max_retries=K`` it is ``molgen sample``'s sampler: a code whose string
    is invalid is decoded again up to K times, and only codes given up hand out an invalid string.

    Example:
        >>> from guacamol.assess_distribution_learning import assess_distribution_learning
        >>> assess_distribution_learning(MolgenGenerator(load_model(path)), "chembl_train.smi")
    """

    def __init__(
        self,
        model: Any,
        seed: int = 0,
        temperature: float = 1.0,
        batch_size: int = 512,
        max_retries: int | None = None,
    ) -> None:
        self.model = model
        self.seed = seed
        self.temperature = temperature
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.calls = 0

    @property
    def description(self) -> str:
        """Which generator this is, in words (for reports)."""
        if self.max_retries is None:
            return "single-pass decoder (each prior code decoded once, invalid strings kept)"
        return f"sampler with up to {self.max_retries} retries per code (molgen sample's)"

    def _next_seed(self) -> int:
        seed = int(np.random.SeedSequence([self.seed, self.calls]).generate_state(1)[0] % 2**31)
        self.calls += 1
        return seed

    def decode(self, number_samples: int, max_retries: int) -> Any:
        """One call's prior codes decoded with retries: a ``molgen.decoding.DecodeResult``.

        Its ``first`` strings are what ``generate`` hands out with ``max_retries=None`` for the
        same call, its ``sampler_strings()`` what it hands out with ``max_retries`` set.
        """
        return self.model.sample_decoded(
            number_samples,
            temperature=self.temperature,
            seed=self._next_seed(),
            batch_size=self.batch_size,
            max_retries=max_retries,
            progress=False,
        )

    def generate(self, number_samples: int) -> list[str]:
        """Sample ``number_samples`` strings from the prior (see the class for which)."""
        if number_samples <= 0:
            self.calls += 1
            return []
        if self.max_retries is not None:
            return self.decode(number_samples, self.max_retries).sampler_strings()
        return list(
            self.model.sample(
                number_samples,
                temperature=self.temperature,
                seed=self._next_seed(),
                batch_size=self.batch_size,
                progress=False,
            )
        )


class ListGenerator(DistributionMatchingGenerator):
    """GuacaMol generator that hands out a fixed list of molecules (e.g. a samples file).

    ``generate(k)`` returns the next k molecules of the list; once the list is used up it asks
    ``fallback`` (a live generator) or, without one, returns only what is left (possibly
    nothing). GuacaMol's validity and uniqueness are then those of the list itself: invalid or
    duplicate molecules cannot be replaced by new ones, so they lower the scores as they should.
    Call :meth:`reset` before each benchmark so each one sees the list from the start.
    """

    def __init__(
        self, smiles: Sequence[str], fallback: DistributionMatchingGenerator | None = None
    ) -> None:
        self.smiles = list(smiles)
        self.fallback = fallback
        self.position = 0

    def reset(self) -> None:
        """Start handing out the list from its first molecule again."""
        self.position = 0

    def generate(self, number_samples: int) -> list[str]:
        """The next ``number_samples`` molecules (fewer if the list ends and has no fallback)."""
        out = self.smiles[self.position : self.position + number_samples]
        self.position += len(out)
        missing = number_samples - len(out)
        if missing > 0 and self.fallback is not None:
            out += self.fallback.generate(missing)
        return out


def _guacamol_benchmarks(
    reference: Sequence[str], train_flat: set[str] | None, number_samples: int
) -> list[Any]:
    """The distribution-learning suite v1 of guacamol (its classes), at ``number_samples``."""
    from guacamol.distribution_learning_benchmark import (
        DistributionLearningBenchmark,
        KLDivBenchmark,
        NoveltyBenchmark,
        UniquenessBenchmark,
        ValidityBenchmark,
    )
    from guacamol.frechet_benchmark import FrechetBenchmark

    class GuardedFrechetBenchmark(FrechetBenchmark):
        # guacamol's FrechetBenchmark, except that fewer than 2 valid molecules raise instead of
        # sending NaN statistics into scipy's sqrtm (which then never returns).
        def _calculate_distribution_statistics(self, model: Any, molecules: list[str]) -> Any:
            if len(molecules) < 2:
                raise ValueError(f"FCD needs at least 2 valid molecules, got {len(molecules)}")
            return super()._calculate_distribution_statistics(model, molecules)

    class CachedNoveltyBenchmark(NoveltyBenchmark):
        # guacamol's NoveltyBenchmark with its training set canonicalized beforehand (in
        # parallel, cached) exactly as its __init__ would: canonicalize(s, stereo=False).
        def __init__(self, number_samples: int, training_set_canonical: set[str]) -> None:
            DistributionLearningBenchmark.__init__(self, "Novelty", number_samples)
            self.training_set_molecules = training_set_canonical

    benchmarks: list[Any] = [
        ValidityBenchmark(number_samples=number_samples),
        UniquenessBenchmark(number_samples=number_samples),
    ]
    if train_flat is not None:
        benchmarks.append(CachedNoveltyBenchmark(number_samples, train_flat))
    benchmarks += [
        GuardedFrechetBenchmark(
            training_set=list(reference),
            chemnet_model_filename=CHEMNET_FILE,
            sample_size=number_samples,
        ),
        KLDivBenchmark(number_samples=number_samples, training_set=list(reference)),
    ]
    return benchmarks


def _chemnet_probe(benchmark: Any, reference: Sequence[str]) -> Any:
    """A small ChemNet run to pick torch's thread count for a large FCD benchmark, else None."""
    from guacamol.frechet_benchmark import FrechetBenchmark

    if not isinstance(benchmark, FrechetBenchmark):
        return None
    if benchmark.sample_size < metrics.THREAD_PROBE_MIN:
        return None
    import fcd

    head = metrics.valid_canonical(reference[:128])

    def probe() -> None:
        fcd.get_predictions(fcd.load_ref_model(), head, n_jobs=0)

    return probe


def guacamol_scores(
    generator: DistributionMatchingGenerator,
    reference: Sequence[str],
    train_flat: set[str] | None = None,
    number_samples: int = GUACAMOL_STANDARD_SAMPLES,
    progress: bool = False,
) -> dict[str, Any]:
    """Run GuacaMol's distribution-learning benchmarks (validity, uniqueness, novelty, FCD, KL).

    The scores come from guacamol's own ``assess_model`` methods. KL divergence and FCD compare
    with ``reference`` (guacamol draws its own random subset of ``number_samples`` with seed 42);
    novelty compares with the training set (skipped when ``train_flat`` is None). The public
    ``guacamol.assess_distribution_learning`` always uses 10,000 samples and needs 10,000+
    reference molecules; smaller sets run the same classes at a smaller ``number_samples``, which
    the result records (``standard`` is False then). GuacaMol's own quirks are kept: its novelty
    and KL benchmarks count an empty string as a (novel, unique) molecule, because its
    ``canonicalize('')`` returns ``''`` rather than None.

    Args:
        generator: Source of molecules; a :class:`ListGenerator` is rewound before each benchmark.
        reference: Molecules whose distribution should be matched (KL divergence, FCD).
        train_flat: Non-isomeric canonical SMILES of the training set (for novelty).
        number_samples: Molecules per benchmark.
        progress: Show a progress bar over the benchmarks.

    Returns:
        ``{"number_samples", "standard", "results": {name: {"score", "metadata", "seconds"}}}``.
    """
    if number_samples > len(reference):
        raise MolgenError(
            f"GuacaMol's KL/FCD benchmarks need at least {number_samples} reference molecules, "
            f"the reference has {len(reference)}; use fewer samples (-n)."
        )
    benchmarks = _guacamol_benchmarks(reference, train_flat, number_samples)
    iterator: Any = benchmarks
    if progress:
        from tqdm import tqdm

        iterator = tqdm(benchmarks, desc="GuacaMol", unit="benchmark", leave=False)
    results: dict[str, Any] = {}
    for benchmark in iterator:
        if isinstance(generator, ListGenerator):
            generator.reset()
        start = time.perf_counter()
        probe = _chemnet_probe(benchmark, reference)
        try:
            # one torch thread for small ChemNet runs and for the non-ChemNet benchmarks
            with metrics.adaptive_torch_threads(probe, default=1), metrics.one_blas_thread():
                result = benchmark.assess_model(generator)
        except (ValueError, IndexError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
            # e.g. KL divergence or FCD of fewer than 2 valid/unique molecules: undefined
            results[benchmark.name] = {
                "score": None,
                "error": f"{type(exc).__name__}: {exc}",
                "seconds": round(time.perf_counter() - start, 2),
            }
            continue
        results[result.benchmark_name] = {
            "score": float(result.score),
            "metadata": _plain(result.metadata),
            "seconds": round(time.perf_counter() - start, 2),
        }
    return {
        "number_samples": number_samples,
        "standard": number_samples == GUACAMOL_STANDARD_SAMPLES,
        "results": results,
    }
