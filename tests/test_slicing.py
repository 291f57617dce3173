"""Structured slicing: smaller tensors, and exact agreement where the removed parts were inert."""

from __future__ import annotations

import torch

from canao.compress import choose, slice_encoder, train
from canao.models import Encoder, EncoderConfig
from canao.space import ArchConfig
from canao.tasks import Split

TINY = EncoderConfig(num_classes=10, hidden=32, heads=(4, 4, 4), ffn=(64, 64, 64), head_dim=8)


def _model(seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    m = Encoder(TINY)
    m.eval()
    return m


def test_encoder_shapes_follow_the_config() -> None:
    c = EncoderConfig(num_classes=3, hidden=24, heads=(3, 1), ffn=(40, 8), head_dim=8)
    m = Encoder(c)
    x = torch.randn(5, 1, 8, 8)
    assert m(x).shape == (5, 3)
    assert m.blocks[0].attn.q.weight.shape == (24, 24)  # 3 heads x 8
    assert m.blocks[1].attn.q.weight.shape == (8, 24)  # 1 head x 8
    assert m.blocks[1].attn.o.weight.shape == (24, 8)
    assert m.blocks[1].fc1.weight.shape == (8, 24) and m.blocks[1].fc2.weight.shape == (24, 8)
    assert c.seq_len == 17 and m.pos.shape == (1, 17, 24)


def test_token_frontend() -> None:
    c = EncoderConfig(num_classes=2, hidden=16, heads=(2,), ffn=(32,), head_dim=8,
                      frontend="token", vocab_size=50, max_len=12)
    m = Encoder(c)
    assert m(torch.randint(0, 50, (3, 12))).shape == (3, 2)


def test_bert_style_slices_and_masks_padding() -> None:
    """Post-norm blocks, embedding norm and pooler slice like the rest; padding is inert."""
    torch.manual_seed(0)
    c = EncoderConfig(num_classes=2, hidden=16, heads=(2, 2), ffn=(32, 32), head_dim=8,
                      frontend="token", vocab_size=50, max_len=12, style="bert", pad_id=0)
    m = Encoder(c).eval()
    ids = torch.randint(1, 50, (3, 12))
    ids[:, 8:] = 0  # padding
    before = m(ids)
    with torch.no_grad():
        m.embed.weight[0] += 5.0  # what the padding holds never reaches [CLS]
    torch.testing.assert_close(m(ids), before)
    same, _ = slice_encoder(m, ArchConfig(hidden=16, heads=(2, 2), ffn=(32, 32)))
    torch.testing.assert_close(same(ids), m(ids), rtol=0, atol=0)
    small, kept = slice_encoder(m, ArchConfig(hidden=8, heads=(1,), ffn=(8,)))
    assert small.embed.weight.shape == (50, 8) and small.pooler.weight.shape == (8, 8)
    assert small.emb_norm.weight.shape == (8,) and small(ids).shape == (3, 2)
    d = torch.tensor(kept.hidden)
    torch.testing.assert_close(small.embed.weight, m.embed.weight[:, d])


def test_identity_slice_is_the_same_model() -> None:
    m = _model()
    same, kept = slice_encoder(m, ArchConfig(hidden=32, heads=(4, 4, 4), ffn=(64, 64, 64)))
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(same(x), m(x), rtol=0, atol=0)
    assert kept.layers == [0, 1, 2] and kept.hidden == list(range(32))


def test_slices_are_physically_smaller() -> None:
    m = _model()
    arch = ArchConfig(hidden=16, heads=(1, 3), ffn=(8, 40))
    small, kept = slice_encoder(m, arch)
    assert len(small.blocks) == 2 and len(kept.layers) == 2
    assert small.blocks[0].attn.q.weight.shape == (8, 16)
    assert small.blocks[1].attn.o.weight.shape == (16, 24)
    assert small.blocks[1].fc1.weight.shape == (40, 16)
    assert small.embed.weight.shape[0] == 16 and small.head.weight.shape == (10, 16)
    assert small.num_parameters() < m.num_parameters() / 3
    # The sliced tensors are the base's own values at the kept indices.
    b = kept.layers[1]
    d = torch.tensor(kept.hidden)
    f = torch.tensor(kept.ffn[1])
    torch.testing.assert_close(small.blocks[1].fc1.weight, m.blocks[b].fc1.weight[f][:, d])


def test_removing_inert_heads_neurons_and_layers_changes_nothing() -> None:
    """Zeroed (inert) units rank lowest by magnitude; slicing them away is exact."""
    m = _model(1)
    with torch.no_grad():
        dead_layer = m.blocks[1]
        for lin in (dead_layer.attn.o, dead_layer.fc2):  # the block writes nothing
            lin.weight.zero_()
            lin.bias.zero_()
        for b in (m.blocks[0], m.blocks[2]):
            hd = TINY.head_dim
            for h in (1, 3):  # two inert heads per surviving layer
                rows = slice(h * hd, (h + 1) * hd)
                for lin in (b.attn.q, b.attn.k, b.attn.v):
                    lin.weight[rows] = 0
                    lin.bias[rows] = 0
                b.attn.o.weight[:, rows] = 0
            for j in range(0, 64, 2):  # half the FFN neurons inert
                b.fc1.weight[j] = 0
                b.fc1.bias[j] = 0
                b.fc2.weight[:, j] = 0
    arch = ArchConfig(hidden=32, heads=(2, 2), ffn=(32, 32))
    small, kept = slice_encoder(m, arch)
    assert kept.layers == [0, 2]
    assert kept.heads == [[0, 2], [0, 2]]
    assert kept.ffn[0] == list(range(1, 64, 2))
    x = torch.randn(6, 1, 8, 8)
    torch.testing.assert_close(small(x), m(x), rtol=1e-5, atol=1e-5)


def test_choice_is_deterministic_and_refuses_growth() -> None:
    m = _model(2)
    arch = ArchConfig(hidden=24, heads=(2,), ffn=(16,))
    assert choose(m, arch) == choose(m, arch)
    import pytest

    with pytest.raises(ValueError, match="larger than the base"):
        choose(m, ArchConfig(hidden=64, heads=(2,), ffn=(16,)))


def test_distillation_recovery_pulls_student_toward_teacher() -> None:
    teacher = _model(3)
    x = torch.randn(256, 1, 8, 8)
    with torch.no_grad():
        y = teacher(x).argmax(1)
    student, _ = slice_encoder(teacher, ArchConfig(hidden=16, heads=(1,), ffn=(16,)))
    data = Split(x.numpy(), y.numpy())

    def agreement() -> float:
        with torch.no_grad():
            return float((student(x).argmax(1) == y).float().mean())

    before = agreement()
    losses = train(student, data, steps=60, batch_size=64, lr=3e-3, teacher=teacher,
                   alpha=0.0, temperature=2.0)
    assert len(losses) == 60 and sum(losses[-10:]) < sum(losses[:10])
    assert agreement() > before
