"""SMILES syntax while decoding: the tokens that can follow what a row has written so far.

A SMILES decoder that samples token by token can write strings no parser reads: a branch closed
that was never opened, a ring label left open, a bond at the very end, ``(`` straight after
``(``. On a model trained for ten minutes on a small file, two thirds of the invalid samples were
such syntax errors; on the bundled model a third (``BENCHMARKS_transfer.md``).
:class:`SmilesSyntax` keeps, per row, the open branches, the open ring labels and the kind of the
last token, and masks the next-token logits to the tokens that keep the string well formed; near
the length limit it only allows tokens that still leave room to close everything and end. It
also counts each atom's bonds (bond orders, ring closures, explicit hydrogens) and forbids a bond
that would take an atom past the largest valence RDKit accepts for it (measured once per token
with RDKit itself; aromatic bonds count 1, so a string is never forbidden that RDKit would
read), and a ring closure that would double an existing bond. The decoder's distribution is
renormalised over the allowed tokens: one pass, no retry. Aromaticity (RDKit's kekulization) is
left to the model.

The state is a few tensors, so the mask costs a handful of vector operations per step for the
whole batch. SELFIES models need none of this (every SELFIES string decodes to a molecule).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

from molgen.tokenizer import SPECIAL_TOKENS

# Token kinds (also the "last token" state; START is the state before the first token, and
# BRANCH_BOND a bond written right after '(' or ')', which only an atom can follow).
START, ATOM, BOND, OPEN, CLOSE, RING, DOT, EOS, NEVER, BRANCH_BOND = range(10)
_ORGANIC = {"B", "C", "N", "O", "P", "S", "F", "Cl", "Br", "I", "b", "c", "n", "o", "p", "s", "*"}
_BONDS = {"-", "=", "#", ":", "/", "\\", "$"}
_RING_RE = re.compile(r"^(?:[0-9]|%[0-9]{2}|%\([0-9]+\))$")

# _FOLLOWS[last kind][next kind]: SMILES's rules for neighbouring tokens.
_FOLLOWS = torch.zeros(10, 9, dtype=torch.bool)
for _last, _nexts in {
    START: (ATOM,),
    ATOM: (ATOM, BOND, OPEN, CLOSE, RING, DOT, EOS),
    RING: (ATOM, BOND, OPEN, CLOSE, RING, DOT, EOS),
    CLOSE: (ATOM, BOND, OPEN, CLOSE, DOT, EOS),
    BOND: (ATOM, RING),
    BRANCH_BOND: (ATOM,),
    OPEN: (ATOM, BOND, DOT),
    DOT: (ATOM,),
}.items():
    _FOLLOWS[_last, list(_nexts)] = True
# Tokens a kind commits the string to beyond itself: a bond or '(' or '.' needs an atom next.
_EXTRA = torch.tensor([0, 0, 1, 1, 0, 0, 1, 0, 0])


_BOND_ORDER = {"-": 1, "=": 2, "#": 3, "$": 4, ":": 1, "/": 1, "\\": 1}
_UNLIMITED = 99
_AROMATIC_IN_BRACKET = re.compile(r"^\[(\d*)(se|te|as|[bcnops])")


def _aliphatic(token: str) -> str:
    """The same atom written aliphatic (``c`` -> ``C``, ``[nH+]`` -> ``[NH+]``)."""
    if token in ("b", "c", "n", "o", "p", "s"):
        return token.upper()
    return _AROMATIC_IN_BRACKET.sub(lambda m: "[" + m.group(1) + m.group(2).capitalize(), token)


def bond_capacity(token: str) -> int:
    """How many bond-order units RDKit lets this atom token carry (explicit H included).

    Measured with RDKit: the atom with k single-bonded methyls, for growing k. Aromatic atoms
    are measured in their aliphatic form (their aromatic bonds count 1 in the mask, so this
    never forbids a string RDKit reads). Atoms RDKit does not limit get a large number.
    """
    from rdkit import Chem, RDLogger

    if token == "*":
        return _UNLIMITED
    RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]  # missing from RDKit's stub
    atom = _aliphatic(token)
    best = 0
    for k in range(1, 9):
        if Chem.MolFromSmiles(atom + "(C)" * (k - 1) + "C") is not None:
            best = k
    return _UNLIMITED if best == 8 else best


def token_kind(token: str) -> int:
    """The kind of one vocabulary token (``NEVER`` for pad, bos, unk and stray characters)."""
    if token == SPECIAL_TOKENS[2]:
        return EOS
    if token in SPECIAL_TOKENS:
        return NEVER
    if token == "(":
        return OPEN
    if token == ")":
        return CLOSE
    if token == ".":
        return DOT
    if token in _BONDS:
        return BOND
    if _RING_RE.match(token):
        return RING
    if token in _ORGANIC or (token.startswith("[") and token.endswith("]") and len(token) > 2):
        return ATOM
    return NEVER


class SmilesSyntax:
    """The token kinds of a SMILES vocabulary; :meth:`start` gives the per-batch state.

    Args:
        tokens: The vocabulary's tokens in id order.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self.kinds = torch.tensor([token_kind(t) for t in tokens], dtype=torch.long)
        labels = [t for t in tokens if token_kind(t) == RING]
        self.ring_label = torch.tensor(
            [labels.index(t) if token_kind(t) == RING else -1 for t in tokens], dtype=torch.long
        )
        self.n_labels = len(labels)
        self.order = torch.tensor([_BOND_ORDER.get(t, 0) for t in tokens], dtype=torch.long)
        self.capacity = torch.tensor(
            [bond_capacity(t) if token_kind(t) == ATOM else 0 for t in tokens], dtype=torch.long
        )
        self._tables: dict[torch.device, _Tables] = {}

    def tables(self, device: torch.device) -> _Tables:
        """The per-token tables on ``device`` (made once: a state is started per decoded batch)."""
        if device not in self._tables:
            self._tables[device] = _Tables(self, device)
        return self._tables[device]

    def start(self, batch: int, max_length: int, device: torch.device | str) -> SyntaxState:
        """A fresh state for ``batch`` rows that will write at most ``max_length`` tokens."""
        return SyntaxState(self, batch, max_length, torch.device(device))


