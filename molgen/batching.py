"""Token tensors for training and the order batches are drawn in.

The data step's molecules become one padded int16 array (:class:`TokenDataset`); a batch is a
slice of it cut to its own longest molecule. :class:`BucketBatchSampler` groups molecules of
similar length so a batch is not padded to the longest of a random draw (the GRU pays for every
padded position), while every molecule is still seen exactly once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from molgen.tokenizer import Vocabulary, get_tokenizer


class TokenDataset(torch.utils.data.Dataset):
    """Token ids of many molecules in one padded int16 array; batches are sliced, not collated."""

    def __init__(self, ids: np.ndarray, lengths: np.ndarray) -> None:
        self.ids = torch.from_numpy(ids)
        self.lengths = torch.from_numpy(lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> int:
        return index

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices)
        lengths = self.lengths[idx].long()
        width = int(lengths.max())
        return self.ids[idx, :width].long(), lengths


def passthrough(batch: Any) -> Any:
    """Collate function for :class:`TokenDataset`: the batch is already built."""
    return batch


def encode_smiles(
    smiles: Sequence[str], vocab: Vocabulary, tokenizer_kind: str, max_length: int
) -> TokenDataset:
    """Tokenize and id-encode molecules into a :class:`TokenDataset` (``[bos ... eos pad]``)."""
    tokenizer = get_tokenizer(tokenizer_kind)
    width = max_length + 2
    ids = np.full((len(smiles), width), vocab.pad_id, dtype=np.int16)
    lengths = np.zeros(len(smiles), dtype=np.int16)
    for i, s in enumerate(smiles):
        row = vocab.encode(tokenizer.tokenize(s))[:width]
        ids[i, : len(row)] = row
        lengths[i] = len(row)
    return TokenDataset(ids, lengths)


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Shuffled batches of molecules of similar length; each molecule once per epoch.

    Each epoch: a seeded permutation is cut into chunks of ``chunk_batches`` batches, each chunk
    is sorted by length and cut into batches, and the batch order is shuffled again. Within a
    chunk the draw is still random, so batches differ from epoch to epoch.

    Args:
        lengths: Token length of every molecule.
        batch_size: Molecules per batch.
        seed: Base seed; epoch ``e`` uses ``seed + e`` (set by Lightning through :meth:`set_epoch`).
        chunk_batches: Batches per sorted chunk (1 = plain random batches).
        drop_last: Drop the last, short batch of each chunk.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray | Tensor,
        batch_size: int,
        seed: int = 0,
        chunk_batches: int = 50,
        drop_last: bool = False,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.chunk = max(1, int(chunk_batches)) * self.batch_size
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's order (called by Lightning at the start of every epoch)."""
        self.epoch = int(epoch)

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed + self.epoch)
        perm = rng.permutation(len(self.lengths))
        batches: list[np.ndarray] = []
        for start in range(0, len(perm), self.chunk):
            part = perm[start : start + self.chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            for b in range(0, len(part), self.batch_size):
                batch = part[b : b + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._batches():
            yield batch.tolist()

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.chunk)
        per_full = self.chunk // self.batch_size
        if self.drop_last:
            return full * per_full + rest // self.batch_size
        return full * per_full + -(-rest // self.batch_size)
