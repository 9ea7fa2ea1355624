"""StateSpec: the stream heads read, and dropping batch rows from every batch-carrying leaf and nothing else."""
import torch

from exits.state import TENSOR_STATE, BatchLeaf, StateSpec


def test_a_bare_tensor_is_its_own_stream_and_is_indexed_on_dim_0():
    x = torch.arange(12.0).reshape(4, 3)
    rows = torch.tensor([0, 3])
    assert TENSOR_STATE.stream(x) is x
    assert torch.equal(TENSOR_STATE.select(x, rows), x[[0, 3]])
    assert TENSOR_STATE.is_tensor and TENSOR_STATE.describe() == "tensor"


def test_a_tuple_state_indexes_batch_leaves_recounts_the_batch_and_keeps_constants():
    b = 4
    stream = torch.randn(b, 5, 8)
    skip = torch.randn(2, b, 3)  # batch along dim 1
    table = torch.randn(5, 5)  # a constant (e.g. a positional table)
    folded = torch.arange(b * 3 * 2.0).reshape(b * 3, 2)  # 3 entries per sample, batch-major
    state = (stream, (skip, b * 2), table, folded, (7, 7))
    spec = StateSpec((BatchLeaf(0), BatchLeaf(1), BatchLeaf(None, 2), None, BatchLeaf(0, 3), None, None), 0)
    rows = torch.tensor([1, 3])
    out = spec.select(state, rows)
    assert torch.equal(spec.stream(out), stream[[1, 3]])
    assert torch.equal(out[1][0], skip[:, [1, 3]])
    assert out[1][1] == 4  # the carried batch count follows the rows
    assert out[2] is table and out[4] == (7, 7)
    assert torch.equal(out[3], folded.reshape(b, 3, 2)[[1, 3]].reshape(6, 2))
    assert spec.describe() == ("7 leaves: stream, batch@1, 2 x batch size, constant, batch@0x3, constant, constant")


def test_the_stream_may_be_a_later_leaf():
    pixels, tokens = torch.randn(6, 2), torch.randn(2, 4, 8)  # e.g. TNT: (folded pixels, patch tokens)
    spec = StateSpec((BatchLeaf(0, 3), BatchLeaf(0)), stream_leaf=1)
    assert spec.stream((pixels, tokens)) is tokens
    out = spec.select((pixels, tokens), torch.tensor([1]))
    assert torch.equal(out[0], pixels[3:]) and torch.equal(out[1], tokens[1:])


def test_dense_copies_a_view_into_rows_once_and_keeps_dense_tensors_and_constants():
    view = torch.randn(2, 8, 5).transpose(1, 2)            # (B, tokens, dim) laid out dim-major, as a patch embedding
    out = TENSOR_STATE.dense(view)
    assert out.is_contiguous() and torch.equal(out, view)
    assert TENSOR_STATE.dense(out) is out
    cl = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    assert TENSOR_STATE.dense(cl) is cl                      # channels-last is dense: a CNN runtime's choice, kept
    constant = torch.randn(5, 3).t()
    spec = StateSpec((BatchLeaf(0), None), 0)
    stream, kept = spec.dense((view, constant))
    assert stream.is_contiguous() and torch.equal(stream, view) and kept is constant
