"""molgen.sampling's streaming loop: valid molecules by default, the raw view, filters, output."""

from __future__ import annotations

import csv
import io

import pytest
import torch

from molgen.data import canonicalize
from molgen.errors import MolgenError
from molgen.sampling import SampleRequest, SampleStats, generate_rows, summary_line, write_rows

PATTERN = [0, 0, 1, 0, 5, 0, 2, 0]  # failures before a code's string is valid (5: given up at 3)


class StubModel:
    """Code number i fails PATTERN[i % 8] times, then decodes to a molecule named by i.

    ``distinct`` molecules in all (i % distinct), written non-canonically (O first).
    """

    def __init__(self, distinct: int = 10_000) -> None:
        self.distinct = distinct
        self.next_id = 0
        self.decoded: dict[int, int] = {}
        self.decodings = 0

    def prior_z(self, n):
        ids = torch.arange(self.next_id, self.next_id + n)
        self.next_id += n
        return torch.stack([torch.tensor([PATTERN[i % 8] for i in ids.tolist()]), ids], 1)

    def decode(self, z, greedy=True, temperature=1.0):
        out = []
        for k, i in z.tolist():
            done = self.decoded.get(i, 0)
            self.decoded[i] = done + 1
            self.decodings += 1
            out.append("C1CC" if done < k else "O" + "C" * (1 + i % self.distinct))
        return out


def _run(model, **kw):
    req = SampleRequest(**{"n": 40, "batch_size": 16, **kw})
    stats = SampleStats()
    rows = list(generate_rows(model, req, stats))
    return req, stats, rows


def test_default_writes_only_valid_canonical_molecules_with_retries():
    model = StubModel()
    req, stats, rows = _run(model)
    assert len(rows) == 40 and stats.written == 40 and stats.valid == 40
    assert all(r["valid"] and canonicalize(r["smiles"], largest_fragment=False) == r["smiles"]
               for r in rows)  # fmt: skip
    assert all(not r["smiles"].startswith("O") for r in rows)  # written canonically
    d = stats.decoding
    # codes with 5 failures (one in 8) are given up after 1 + 3 decodings; the rest succeed
    assert d.given_up == sum(PATTERN[i % 8] > 3 for i in range(d.codes)) > 0
    assert 40 <= d.returned <= 42  # batches are sized to what is still missing
    assert d.decodings == model.decodings
    assert d.first_pass_valid == sum(PATTERN[i % 8] == 0 for i in range(d.codes))
    line = summary_line(req, stats)
    assert f"{d.decodings} decodings" in line and f"{d.given_up} codes given up after 3" in line
    assert f"single-pass validity {d.single_pass_validity:.3f}" in line


def test_keep_invalid_is_the_single_pass_raw_view():
    model = StubModel()
    req, stats, rows = _run(model, valid_only=False, max_retries=3)
    assert len(rows) == 40 and stats.decoding.codes == 40
    assert stats.decoding.decodings == 40 == model.decodings  # one decoding per code
    assert [r["valid"] for r in rows] == [PATTERN[i % 8] == 0 for i in range(40)]
    assert {r["smiles"] for r in rows if not r["valid"]} == {"C1CC"}
    assert stats.valid == sum(r["valid"] for r in rows)
    assert "one decoding each" in summary_line(req, stats)


def test_zero_retries_is_a_single_pass_that_skips_invalid_codes():
    model = StubModel()
    _, stats, rows = _run(model, max_retries=0)
    assert len(rows) == 40 and all(r["valid"] for r in rows)
    assert stats.decoding.decodings == stats.decoding.codes == model.decodings
    assert stats.decoding.given_up == stats.decoding.codes - 40


def test_unique_filter_and_the_cap():
    model = StubModel(distinct=7)
    req, stats, rows = _run(model, n=10, unique=True, max_attempts=200)
    assert len(rows) == 7 and len({r["smiles"] for r in rows}) == 7
    assert stats.cap_hit and stats.attempts == 200
    assert stats.filtered == stats.decoding.returned - 7
    assert "dropped by the filters" in summary_line(req, stats)


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(MolgenError, match="--beam applies to greedy"):
        list(generate_rows(StubModel(), SampleRequest(n=3, beam=3), SampleStats()))
    with pytest.raises(MolgenError, match="--max-retries"):
        list(generate_rows(StubModel(), SampleRequest(n=3, max_retries=-1), SampleStats()))
    with pytest.raises(MolgenError, match="-n"):
        list(generate_rows(StubModel(), SampleRequest(n=0), SampleStats()))


def test_write_rows_writes_the_header_without_rows_and_keeps_a_file_on_failure(tmp_path):
    out = tmp_path / "s.csv"
    write_rows(iter([]), out, columns=["smiles", "valid"])
    assert out.read_text() == "smiles,valid\n"

    def broken():
        yield {"smiles": "CCO", "valid": True}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_rows(broken(), out, columns=["smiles", "valid"])
    assert out.read_text() == "smiles,valid\n"  # the old file, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]  # no temporary file left
    first = write_rows(iter([{"smiles": "CCO", "valid": True}] * 3), out, keep_first=2)
    assert len(first) == 2
    assert (
        list(csv.DictReader(io.StringIO(out.read_text())))
        == [{"smiles": "CCO", "valid": "True"}] * 3
    )
