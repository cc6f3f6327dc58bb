import torch

from dsv32.model.indexer import (
    fp8_emulate,
    fp8_ue8m0_dequantize,
    fp8_ue8m0_quantize,
    hadamard_matrix,
    index_scores,
    kl_to_indexer,
    select_topk,
)


def _loop_scores(q, w, k):
    b, t, h, _ = q.shape
    out = torch.zeros(b, t, k.shape[1])
    for bi in range(b):
        for ti in range(t):
            for si in range(k.shape[1]):
                out[bi, ti, si] = sum(w[bi, ti, j] * torch.relu(q[bi, ti, j] @ k[bi, si]) for j in range(h))
    return out


def test_index_scores_match_the_formula():
    q, w, k = torch.randn(2, 5, 3, 8), torch.randn(2, 5, 3), torch.randn(2, 6, 8)
    torch.testing.assert_close(index_scores(q, w, k), _loop_scores(q, w, k), atol=1e-5, rtol=1e-5)


def test_selection_is_causal_and_dense_when_short():
    q, w, k = torch.randn(1, 20, 2, 8), torch.randn(1, 20, 2), torch.randn(1, 20, 8)
    pos = torch.arange(20)[None]
    idx, scores = select_topk(q, w, k, pos, topk=6, chunk=7, keep_scores=True)
    for t in range(20):
        chosen = set(idx[0, t][idx[0, t] >= 0].tolist())
        assert all(s <= t for s in chosen)  # never the future
        if t + 1 <= 6:
            assert chosen == set(range(t + 1))  # every earlier token when t+1 <= k
        else:
            visible = scores[0, t, : t + 1]
            assert chosen == set(visible.topk(6).indices.tolist())
    idx_one_chunk, _ = select_topk(q, w, k, pos, topk=6, chunk=1000)
    assert torch.equal(idx, idx_one_chunk)


def test_hadamard_is_orthogonal_and_preserves_scores():
    h = hadamard_matrix(16)
    torch.testing.assert_close(h @ h.T, torch.eye(16), atol=1e-6, rtol=0)
    q, w, k = torch.randn(1, 4, 2, 16), torch.randn(1, 4, 2), torch.randn(1, 9, 16)
    torch.testing.assert_close(index_scores(q @ h, w, k @ h), index_scores(q, w, k), atol=1e-5, rtol=1e-5)


def test_fp8_ue8m0_quantization_by_hand():
    x = torch.tensor([[1.0, -2.0, 100.0, 0.3]])
    codes, scales = fp8_ue8m0_quantize(x, block=4)
    # amax 100 -> 100/448 = 0.223 -> rounded up to a power of two: 0.25
    assert scales.item() == 0.25
    # e4m3 has 3 mantissa bits: 400 lies halfway between 384 and 416 and rounds to even (384); 1.2 -> 1.25.
    torch.testing.assert_close(codes.float(), torch.tensor([[4.0, -8.0, 384.0, 1.25]]))
    torch.testing.assert_close(fp8_ue8m0_dequantize(codes, scales), torch.tensor([[1.0, -2.0, 96.0, 0.3125]]))


def test_fp8_error_is_bounded_and_changes_topk_little():
    torch.manual_seed(0)
    q, w, k = torch.randn(1, 64, 4, 128), torch.rand(1, 64, 4), torch.randn(1, 512, 128)
    q8, k8 = fp8_emulate(q), fp8_emulate(k)
    # e4m3 keeps 3 mantissa bits: relative rounding error <= 2^-4 (normal range).
    big = q.abs() > 0.05
    assert ((q8 - q).abs()[big] / q.abs()[big]).max() <= 2**-4 + 1e-6
    exact, approx = index_scores(q, w, k), index_scores(q8, w, k8)
    rel = (approx - exact).abs().max() / exact.abs().max()
    assert rel < 0.05
    top_exact, top_approx = exact.topk(64, -1).indices, approx.topk(64, -1).indices
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(top_exact[0], top_approx[0])) / (
        64 * 64
    )
    assert overlap > 0.85
    # straight-through: the gradient of the emulation is the identity
    x = torch.randn(3, 128, requires_grad=True)
    fp8_emulate(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_kl_to_indexer_by_hand():
    p = torch.tensor([[[0.5, 0.5, 0.0]]])
    scores = torch.tensor([[[0.0, 1.0, 7.0]]], requires_grad=True)
    valid = torch.tensor([[[True, True, False]]])
    q = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    expected = 0.5 * torch.log(0.5 / q[0]) + 0.5 * torch.log(0.5 / q[1])
    loss = kl_to_indexer(p, scores, valid)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    torch.testing.assert_close(scores.grad[0, 0, :2], q - torch.tensor([0.5, 0.5]))  # d KL / d logits = q - p
    assert scores.grad[0, 0, 2] == 0
