"""molgen.decoding: per-code retries, the fast token loop, beam search."""

from __future__ import annotations

import math

import pytest
import torch

from molgen.decoding import (
    DecodeCounts,
    beam_search,
    beam_search_ids,
    canonical_or_none,
    decode_with_retries,
    generate_ids,
)
from molgen.errors import MolgenError
from molgen.model import ModelConfig, MoleculeVAE, model_file_dict
from molgen.sampling import load_model
from molgen.tokenizer import Vocabulary

# distinct valid molecules, written NON-canonically: the result must be canonical
VALID = ["OCC", "C(C)(C)O", "c1ccccc1C", "N(C)C", "OC(=O)C", "ClCC"]
INVALID = ["C1CC", "", "xyz"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class StubDecoder:
    """Row i of z is ``(failures_i, i)``: its first ``failures_i`` decodings are invalid strings,
    then it decodes to ``VALID[i]``. Every call's row ids are recorded."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.greedy: list[bool] = []
        self.decoded: dict[int, int] = {}

    def decode(self, z, greedy=True, temperature=1.0):
        ids = [int(i) for i in z[:, 1]]
        self.calls.append(ids)
        self.greedy.append(greedy)
        out = []
        for row, i in zip(z.tolist(), ids, strict=True):
            done = self.decoded.get(i, 0)
            self.decoded[i] = done + 1
            out.append(INVALID[done % len(INVALID)] if done < row[0] else VALID[i])
        return out


def _codes(failures: list[int]) -> torch.Tensor:
    return torch.tensor([[k, i] for i, k in enumerate(failures)], dtype=torch.float32)


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_rows_succeed_after_exactly_their_failures_or_are_given_up(max_retries):
    failures = [0, 1, 2, 3, 5, 0]
    stub = StubDecoder()
    res = decode_with_retries(stub, _codes(failures), temperature=1.0, max_retries=max_retries)
    for i, k in enumerate(failures):
        if k <= max_retries:
            assert res.smiles[i] == canonical_or_none(VALID[i]) and res.decodings[i] == k + 1
        else:
            assert res.smiles[i] is None and res.decodings[i] == max_retries + 1
        assert res.first_valid[i] == (k == 0)
        assert stub.decoded[i] == res.decodings[i]
    assert res.first == [VALID[i] if k == 0 else INVALID[0] for i, k in enumerate(failures)]
    c = res.counts
    assert c.codes == 6 and c.decodings == sum(res.decodings)
    assert c.first_pass_valid == 2
    assert c.given_up == sum(k > max_retries for k in failures)


def test_only_failed_rows_are_decoded_again_in_one_batch_per_round():
    stub = StubDecoder()
    failures = [0, 2, 1, 0, 4, 2]
    decode_with_retries(stub, _codes(failures), max_retries=3)
    assert stub.calls == [
        [0, 1, 2, 3, 4, 5],  # everything once
        [1, 2, 4, 5],  # the four failures
        [1, 4, 5],  # row 2 succeeded on its first retry
        [4],  # rows 1 and 5 succeeded on their second retry
    ]
    assert stub.greedy == [False] * 4


def test_valid_strings_come_back_canonical_and_empty_strings_are_invalid():
    assert canonical_or_none("OCC") == "CCO"
    assert canonical_or_none("") is None and canonical_or_none("C1CC") is None
    stub = StubDecoder()
    res = decode_with_retries(stub, _codes([0, 0]), max_retries=0)
    assert res.smiles == ["CCO", "CC(C)O"]


def test_greedy_decoding_is_never_retried():
    stub = StubDecoder()
    res = decode_with_retries(stub, _codes([0, 1, 2]), temperature=0.0, max_retries=5)
    assert stub.calls == [[0, 1, 2]] and stub.greedy == [True]
    assert res.smiles[1:] == [None, None] and res.decodings == [1, 1, 1]
    assert res.counts.given_up == 2 and res.counts.decodings == 3


def test_negative_retries_are_refused():
    with pytest.raises(MolgenError, match="--max-retries"):
        decode_with_retries(StubDecoder(), _codes([0]), max_retries=-1)


def test_counts_add_up_and_give_the_three_rates():
    a = DecodeCounts(codes=10, decodings=13, first_pass_valid=8, given_up=1)
    a += DecodeCounts(codes=10, decodings=11, first_pass_valid=9, given_up=0)
    assert (a.codes, a.decodings, a.first_pass_valid, a.given_up) == (20, 24, 17, 1)
    assert a.single_pass_validity == pytest.approx(0.85)
    assert a.sampler_validity == pytest.approx(19 / 20)
    assert a.decodings_per_molecule == pytest.approx(24 / 19)
    assert math.isnan(DecodeCounts().single_pass_validity)
    assert set(a.as_dict()) >= {"sampler_validity", "decodings_per_molecule", "given_up"}


# ---- with a real (small, random) network --------------------------------------------------
TOKENS = ["C", "O", "N", "c", "1", "(", ")", "=", "n"]


def _vae(layers: int = 1, seed: int = 0) -> MoleculeVAE:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=4 + len(TOKENS),
        embedding_dim=8,
        encoder_hidden=16,
        decoder_hidden=24,
        decoder_layers=layers,
        latent="spcauchy",
        latent_dim=6,
        max_length=12,
    )
    return MoleculeVAE(cfg).eval()


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    vocab = Vocabulary.build([TOKENS])
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save(model_file_dict(_vae(), vocab.to_dict(), "smiles", {}, {}), path)
    return load_model(path)


@pytest.mark.parametrize("layers", [1, 2])
def test_fast_loop_gives_the_models_own_greedy_tokens(layers):
    vae = _vae(layers)
    z = torch.nn.functional.normalize(torch.randn(40, 6), dim=-1)
    reference = vae.generate(z, greedy=True)
    assert generate_ids(vae, z, greedy=True) == reference
    # sampling at a vanishing temperature is the argmax: the sampling path feeds the same tokens
    assert generate_ids(vae, z, temperature=1e-6) == reference


def test_sampled_ids_never_hold_special_tokens_and_respect_the_length():
    vae = _vae()
    torch.manual_seed(1)
    rows = generate_ids(vae, torch.nn.functional.normalize(torch.randn(64, 6), dim=-1))
    assert len(rows) == 64 and all(len(r) <= 12 for r in rows)
    assert not {i for r in rows for i in r} & {vae.pad_id, vae.bos_id, vae.eos_id, vae.unk_id}
    with pytest.raises(MolgenError, match="temperature"):
        generate_ids(vae, torch.zeros(1, 6), temperature=0.0)


def _sequence_logprob(vae: MoleculeVAE, z: torch.Tensor, ids: list[int]) -> float:
    """Teacher-forced log-probability of ids + eos (pad, bos, unk banned as in decoding)."""
    full = torch.tensor([[vae.bos_id, *ids]])
    target = torch.tensor([*ids, vae.eos_id])
    logits = vae.decode_logits(z[None], full)[0]
    logits[:, [vae.pad_id, vae.bos_id, vae.unk_id]] = float("-inf")
    logp = torch.log_softmax(logits, -1)
    return float(logp[torch.arange(len(target)), target].sum())


def test_beam_search_ranks_by_the_models_own_sequence_probability():
    vae = _vae()
    z = torch.nn.functional.normalize(torch.randn(5, 6), dim=-1)
    with torch.no_grad():
        one = beam_search_ids(vae, z, 1)
        assert [b[0][1] for b in one] == vae.generate(z, greedy=True)
        beams = beam_search_ids(vae, z, 4)
        checked = 0
        for code, candidates in zip(z, beams, strict=True):
            scores = [s for s, _ in candidates]
            assert len(candidates) == 4 and scores == sorted(scores, reverse=True)
            assert len({tuple(ids) for _, ids in candidates}) == 4  # four different strings
            for score, ids in candidates:
                if len(ids) < 12:  # ended with eos within the length limit
                    assert score == pytest.approx(_sequence_logprob(vae, code, ids), abs=1e-4)
                    checked += 1
        assert checked >= 5
    with pytest.raises(MolgenError, match="--beam"):
        beam_search_ids(vae, z, 0)


def test_beam_search_returns_the_most_likely_valid_string(small_model, monkeypatch):
    # the most likely beam is invalid, the next ones valid: the first valid one is chosen
    monkeypatch.setattr(
        small_model, "ids_to_smiles", lambda rows: ["C1CC", "OCC", "CCN"][: len(rows)]
    )
    res = beam_search(small_model, small_model.prior_z(3), width=3)
    assert res.smiles == ["CCO"] * 3 and res.first == ["C1CC"] * 3
    assert res.first_valid == [False] * 3 and res.counts.given_up == 0
    assert res.sampler_strings() == ["CCO"] * 3
    monkeypatch.setattr(small_model, "ids_to_smiles", lambda rows: ["C1CC"] * len(rows))
    res = beam_search(small_model, small_model.prior_z(2), width=3)
    assert res.smiles == [None, None] and res.sampler_strings() == ["C1CC", "C1CC"]


def test_first_pass_does_not_depend_on_the_retry_limit(small_model):
    single = small_model.sample(50, seed=4, batch_size=16)
    for retries in (0, 2):
        res = small_model.sample_decoded(50, seed=4, batch_size=16, max_retries=retries)
        assert res.first == single
        assert res.counts.codes == 50
        assert res.counts.decodings == sum(res.decodings) >= 50
    again = small_model.sample_decoded(50, seed=4, batch_size=16, max_retries=2)
    assert again.smiles == res.smiles  # reproducible, retries included


def test_a_run_at_a_higher_retry_limit_contains_the_lower_ones(small_model):
    high = small_model.sample_decoded(60, seed=2, batch_size=16, max_retries=4)
    assert high.counts.decodings > 60  # the random network needs retries: the test means something
    for k in (0, 1, 2):
        low = small_model.sample_decoded(60, seed=2, batch_size=16, max_retries=k)
        cut = high.truncated(k)
        assert cut.smiles == low.smiles and cut.decodings == low.decodings
        assert cut.counts == low.counts
