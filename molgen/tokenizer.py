"""Tokenizers (SMILES regex, SELFIES symbols) and the token vocabulary stored inside model files.

The SMILES tokenizer is one regular expression with a fixed alternation order: every string splits
into tokens that join back to exactly that string, and the same input gives the same tokens,
vocabulary and ids on any machine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from molgen.errors import MolgenError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)

VOCAB_FORMAT = "molgen-vocab"
VOCAB_VERSION = 1

# Order matters: bracket atoms first (charges, isotopes, H counts, chirality inside), then the
# two-letter organic-subset halogens, then %nn ring labels, then any other single character (bonds,
# branches, digits, '/', '\', '@', '.', one-letter atoms, and garbage too) so nothing is skipped.
SMILES_TOKEN_PATTERN = r"(\[[^\[\]]+\]|Br|Cl|%\([0-9]+\)|%[0-9]{2}|.)"
_SMILES_RE = re.compile(SMILES_TOKEN_PATTERN, re.DOTALL)


class UnknownTokensError(MolgenError):
    """Tokens that are not in the vocabulary (for example a ``[Se]`` the model never saw).

    Attributes:
        tokens: The distinct unknown tokens, in order of first appearance.
    """

    def __init__(self, tokens: Sequence[str]):
        self.tokens = list(dict.fromkeys(tokens))
        shown = ", ".join(self.tokens[:10]) + (" ..." if len(self.tokens) > 10 else "")
        super().__init__(
            f"{len(self.tokens)} token(s) not in the vocabulary: {shown}; "
            "use molecules made of the model's tokens or retrain with data that contains them"
        )


class Vocabulary:
    """Token <-> id mapping with the special tokens pinned to ids 0-3 (pad, bos, eos, unk).

    Args:
        tokens: All tokens in id order; must start with ``<pad>, <bos>, <eos>, <unk>``.
    """

    pad_id = 0
    bos_id = 1
    eos_id = 2
    unk_id = 3

    def __init__(self, tokens: Sequence[str]):
        tokens = [str(t) for t in tokens]
        if tuple(tokens[:4]) != SPECIAL_TOKENS:
            raise MolgenError(
                f"vocabulary must start with {', '.join(SPECIAL_TOKENS)}; got {tokens[:4]}: "
                "the model or vocab file is damaged or not a molgen file"
            )
        if len(set(tokens)) != len(tokens):
            raise MolgenError("vocabulary has duplicate tokens: the model or vocab file is damaged")
        self.tokens: list[str] = tokens
        self._index: dict[str, int] = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]]) -> Vocabulary:
        """Build a vocabulary: the four special tokens, then every other token in sorted order.

        Args:
            token_lists: Token sequences (one per molecule).

        Returns:
            The vocabulary; identical for identical token sets, whatever their order.
        """
        seen: set[str] = set()
        for tokens in token_lists:
            seen.update(tokens)
        seen.difference_update(SPECIAL_TOKENS)
        return cls([*SPECIAL_TOKENS, *sorted(seen)])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def __hash__(self) -> int:
        return hash(tuple(self.tokens))

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    def token_to_id(self, token: str) -> int:
        """Return the id of ``token``.

        Raises:
            UnknownTokensError: If the token is not in the vocabulary.
        """
        try:
            return self._index[token]
        except KeyError:
            raise UnknownTokensError([token]) from None

    def id_to_token(self, i: int) -> str:
        """Return the token with id ``i``.

        Raises:
            IndexError: If ``i`` is not a valid id.
        """
        i = int(i)
        if not 0 <= i < len(self.tokens):
            raise IndexError(f"token id {i} out of range for a vocabulary of {len(self.tokens)}")
        return self.tokens[i]

    def unknown_tokens(self, tokens: Iterable[str]) -> list[str]:
        """Return the distinct tokens not in the vocabulary, in order of first appearance."""
        index = self._index
        return list(dict.fromkeys(t for t in tokens if t not in index))

    def encode(self, tokens: Sequence[str], add_bos_eos: bool = True) -> list[int]:
        """Map tokens to ids, optionally wrapped in ``<bos>`` ... ``<eos>``.

        Raises:
            UnknownTokensError: If any token is not in the vocabulary (all of them are named).
        """
        index = self._index
        try:
            ids = [index[t] for t in tokens]
        except KeyError:
            raise UnknownTokensError(self.unknown_tokens(tokens)) from None
        if add_bos_eos:
            return [self.bos_id, *ids, self.eos_id]
        return ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Map ids back to tokens: stops at ``<eos>``, skips pad/bos/unk, never emits special text.

        Args:
            ids: Token ids (ints, numpy ints or 0-d tensors all work).

        Raises:
            IndexError: If an id is out of range.
        """
        out: list[str] = []
        n = len(self.tokens)
        for raw in ids:
            i = int(raw)
            if i == self.eos_id:
                break
            if i < 0 or i >= n:
                raise IndexError(f"token id {i} out of range for a vocabulary of {n}")
            if i > self.unk_id:
                out.append(self.tokens[i])
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-type form (stored inside model files and ``vocab.json``)."""
        return {"format": VOCAB_FORMAT, "version": VOCAB_VERSION, "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocabulary:
        """Rebuild a vocabulary from :meth:`to_dict` output.

        Raises:
            MolgenError: If ``d`` is not a molgen vocabulary.
        """
        if not isinstance(d, dict) or not isinstance(d.get("tokens"), list):
            raise MolgenError(
                "not a molgen vocabulary (no 'tokens' list): the model or vocab file is damaged"
            )
        version = d.get("version", VOCAB_VERSION)
        if not isinstance(version, int) or version > VOCAB_VERSION:
            raise MolgenError(
                f"vocabulary format version {version!r} is newer than this molgen understands "
                f"({VOCAB_VERSION}); upgrade molgen"
            )
        return cls(d["tokens"])


class SmilesTokenizer:
    """Regex SMILES tokenizer: bracket atoms, ``Cl``, ``Br`` and ``%nn`` are single tokens.

    ``"".join(tokenize(s)) == s`` holds for every string ``s``.
    """

    kind = "smiles"

    def tokenize(self, smiles: str) -> list[str]:
        """Split a SMILES string into tokens."""
        return _SMILES_RE.findall(smiles)

    def detokenize(self, tokens: Iterable[str]) -> str:
        """Join tokens back into a SMILES string (special tokens are dropped)."""
        return "".join(t for t in tokens if t not in SPECIAL_TOKENS)

    def __repr__(self) -> str:
        return "SmilesTokenizer()"


class SelfiesTokenizer:
    """SELFIES tokenizer: SMILES in, SELFIES symbols out (via the ``selfies`` package), and back."""

    kind = "selfies"

    def tokenize(self, smiles: str) -> list[str]:
        """Encode a SMILES string as SELFIES and split it into symbols.

        Raises:
            MolgenError: If ``selfies`` cannot encode the molecule (e.g. a pentavalent carbon).
        """
        import selfies as sf

        try:
            encoded = sf.encoder(smiles)
        except sf.EncoderError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "encoder error"
            raise MolgenError(f"cannot encode {smiles!r} as SELFIES: {first}") from None
        if encoded is None:  # older selfies versions return None instead of raising
            raise MolgenError(f"cannot encode {smiles!r} as SELFIES")
        return list(sf.split_selfies(encoded))

    def detokenize(self, tokens: Iterable[str]) -> str:
        """Decode SELFIES symbols to a SMILES string; returns ``""`` if they cannot be decoded."""
        import selfies as sf

        text = "".join(t for t in tokens if t not in SPECIAL_TOKENS)
        try:
            decoded = sf.decoder(text)
        except sf.DecoderError:
            return ""
        return decoded or ""

    def __repr__(self) -> str:
        return "SelfiesTokenizer()"


TOKENIZER_KINDS: tuple[str, ...] = ("smiles", "selfies")


def get_tokenizer(kind: str) -> SmilesTokenizer | SelfiesTokenizer:
    """Return the tokenizer for a representation name.

    Args:
        kind: ``"smiles"`` or ``"selfies"`` (case-insensitive).

    Raises:
        MolgenError: For any other name.
    """
    name = str(kind).strip().lower()
    if name == "smiles":
        return SmilesTokenizer()
    if name == "selfies":
        return SelfiesTokenizer()
    raise MolgenError(f"unknown representation {kind!r}; use one of: {', '.join(TOKENIZER_KINDS)}")


__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SMILES_TOKEN_PATTERN",
    "SPECIAL_TOKENS",
    "TOKENIZER_KINDS",
    "UNK",
    "SelfiesTokenizer",
    "SmilesTokenizer",
    "UnknownTokensError",
    "Vocabulary",
    "get_tokenizer",
]
