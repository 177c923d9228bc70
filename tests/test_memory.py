import pytest
import torch

from cfviz.memory import MemoryBank


def brute_force(bank, queries):
    b = torch.nn.functional.normalize(bank, dim=1)
    q = torch.nn.functional.normalize(queries, dim=1)
    return 1 - (q @ b.T).max(dim=1).values


@pytest.mark.parametrize("qc,bc", [(1, 1), (7, 13), (4096, 16384)])
def test_chunked_search_is_exact(qc, bc):
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(300, 16, generator=g), torch.randn(50, 16, generator=g)
    got = MemoryBank(bank, query_chunk=qc, bank_chunk=bc).distance(queries)
    torch.testing.assert_close(got, brute_force(bank, queries), rtol=1e-5, atol=1e-6)


def test_a_query_in_the_bank_has_distance_zero_and_maps_keep_their_shape():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(3, 8, 5, 6, generator=g)
    bank = MemoryBank.from_maps(maps, bank_chunk=10)
    assert len(bank) == 3 * 5 * 6 and bank.dim == 8
    d = bank.distance_map(maps[1:2])
    assert d.shape == (1, 5, 6)
    assert d.abs().max() < 1e-5
    other = bank.distance_map(torch.randn(2, 8, 5, 6, generator=g))
    assert (other > 1e-3).all() and (other <= 2).all()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="non-empty"):
        MemoryBank(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="NaN"):
        MemoryBank(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match=r"queries must be \(M, 4\)"):
        MemoryBank(torch.randn(3, 4)).distance(torch.randn(2, 5))
