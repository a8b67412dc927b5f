"""Users' SMILES to a model's token ids: canonicalized as in training, checked, stereo handled.

A model can only read molecules written with its own tokens. Stereochemistry is the common case
of input it cannot spell: a model trained without it (``DataConfig.stereo`` off, or a vocabulary
with no stereo token, like the bundled MOSES model) gets its input with stereochemistry removed,
and the caller says so once (:func:`stereo_warning`). Any other token the model never saw (an
atom such as ``P`` or ``I`` for a MOSES model) rejects the molecule with a message that names the
tokens and points to fine-tuning (``molgen train DATA --from MODEL``), which extends the
vocabulary.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from molgen.data import (
    EMPTY,
    NOT_SELFIES,
    TOO_LONG,
    UNKNOWN_TOKENS,
    UNPARSEABLE,
    canonicalize,
    smiles_size_problem,
)
from molgen.errors import MolgenError
from molgen.tokenizer import SPECIAL_TOKENS, Vocabulary

# Characters that write stereochemistry: '@'/'@@' (tetrahedral, inside bracket atoms and SELFIES
# symbols) and '/', '\' (double-bond geometry).
STEREO_CHARACTERS = ("@", "/", "\\")


def has_stereo_text(text: str) -> bool:
    """Whether a SMILES (or token) writes stereochemistry: an ``@``, a slash or a backslash."""
    return any(c in text for c in STEREO_CHARACTERS)


def vocabulary_has_stereo(vocab: Vocabulary) -> bool:
    """Whether any token of the vocabulary writes stereochemistry."""
    return any(has_stereo_text(t) for t in vocab.tokens if t not in SPECIAL_TOKENS)


@dataclass(frozen=True)
class CheckedInput:
    """One molecule prepared for a model, or the reason it cannot be.

    Attributes:
        text: The input as given.
        smiles: Canonical SMILES the model reads (None when rejected).
        ids: Token ids ``[bos, ..., eos]`` (None when rejected).
        reason: Why it was rejected (one of ``molgen.data``'s reasons), or None.
        detail: More about the rejection (the unknown tokens, the length), or "".
        stereo_removed: Stereochemistry was removed because the model cannot spell it.
    """

    text: str
    smiles: str | None = None
    ids: list[int] | None = None
    reason: str | None = None
    detail: str = ""
    stereo_removed: bool = False

    @property
    def ok(self) -> bool:
        """The molecule can be encoded."""
        return self.ids is not None


class InputChecker:
    """Turns SMILES into a model's token ids the way its training data was prepared.

    Args:
        tokenizer: The model's tokenizer (``molgen.tokenizer.get_tokenizer``).
        vocab: The model's vocabulary.
        max_length: Longest token sequence the model reads (without bos/eos).
        largest_fragment: Keep only the largest fragment (as in training).
        stereo: Whether the model's training data kept stereochemistry.
        model_path: Shown in the fine-tuning hint of unknown-token messages.

    Attributes:
        stereo_free: The model cannot spell stereochemistry (trained without it, or no stereo
            token in its vocabulary): input stereochemistry is removed.
        warned: The stereo warning was printed already (see :func:`warn_stereo_removed`).
    """

    def __init__(
        self,
        tokenizer: Any,
        vocab: Vocabulary,
        max_length: int,
        largest_fragment: bool = True,
        stereo: bool = True,
        model_path: Any = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.max_length = int(max_length)
        self.largest_fragment = largest_fragment
        self.trained_with_stereo = bool(stereo)
        self.vocab_has_stereo = vocabulary_has_stereo(vocab)
        self.stereo_free = not (self.trained_with_stereo and self.vocab_has_stereo)
        self.model_path = model_path
        self.warned = False

    @classmethod
    def for_model(cls, model: Any) -> InputChecker:
        """The checker of a loaded ``MolGenModel`` (built once and kept on the model)."""
        checker = model.__dict__.get("_input_checker")
        if checker is None:
            checker = cls(
                model.tokenizer,
                model.vocab,
                model.config.max_length,
                largest_fragment=model.data_config.largest_fragment,
                stereo=model.data_config.stereo,
                model_path=getattr(model, "path", None),
            )
            model.__dict__["_input_checker"] = checker
        return checker

    def stereo_reason(self) -> str:
        """Why this model cannot spell stereochemistry (for messages)."""
        if not self.trained_with_stereo:
            return "this model was trained without stereochemistry"
        return "this model's vocabulary has no stereo token (@, / or \\)"

    def check(self, text: str) -> CheckedInput:
        """Canonicalize, tokenize and check one molecule; never raises for bad input."""
        raw = text if isinstance(text, str) else ""
        if not raw.strip():
            return CheckedInput(raw, reason=EMPTY)
        too_big = smiles_size_problem(raw)
        if too_big:
            return CheckedInput(raw, reason=TOO_LONG, detail=too_big)
        keep_stereo = not self.stereo_free
        try:
            canon = canonicalize(raw, largest_fragment=self.largest_fragment, stereo=keep_stereo)
        except Exception as exc:  # an RDKit exception on one odd row must not stop the run
            return CheckedInput(raw, reason=UNPARSEABLE, detail=f"RDKit error: {_first_line(exc)}")
        if canon is None:
            return CheckedInput(raw, reason=UNPARSEABLE)
        removed = False
        if self.stereo_free and has_stereo_text(raw):
            # Counted only when the stereochemistry was real (RDKit keeps it when canonicalizing).
            kept = canonicalize(raw, largest_fragment=self.largest_fragment, stereo=True)
            removed = kept is not None and kept != canon
        try:
            tokens = self.tokenizer.tokenize(canon)
        except MolgenError as exc:
            return CheckedInput(raw, canon, reason=NOT_SELFIES, detail=str(exc))
        unknown = self.vocab.unknown_tokens(tokens)
        if unknown:
            return CheckedInput(raw, canon, reason=UNKNOWN_TOKENS, detail=" ".join(unknown))
        if len(tokens) > self.max_length:
            return CheckedInput(
                raw, canon, reason=TOO_LONG, detail=f"{len(tokens)} tokens > {self.max_length}"
            )
        return CheckedInput(raw, canon, self.vocab.encode(tokens), stereo_removed=removed)

    def error_message(self, item: CheckedInput) -> str:
        """A one-line message saying why a molecule cannot be encoded and what to do."""
        text = item.text.strip()
        if item.reason == EMPTY:
            return "an empty SMILES was given; pass a molecule."
        if item.reason == UNPARSEABLE:
            return f"{text!r} is not a valid SMILES (RDKit cannot parse it)."
        if item.reason == UNKNOWN_TOKENS:
            unknown = f"{text!r} has tokens this model never saw: {item.detail}. "
            return unknown + self.unknown_hint()
        if item.reason == TOO_LONG and "characters" in item.detail:
            return f"{text[:40]!r}... is too long to read ({item.detail})."
        if item.reason == TOO_LONG:
            n = item.detail.split(" ", 1)[0]
            return f"{text!r} has {n} tokens; this model handles at most {self.max_length}."
        return f"{text!r} cannot be encoded by this model ({item.reason}: {item.detail})."

    def unknown_hint(self) -> str:
        """What to do about tokens the model never saw."""
        model = self.model_path or "MODEL"
        return (
            "The model can only read molecules written with its own tokens; to extend its "
            f"vocabulary, fine-tune it on data that has them: molgen train DATA --from {model}"
        )

    def to_ids(self, smiles: Iterable[str]) -> tuple[list[list[int]], int]:
        """Token ids of molecules that must all be encodable.

        Returns:
            (id lists, number of molecules whose stereochemistry was removed).

        Raises:
            MolgenError: for the first molecule that cannot be encoded (what is wrong, what to do).
        """
        rows: list[list[int]] = []
        removed = 0
        for s in smiles:
            item = self.check(s)
            if item.ids is None:
                raise MolgenError(self.error_message(item))
            rows.append(item.ids)
            removed += item.stereo_removed
        return rows, removed


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """A padded (n, width) id batch and its (n,) lengths from id lists (each at least bos/eos)."""
    if not rows:
        raise MolgenError("no molecule to encode.")
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    # one flat copy and a mask instead of a tensor per row: this runs beside the encoder, and
    # every Python step here holds the GIL the reading thread needs
    ids = np.full((len(rows), int(lengths.max())), pad_id, dtype=np.int64)
    ids[np.arange(ids.shape[1]) < lengths[:, None]] = np.fromiter(
        itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum())
    )
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def stereo_warning(n: int, checker: InputChecker) -> str:
    """The one warning line for ``n`` molecules whose stereochemistry was removed."""
    what = "molecule" if n == 1 else "molecules"
    return f"Warning: stereochemistry removed from {n} input {what}: {checker.stereo_reason()}."


def warn_stereo_removed(n: int, checker: InputChecker) -> None:
    """Print :func:`stereo_warning` on stderr, once per checker (so once per loaded model).

    Nothing is printed when ``n`` is 0, nor after the first warning: a command that encodes in
    several calls (evaluation, for one) says it once rather than once per batch.
    """
    if n and not checker.warned:
        checker.warned = True
        print(stereo_warning(n, checker), file=sys.stderr)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "STEREO_CHARACTERS",
    "CheckedInput",
    "InputChecker",
    "has_stereo_text",
    "pad_ids",
    "stereo_warning",
    "vocabulary_has_stereo",
    "warn_stereo_removed",
]
