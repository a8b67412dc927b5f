import numpy as np
import pytest

from molgen.batching import BucketBatchSampler, encode_smiles
from molgen.tokenizer import Vocabulary


def _lengths(n: int = 1000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, 80, size=n)


@pytest.mark.parametrize("n,batch,chunk", [(1000, 32, 10), (997, 64, 3), (10, 4, 1), (5, 8, 50)])
def test_every_molecule_once_per_epoch(n: int, batch: int, chunk: int) -> None:
    sampler = BucketBatchSampler(_lengths(n), batch, seed=1, chunk_batches=chunk)
    seen = [i for b in sampler for i in b]
    assert sorted(seen) == list(range(n))
    assert len(list(sampler)) == len(sampler)
    assert all(len(b) <= batch for b in sampler)


def test_buckets_cut_padding() -> None:
    lengths = _lengths(4000)
    bucketed = BucketBatchSampler(lengths, 64, seed=0, chunk_batches=50)
    plain = BucketBatchSampler(lengths, 64, seed=0, chunk_batches=1)
    pad = lambda s: sum(len(b) * lengths[b].max() - lengths[b].sum() for b in s)  # noqa: E731
    assert pad(bucketed) < 0.2 * pad(plain)


def test_epochs_differ_and_repeat() -> None:
    sampler = BucketBatchSampler(_lengths(), 32, seed=3)
    first = list(sampler)
    assert list(sampler) == first  # same epoch, same order (resume restarts it identically)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_drop_last_keeps_full_batches_only() -> None:
    sampler = BucketBatchSampler(_lengths(100), 32, chunk_batches=2, drop_last=True)
    batches = list(sampler)
    assert all(len(b) == 32 for b in batches)
    assert len(batches) == len(sampler)


def test_encode_smiles_layout() -> None:
    vocab = Vocabulary.build([["C", "O", "c", "1"]])
    ds = encode_smiles(["CO", "c1ccccc1"], vocab, "smiles", max_length=20)
    ids, lengths = ds.__getitems__([0, 1])
    assert lengths.tolist() == [4, 10]
    assert ids.shape == (2, 10)
    assert ids[0, 0] == vocab.bos_id and ids[0, 3] == vocab.eos_id and ids[0, 4] == vocab.pad_id