class _Tables:
    """Per-token constants of a vocabulary on one device, shaped for the per-step masks."""

    def __init__(self, syntax: SmilesSyntax, device: torch.device) -> None:
        kinds = syntax.kinds.to(device)
        self.kinds = kinds
        self.follows = _FOLLOWS.to(device)[:, kinds]  # (last kind, V)
        self.ring_label = syntax.ring_label.to(device)
        self.is_ring = self.ring_label >= 0
        self.ring_cols = self.is_ring.nonzero().squeeze(1)
        self.labels = self.ring_label[self.ring_cols]  # (R,) label of each ring token
        self.label_any = self.ring_label.clamp(min=0)  # (V,) a label for every token
        self.is_eos = kinds == EOS
        self.close_cols = (kinds == CLOSE).nonzero().squeeze(1)
        self.open_cols = (kinds == OPEN).nonzero().squeeze(1)
        self.end_cols = ((kinds == EOS) | (kinds == DOT)).nonzero().squeeze(1)
        self.atom_cols = (kinds == ATOM).nonzero().squeeze(1)
        self.bond_cols = (kinds == BOND).nonzero().squeeze(1)
        # closers owed after a token: '(' adds one, ')' pays one; a ring token's depends on the row
        delta = torch.zeros(len(kinds), dtype=torch.long, device=device)
        delta[self.open_cols] = 1
        delta[self.close_cols] = -1
        self.delta = delta
        self.extra = _EXTRA.to(device)[kinds]  # (V,)
        self.order = syntax.order.to(device)
        self.capacity = syntax.capacity.to(device)
        self.atom_capacity = self.capacity[self.atom_cols].unsqueeze(0)  # (1, atoms)
        self.bond_order = self.order[self.bond_cols].unsqueeze(0)  # (1, bonds)


