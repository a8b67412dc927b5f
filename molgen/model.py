"""The molecule VAE: bidirectional GRU encoder, latent head from ``molgen.latent``, GRU decoder.

The model sees token ids laid out as ``[bos, t_1, ..., t_n, eos, pad, ...]``. The encoder reads
``t_1 .. eos``; the decoder is teacher-forced on ``bos .. t_n`` and predicts ``t_1 .. eos``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from molgen.errors import MolgenError
from molgen.latent import build_latent, kl_to_prior


@dataclass
class ModelConfig:
    """Sizes of the VAE; plain types so the config is stored verbatim in model files.

    Attributes:
        vocab_size: Number of token ids (including the four special tokens).
        embedding_dim: Token embedding size (shared by encoder and decoder).
        encoder_hidden: Hidden size of each direction of the bidirectional encoder GRU.
        encoder_layers: Encoder GRU layers.
        decoder_hidden: Decoder GRU hidden size.
        decoder_layers: Decoder GRU layers.
        latent: Latent family name registered in ``molgen.latent`` (spcauchy, vmf, power, gaussian).
        latent_dim: AMBIENT dimension of z (z lies on S^{latent_dim-1} for spherical families).
        dropout: Dropout between GRU layers and on embeddings.
        max_length: Longest token sequence (without bos/eos) the model is trained and decodes to.
    """

    vocab_size: int
    embedding_dim: int = 64
    encoder_hidden: int = 256
    encoder_layers: int = 1
    decoder_hidden: int = 512
    decoder_layers: int = 1
    latent: str = "spcauchy"
    latent_dim: int = 64
    dropout: float = 0.0
    max_length: int = 100

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a plain dict, ignoring unknown keys (forward compatibility of model files)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict of the config."""
        return asdict(self)


