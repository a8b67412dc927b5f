import pickle

import pytest
import torch

from molgen.errors import MolgenError
from molgen.model import (
    MODEL_FORMAT_VERSION,
    ModelConfig,
    MoleculeVAE,
    model_file_dict,
    read_model_file,
)
from molgen.train_config import TrainConfig, parse_max_time, resolve_configs


def _batch(vocab_size=12, batch=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 9, (batch,), generator=g)
    width = int(lengths.max())
    ids = torch.zeros(batch, width, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        ids[i, 0] = 1
        ids[i, 1 : n - 1] = torch.randint(4, vocab_size, (n - 2,), generator=g)
        ids[i, n - 1] = 2
    return ids, lengths


@pytest.mark.parametrize("latent", ["spcauchy", "vmf", "power", "gaussian"])
def test_forward_losses_are_finite_and_backprop(latent):
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=12,
        embedding_dim=8,
        encoder_hidden=16,
        decoder_hidden=16,
        latent=latent,
        latent_dim=6,
        max_length=10,
    )
    vae = MoleculeVAE(cfg)
    ids, lengths = _batch()
    out = vae(ids, lengths, beta=0.5, word_dropout=0.2)
    for key in ("loss", "reconstruction", "kl", "concentration", "token_accuracy"):
        assert torch.isfinite(out[key]), key
    assert out["kl"] >= 0
    out["loss"].backward()
    grads = [p.grad for p in vae.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_padding_does_not_change_the_loss():
    torch.manual_seed(0)
    vae = MoleculeVAE(
        ModelConfig(
            vocab_size=12,
            embedding_dim=8,
            encoder_hidden=16,
            decoder_hidden=16,
            latent="gaussian",
            latent_dim=4,
        )
    ).eval()
    ids, lengths = _batch(batch=3)
    padded = torch.cat([ids, torch.zeros(3, 4, dtype=torch.long)], dim=1)
    post_a, _ = vae.encode(ids, lengths)
    post_b, _ = vae.encode(padded, lengths)
    assert torch.allclose(vae.latent.mode(post_a), vae.latent.mode(post_b), atol=1e-6)


def test_generate_stops_and_never_emits_special_ids():
    torch.manual_seed(0)
    vae = MoleculeVAE(
        ModelConfig(
            vocab_size=12,
            embedding_dim=8,
            encoder_hidden=16,
            decoder_hidden=16,
            latent_dim=6,
            max_length=7,
        )
    ).eval()
    z = vae.latent.prior().sample((20,))
    for greedy in (True, False):
        seqs = vae.generate(z, greedy=greedy)
        assert len(seqs) == 20
        assert all(len(s) <= 7 for s in seqs)
        assert all(i >= 4 for s in seqs for i in s)
    with pytest.raises(MolgenError):
        vae.generate(z, temperature=0.0)


def test_beta_schedule_in_steps():
    cfg = TrainConfig(beta_max=0.4, beta_warmup_steps=10, beta_ramp_steps=20)
    assert cfg.beta(0) == 0.0 and cfg.beta(9) == 0.0
    assert cfg.beta(20) == pytest.approx(0.2)
    assert cfg.beta(30) == pytest.approx(0.4) and cfg.beta(10_000) == pytest.approx(0.4)


def test_parse_max_time_and_presets():
    assert parse_max_time("90s").total_seconds() == 90
    assert parse_max_time("1.5h").total_seconds() == 5400
    assert parse_max_time("00:01:00:00").total_seconds() == 3600
    assert parse_max_time(None) is None
    with pytest.raises(MolgenError):
        parse_max_time("soon")
    model, train = resolve_configs("tiny", {"latent_dim": 5, "latent": None}, {"lr": 0.5})
    assert model["latent_dim"] == 5 and train.lr == 0.5 and train.epochs == 2
    with pytest.raises(MolgenError, match="preset"):
        resolve_configs("huge", {}, {})


def _model_file(tmp_path):
    vae = MoleculeVAE(
        ModelConfig(
            vocab_size=12, embedding_dim=8, encoder_hidden=16, decoder_hidden=16, latent_dim=6
        )
    )
    content = model_file_dict(
        vae,
        {"tokens": ["a"]},
        "smiles",
        {"stereo": True},
        {"data_fingerprint": "abc", "final_metrics": {"val_loss": 1.0}},
    )
    path = tmp_path / "model.pt"
    torch.save(content, path)
    return vae, path


def test_model_file_round_trip_is_plain_and_weights_only(tmp_path):
    vae, path = _model_file(tmp_path)
    content = read_model_file(path)
    assert content["format_version"] == MODEL_FORMAT_VERSION
    assert content["config"]["latent_dim"] == 6 and content["tokenizer"] == "smiles"
    # weights_only loading succeeds on the raw file: only plain types and tensors inside
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {"format", "config", "vocabulary", "state_dict", "training"}
    again = MoleculeVAE(ModelConfig.from_dict(content["config"]))
    again.load_state_dict(content["state_dict"])
    for (k, a), b in zip(vae.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/molgen_pwned_by_model_file",))


def test_malicious_pickle_is_rejected_without_running(tmp_path):
    import os

    marker = "/tmp/molgen_pwned_by_model_file"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"format": "molgen-model", "payload": _Evil()}, path)
    with pytest.raises(MolgenError, match="pickled code"):
        read_model_file(path)
    assert not os.path.exists(marker)


@pytest.mark.parametrize(
    "payload",
    [b"", b"not a zip file at all", pickle.dumps({"format": "something-else"})],
)
def test_corrupt_or_foreign_files_are_clear_errors(tmp_path, payload):
    path = tmp_path / "bad.pt"
    path.write_bytes(payload)
    with pytest.raises(MolgenError):
        read_model_file(path)


def test_foreign_dict_and_missing_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(MolgenError, match="not a molgen model file"):
        read_model_file(path)
    with pytest.raises(MolgenError, match="does not exist"):
        read_model_file(tmp_path / "nope.pt")
    with pytest.raises(MolgenError, match="directory"):
        read_model_file(tmp_path)


@pytest.mark.parametrize("layers", [1, 2])
def test_bigru_encoder_equals_packed_bidirectional_gru(layers):
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence

    from molgen.model import BiGRUEncoder

    torch.manual_seed(0)
    enc = BiGRUEncoder(8, 16, layers)
    ref = nn.GRU(8, 16, num_layers=layers, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for i in range(layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{i}").copy_(getattr(enc.forward_layers[i], f"{name}_l0"))
                getattr(ref, f"{name}_l{i}_reverse").copy_(
                    getattr(enc.backward_layers[i], f"{name}_l0")
                )
    x = torch.randn(5, 9, 8)
    lengths = torch.tensor([9, 3, 1, 6, 7])
    _, h = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    assert torch.allclose(enc(x, lengths), torch.cat([h[-2], h[-1]], -1), atol=1e-6)