class SyntaxState:
    """Per-row SMILES state of a batch being decoded (see :class:`SmilesSyntax`)."""

    def __init__(
        self, syntax: SmilesSyntax, batch: int, max_length: int, device: torch.device
    ) -> None:
        self.t = syntax.tables(device)
        self.max_length = max_length
        self.written = 0
        self.last = torch.full((batch,), START, dtype=torch.long, device=device)
        self.depth = torch.zeros(batch, dtype=torch.long, device=device)
        n = max(1, syntax.n_labels)
        self.open = torch.zeros(batch, n, dtype=torch.bool, device=device)
        # labels opened on the current atom: closing one there ("C11") is not a ring
        self.opened_here = torch.zeros(batch, n, dtype=torch.bool, device=device)
        # Valence: every atom's capacity and bond-order units used so far; the current atom and
        # the atoms already bonded to it, the branch stack, a bond written but not yet attached,
        # and per ring label its opening atom and the bond order written there (0: none).
        self.cap = torch.zeros(batch, max_length + 1, dtype=torch.long, device=device)
        self.used = torch.zeros(batch, max_length + 1, dtype=torch.long, device=device)
        self.atoms = torch.zeros(batch, dtype=torch.long, device=device)
        self.cur = torch.full((batch,), max_length, dtype=torch.long, device=device)  # slot: none
        self.bonded_here = torch.zeros(batch, max_length + 1, dtype=torch.bool, device=device)
        self.stack = torch.zeros(batch, max_length + 1, dtype=torch.long, device=device)
        self.pending = torch.zeros(batch, dtype=torch.long, device=device)
        self.opener = torch.zeros(batch, n, dtype=torch.long, device=device)
        self.open_order = torch.zeros(batch, n, dtype=torch.long, device=device)
        # rows the mask could not guide (no token allowed: left unconstrained from then on)
        self.stuck = torch.zeros(batch, dtype=torch.bool, device=device)

    def allowed(self) -> Tensor:
        """(rows, V) bool: the tokens each row may write next."""
        t = self.t
        ok = t.follows[self.last]  # (B, V), a copy
        ring_open = self.open[:, t.label_any] & t.is_ring  # (B, V): this ring token would close
        ok &= ~(self.opened_here[:, t.label_any] & t.is_ring)  # "C11" closes nothing
        rings_open = self.open.sum(1)
        need = self.depth + rings_open  # closing tokens still owed
        ok[:, t.close_cols] &= (self.depth > 0).unsqueeze(1)
        ok[:, t.end_cols] &= (need == 0).unsqueeze(1)
        # Room left after this token for the owed closers and any atom it commits to (the
        # length limit ends a string as eos does).
        delta = torch.where(t.is_ring, 1 - 2 * ring_open.long(), t.delta)
        # ring closures also need atoms to sit on (one atom holds a few): keep room for them
        rings_after = rings_open.unsqueeze(1) + torch.where(t.is_ring, delta, 0)
        owed = (
            (need.unsqueeze(1) + t.extra)
            .add_(delta)
            .add_(rings_after.div_(2, rounding_mode="floor"))
        )
        room = self.max_length - self.written - 1
        ok &= (owed <= room) | t.is_eos
        self._valence(ok, rings_open)
        return ok

    def _valence(self, ok: Tensor, rings_open: Tensor) -> None:
        """Forbid (in place) bonds past an atom's capacity and ring closures that double a bond."""
        t = self.t
        rows = torch.arange(ok.shape[0], device=ok.device)
        free = self.cap[rows, self.cur] - self.used[rows, self.cur]  # (B,)
        bonded = (self.last != START) & (self.last != DOT)
        b = torch.where(self.pending > 0, self.pending, 1)  # the bond the next atom/ring gets
        # No dead ends: while a ring is open, some atom the string can still reach (the current
        # one, or a branch point a ')' returns to) must have a free bond left.
        depth_max = self.stack.shape[1]
        on_stack = torch.arange(depth_max, device=ok.device).unsqueeze(0) < self.depth.unsqueeze(1)
        stack_free = self.cap.gather(1, self.stack) - self.used.gather(1, self.stack)
        any_stack = ((stack_free >= 1) & on_stack).any(1)
        b_in = torch.where(bonded, b, 0)
        # right after '(' (and its bond) the new atom bonds to the branch point: the stack's top
        top = (self.depth - 1).clamp(min=0)
        at_top = (self.depth > 0) & (self.stack[rows, top] == self.cur)
        stack_free[rows, top] -= torch.where(at_top, b_in, 0)
        any_stack_in = ((stack_free >= 1) & on_stack).any(1)
        new_free = t.atom_capacity - b_in.unsqueeze(1)  # (B, atoms)
        fits = (free >= b).unsqueeze(1) & (new_free >= 0)
        live = (rings_open == 0).unsqueeze(1) | (new_free >= 1) | any_stack_in.unsqueeze(1)
        ok[:, t.atom_cols] &= (~bonded.unsqueeze(1) | fits) & live
        ok[:, t.bond_cols] &= free.unsqueeze(1) >= t.bond_order
        ok[:, t.open_cols] &= (free >= 1).unsqueeze(1)
        ok[:, t.close_cols] &= ((rings_open == 0) | any_stack).unsqueeze(1)
        if len(t.ring_cols) == 0:
            return
        label = t.labels  # (R,)
        closing = self.open[:, label]  # (B, R)
        oo = self.open_order[:, label]
        o = _closure_order(self.pending.unsqueeze(1), oo)
        opener = self.opener[:, label]
        opener_free = self.cap.gather(1, opener) - self.used.gather(1, opener)
        close_ok = (free.unsqueeze(1) >= o) & (opener_free >= o - oo.clamp(min=1))
        close_ok &= ~self.bonded_here.gather(1, opener)  # a ring bond may not double a bond
        close_ok &= (
            (rings_open == 1).unsqueeze(1) | (free.unsqueeze(1) - o >= 1) | any_stack.unsqueeze(1)
        )
        open_ok = (free >= b) & ((free - b >= 1) | any_stack)
        ok[:, t.ring_cols] &= torch.where(closing, close_ok, open_ok.unsqueeze(1))

    def mask(self, logits: Tensor) -> Tensor:
        """``logits`` with disallowed tokens at -inf (a row with none allowed is left as it is)."""
        ok = self.allowed()
        stuck = ~ok.any(1)
        if bool(stuck.any()):
            ok[stuck] = True
            self.stuck |= stuck
        return logits.masked_fill(~ok, float("-inf"))

    def advance(self, tokens: Tensor) -> None:
        """Record the token each row wrote."""
        kind = self.t.kinds[tokens]
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        self.written += 1
        is_open, is_close = kind == OPEN, kind == CLOSE
        self.stack[rows[is_open], self.depth[is_open]] = self.cur[is_open]
        self.depth += is_open.long() - is_close.long()
        self.depth.clamp_(min=0)
        self.cur[is_close] = self.stack[rows[is_close], self.depth[is_close]]
        self.pending = torch.where(kind == BOND, self.t.order[tokens], self.pending)
        is_atom = kind == ATOM
        if bool(is_atom.any()):
            r = rows[is_atom]
            bonded = (self.last[r] != START) & (self.last[r] != DOT)
            b = torch.where(bonded, self.pending[r].clamp(min=1), 0)
            new = self.atoms[r]
            self.cap[r, new] = self.t.capacity[tokens[r]]
            self.used[r, new] = b
            self.used[r, self.cur[r]] += b
            self.bonded_here[r] = False
            self.bonded_here[r, self.cur[r]] = bonded
            self.cur[r] = new
            self.atoms[r] += 1
            self.pending[r] = 0
            self.opened_here[r] = False
        is_ring = kind == RING
        if bool(is_ring.any()):
            r = rows[is_ring]
            k = self.t.ring_label[tokens[r]]
            cur, pending = self.cur[r], self.pending[r]
            was_open = self.open[r, k]
            oo = self.open_order[r, k]
            o = _closure_order(pending, oo)
            opener = self.opener[r, k]
            # opening: reserve the bond at this atom; closing: add it at both ends (the
            # opening atom already holds max(oo, 1))
            self.used[r, cur] += torch.where(was_open, o, pending.clamp(min=1))
            self.used[r, opener] += torch.where(was_open, o - oo.clamp(min=1), 0)
            self.bonded_here[r, opener] |= was_open
            self.opener[r, k] = torch.where(was_open, opener, cur)
            self.open_order[r, k] = torch.where(was_open, 0, pending)
            self.open[r, k] = ~was_open
            self.opened_here[r, k] = ~was_open
            self.pending[r] = 0
        is_dot = kind == DOT
        self.cur[is_dot] = self.max_length  # the empty slot: the next atom starts anew
        branch_bond = (kind == BOND) & ((self.last == OPEN) | (self.last == CLOSE))
        kind = torch.where(branch_bond, BRANCH_BOND, kind)
        self.last = torch.where(kind == EOS, self.last, kind)

    def select(self, index: Tensor) -> None:
        """Keep (or reorder, or repeat) rows, as the decoder does."""
        self.last = self.last[index]
        self.depth = self.depth[index]
        self.open = self.open[index]
        self.opened_here = self.opened_here[index]
        for name in (
            "cap",
            "used",
            "atoms",
            "cur",
            "bonded_here",
            "stack",
            "pending",
            "opener",
            "open_order",
            "stuck",
        ):
            setattr(self, name, getattr(self, name)[index])


def _closure_order(pending: Tensor, at_opening: Tensor) -> Tensor:
    """Bond order of a ring closure as RDKit reads it.

    The order written at the opening digit wins, else the one at the closing digit, else single.
    """
    return torch.where(at_opening > 0, at_opening, pending.clamp(min=1))


def syntax_for(tokens: Sequence[str], tokenizer_kind: str) -> SmilesSyntax | None:
    """The syntax mask of a SMILES vocabulary; None for SELFIES (always valid) or others."""
    return SmilesSyntax(tokens) if tokenizer_kind == "smiles" else None


__all__ = ["SmilesSyntax", "SyntaxState", "syntax_for", "token_kind"]