class BiGRUEncoder(nn.Module):
    """Bidirectional GRU over right-padded sequences, exact without packing.

    Each direction is a unidirectional GRU run on padded input: the forward one reads each
    sequence as is, the backward one reads it reversed within its own length, and each final
    state is taken at position ``length - 1``, where no padding has been read yet. The result
    equals ``pack_padded_sequence`` + ``nn.GRU(bidirectional=True)``, which on CPUs costs about
    a quarter more time per training step (measured at the small preset).
    """

    def __init__(self, input_size: int, hidden: int, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        sizes = [input_size] + [2 * hidden] * (layers - 1)
        self.forward_layers = nn.ModuleList(nn.GRU(n, hidden, batch_first=True) for n in sizes)
        self.backward_layers = nn.ModuleList(nn.GRU(n, hidden, batch_first=True) for n in sizes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Final states of both directions of the last layer, concatenated: (B, 2 * hidden).

        Args:
            x: (B, T, input_size) inputs, each sequence left-aligned with padding after it.
            lengths: (B,) valid lengths (>= 1).
        """
        batch, width = x.shape[0], x.shape[1]
        steps = torch.arange(width, device=x.device).unsqueeze(0)
        last = (lengths - 1).to(x.device).view(batch, 1)
        # reversed-within-length positions (padding stays in place); the map is its own inverse
        rev = torch.where(steps <= last, last - steps, steps).unsqueeze(-1)
        at_last = last.view(batch, 1, 1)
        h_f = h_b = x
        for i, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers, strict=True)):
            if i:
                x = self.dropout(torch.cat([h_f, h_b], dim=-1))
            h_f, _ = fwd(x)
            out_b, _ = bwd(x.gather(1, rev.expand(-1, -1, x.shape[-1])))
            h_b = out_b.gather(1, rev.expand(-1, -1, out_b.shape[-1]))
        first = h_f.gather(1, at_last.expand(-1, 1, h_f.shape[-1]))[:, 0]
        # the backward direction's final state sits at position 0 once re-reversed
        return torch.cat([first, h_b[:, 0]], dim=-1)


class MoleculeVAE(nn.Module):
    """GRU sequence VAE with a pluggable latent family.

    Args:
        config: Model sizes.
        pad_id: Padding token id.
        bos_id: Begin-of-sequence token id.
        eos_id: End-of-sequence token id.
        unk_id: Unknown token id (word dropout replaces decoder inputs by it).
    """

    def __init__(
        self,
        config: ModelConfig,
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
        unk_id: int = 3,
    ) -> None:
        super().__init__()
        self.config = config
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = pad_id, bos_id, eos_id, unk_id
        c = config
        gru_dropout = c.dropout if c.encoder_layers > 1 else 0.0
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim, padding_idx=pad_id)
        self.encoder = BiGRUEncoder(
            c.embedding_dim, c.encoder_hidden, c.encoder_layers, dropout=gru_dropout
        )
        self.latent = build_latent(c.latent, 2 * c.encoder_hidden, c.latent_dim)
        self.latent_to_hidden = nn.Linear(c.latent_dim, c.decoder_layers * c.decoder_hidden)
        self.decoder = nn.GRU(
            c.embedding_dim + c.latent_dim,
            c.decoder_hidden,
            num_layers=c.decoder_layers,
            batch_first=True,
            dropout=c.dropout if c.decoder_layers > 1 else 0.0,
        )
        self.output = nn.Linear(c.decoder_hidden, c.vocab_size)
        self.embedding_dropout = nn.Dropout(c.dropout)

    # ---- encoder ---------------------------------------------------------------------------------
    def encode(self, tokens: Tensor, lengths: Tensor) -> tuple[Distribution, Distribution]:
        """Posterior q(z|x) and prior p(z) for a padded batch.

        Args:
            tokens: (B, T) ids laid out ``[bos, ..., eos, pad...]``.
            lengths: (B,) number of ids up to and including eos (bos included).

        Returns:
            ``(posterior, prior)`` with batch shape (B,).
        """
        x = self.embedding_dropout(self.embedding(tokens[:, 1:]))
        h = self.encoder(x, (lengths - 1).clamp(min=1))
        return self.latent(h)

    # ---- decoder ---------------------------------------------------------------------------------
    def initial_hidden(self, z: Tensor) -> Tensor:
        """Decoder GRU initial state (layers, B, H) from z."""
        c = self.config
        h = torch.tanh(self.latent_to_hidden(z))
        return h.view(z.shape[0], c.decoder_layers, c.decoder_hidden).transpose(0, 1).contiguous()

    def decode_logits(self, z: Tensor, inputs: Tensor, word_dropout: float = 0.0) -> Tensor:
        """Teacher-forced decoder logits.

        Args:
            z: (B, latent_dim) latent codes.
            inputs: (B, T) decoder input ids (``bos, t_1, ..., t_n`` then padding).
            word_dropout: Probability of replacing a non-bos input token by ``unk``.

        Returns:
            (B, T, vocab) logits for the next token at every position.
        """
        if word_dropout > 0 and self.training:
            drop = torch.rand(inputs.shape, device=inputs.device) < word_dropout
            drop[:, 0] = False
            drop &= inputs != self.pad_id
            inputs = inputs.masked_fill(drop, self.unk_id)
        emb = self.embedding_dropout(self.embedding(inputs))
        zs = z.unsqueeze(1).expand(-1, inputs.shape[1], -1)
        out, _ = self.decoder(torch.cat([emb, zs], dim=-1), self.initial_hidden(z))
        return self.output(out)

    def forward(
        self, tokens: Tensor, lengths: Tensor, beta: float = 1.0, word_dropout: float = 0.0
    ) -> dict[str, Tensor]:
        """Loss terms of a batch (everything averaged over the batch).

        Loss per sequence = summed token cross-entropy (padding masked) + beta * KL(q(z|x) || p(z)).

        Returns:
            Dict with ``loss``, ``reconstruction``, ``kl``, ``concentration`` (batch means) and
            ``token_accuracy`` (teacher-forced, over non-pad targets).
        """
        posterior, prior = self.encode(tokens, lengths)
        z = posterior.rsample()
        kl = kl_to_prior(posterior, prior)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        logits = self.decode_logits(z, inputs, word_dropout)
        mask = targets != self.pad_id
        ce = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        ).view_as(targets)
        recon = (ce * mask).sum(dim=1)
        with torch.no_grad():
            correct = ((logits.argmax(-1) == targets) & mask).sum()
            accuracy = correct.float() / mask.sum().clamp(min=1)
            concentration = self.latent.concentration(posterior).float().mean()
        return {
            "loss": (recon + beta * kl).mean(),
            "reconstruction": recon.mean(),
            "kl": kl.mean(),
            "concentration": concentration,
            "token_accuracy": accuracy,
        }

    # ---- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        z: Tensor,
        max_length: int | None = None,
        temperature: float = 1.0,
        greedy: bool = False,
    ) -> list[list[int]]:
        """Decode token ids from latent codes, batched, stopping when every sequence has ended.

        Args:
            z: (B, latent_dim) latent codes.
            max_length: Maximum number of tokens to emit (default: the config's ``max_length``).
            temperature: Softmax temperature for sampling (ignored when ``greedy``).
            greedy: Take the argmax token at every step instead of sampling.

        Returns:
            For each code, the emitted ids up to (not including) eos; special ids never appear.
        """
        if temperature <= 0 and not greedy:
            raise MolgenError("temperature must be > 0 (use greedy decoding for temperature 0).")
        max_length = max_length or self.config.max_length
        batch = z.shape[0]
        h = self.initial_hidden(z)
        token = torch.full((batch,), self.bos_id, dtype=torch.long, device=z.device)
        out = torch.full((batch, max_length), self.pad_id, dtype=torch.long, device=z.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=z.device)
        zin = z.unsqueeze(1)
        # Never emit pad/bos/unk: they are not molecules' tokens.
        banned = torch.tensor([self.pad_id, self.bos_id, self.unk_id], device=z.device)
        for step in range(max_length):
            emb = self.embedding(token).unsqueeze(1)
            o, h = self.decoder(torch.cat([emb, zin], dim=-1), h)
            logits = self.output(o[:, 0])
            logits[:, banned] = float("-inf")
            if greedy:
                token = logits.argmax(-1)
            else:
                probs = torch.softmax(logits.float() / temperature, dim=-1)
                token = torch.multinomial(probs, 1).squeeze(1)
            token = token.masked_fill(finished, self.pad_id)
            out[:, step] = token
            finished |= token == self.eos_id
            if bool(finished.all()):
                break
        result = []
        for row in out.tolist():
            ids = []
            for i in row:
                if i in (self.eos_id, self.pad_id):
                    break
                ids.append(i)
            result.append(ids)
        return result


# ---- the model file ------------------------------------------------------------------------------
MODEL_FORMAT = "molgen-model"
MODEL_FORMAT_VERSION = 1
MODEL_KIND = "smiles-vae"


def model_file_dict(
    model: MoleculeVAE,
    vocabulary: dict[str, Any],
    tokenizer: str,
    data_config: dict[str, Any],
    training: dict[str, Any],
) -> dict[str, Any]:
    """The self-describing model file content: one dict of plain types and tensors.

    Args:
        model: The trained VAE (its config and state_dict are stored).
        vocabulary: ``Vocabulary.to_dict()``.
        tokenizer: Tokenizer kind ("smiles" or "selfies").
        data_config: The data-step settings used for training (canonicalization must match at use).
        training: Training summary (data file fingerprint, molecule counts, final losses, ...).
    """
    return {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "model_kind": MODEL_KIND,
        "config": model.config.to_dict(),
        "vocabulary": vocabulary,
        "tokenizer": tokenizer,
        "data_config": data_config,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "training": training,
    }


def read_model_file(path: Any) -> dict[str, Any]:
    """Load and check a model file without ever running code from it (``weights_only=True``).

    Raises:
        MolgenError: missing, unreadable, corrupt, unsafe (pickled code) or not a molgen model file.
    """
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise MolgenError(f"model file {path} does not exist; train one with `molgen train`.")
    if path.is_dir():
        raise MolgenError(f"{path} is a directory; pass the model file (e.g. {path}/model.pt).")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad/unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MolgenError(
            f"{path} is not a loadable molgen model file (corrupt, or it contains pickled code, "
            f"which molgen never runs): {first[:200]}"
        ) from None
    if not isinstance(content, dict) or content.get("format") != MODEL_FORMAT:
        raise MolgenError(f"{path} is not a molgen model file (no '{MODEL_FORMAT}' header).")
    version = content.get("format_version")
    if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
        raise MolgenError(
            f"{path} has model format version {version!r}; this molgen reads up to "
            f"{MODEL_FORMAT_VERSION}. Upgrade molgen."
        )
    missing = [k for k in ("config", "vocabulary", "tokenizer", "state_dict") if k not in content]
    if missing:
        raise MolgenError(
            f"{path} is an incomplete molgen model file (missing {', '.join(missing)})."
        )
    return content
