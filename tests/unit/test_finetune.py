import pytest
import torch

from molgen.errors import MolgenError
from molgen.finetune import extend_state_dict, extend_vocabulary
from molgen.model import ModelConfig, MoleculeVAE
from molgen.tokenizer import Vocabulary


def _model(vocab_size: int, seed: int = 0) -> MoleculeVAE:
    torch.manual_seed(seed)
    return MoleculeVAE(
        ModelConfig(
            vocab_size=vocab_size,
            embedding_dim=8,
            encoder_hidden=8,
            decoder_hidden=16,
            latent_dim=4,
        )
    )


def test_old_tokens_keep_their_ids() -> None:
    parent = Vocabulary.build([["C", "O", "c", "1", "("]])
    child = extend_vocabulary(parent, ["[C@H]", "C", "P", "[O-]", "<pad>"])
    assert child.tokens[: len(parent)] == parent.tokens
    assert child.tokens[len(parent) :] == ["P", "[C@H]", "[O-]"]
    for token in parent.tokens:
        assert child.token_to_id(token) == parent.token_to_id(token)


@pytest.mark.parametrize("scheme", ["mean", "random"])
def test_weights_copied_exactly_and_new_rows_added(scheme: str) -> None:
    old, new = 10, 13
    parent = _model(old).state_dict()
    fresh = _model(new, seed=1).state_dict()
    child = extend_state_dict(parent, old, new, scheme, target=fresh)
    for key, value in parent.items():
        if key in ("embedding.weight", "output.weight", "output.bias"):
            assert child[key].shape[0] == new
            assert torch.equal(child[key][:old], value)
        else:
            assert torch.equal(child[key], value)
    _model(new).load_state_dict(child)  # loads into the bigger model
    if scheme == "random":
        assert torch.equal(child["output.bias"][old:], fresh["output.bias"][old:])
    else:
        real = parent["output.bias"][4:]
        assert torch.allclose(child["output.bias"][old:], real.min().expand(3))
        mean = parent["output.weight"][4:].mean(0)
        assert torch.allclose(child["output.weight"][old:], mean.expand(3, -1))
        # embeddings near the mean, but not identical to each other
        emb = child["embedding.weight"][old:]
        assert torch.allclose(emb, parent["embedding.weight"][4:].mean(0).expand(3, -1), atol=0.1)
        assert not torch.equal(emb[0], emb[1])


def test_same_size_is_a_copy_and_shrinking_is_refused() -> None:
    parent = _model(10).state_dict()
    same = extend_state_dict(parent, 10, 10)
    assert all(torch.equal(same[k], v) for k, v in parent.items())
    with pytest.raises(MolgenError):
        extend_state_dict(parent, 10, 9)
