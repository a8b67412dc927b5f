"""Shared test helpers: run the CLI in-process like a user would, capturing its output."""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_DATA = REPO / "tests" / "data"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> CliResult:
    """Run ``molgen ARGS`` through the real entry point (``molgen.cli.main``) in this process."""
    from molgen.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_argv = sys.argv
    sys.argv = ["molgen", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old_argv
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_cli


MOSES_LIKE_TOKENS = ("#", "(", ")", "1", "2", "3", "=", "Br", "C", "Cl", "F", "N", "O", "S")
MOSES_LIKE_TOKENS += ("[nH]", "c", "n", "o", "s")


def random_model_file(
    path: Path,
    tokens=MOSES_LIKE_TOKENS,
    stereo: bool = True,
    latent: str = "spcauchy",
    max_length: int = 60,
    seed: int = 0,
) -> Path:
    """Write a small untrained model file (random weights) with the given vocabulary."""
    import torch

    from molgen.model import ModelConfig, MoleculeVAE, model_file_dict
    from molgen.tokenizer import SPECIAL_TOKENS, Vocabulary

    vocab = Vocabulary([*SPECIAL_TOKENS, *sorted(tokens)])
    config = ModelConfig(
        vocab_size=len(vocab), embedding_dim=8, encoder_hidden=16, decoder_hidden=16,
        latent=latent, latent_dim=6, max_length=max_length,
    )  # fmt: skip
    torch.manual_seed(seed)
    vae = MoleculeVAE(config)
    content = model_file_dict(vae, vocab.to_dict(), "smiles", {"stereo": stereo}, {})
    torch.save(content, path)
    return path
