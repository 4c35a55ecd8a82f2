"""The seed questions, end to end (the detailed suites live beside this file)."""

import torch

import convnd


def test_conv1d_with_2d_kernel_is_a_2d_convolution():
    x = torch.rand(2, 4, 5, 6)
    m = convnd.Conv1d(4, 4, kernel_size=(1, 1))
    ref = torch.nn.Conv2d(4, 4, kernel_size=1)
    ref.load_state_dict(m.state_dict())
    assert torch.equal(m(x), ref(x))


def test_seed_answer_examples_work():
    for make in [
        lambda k, **kw: convnd.Conv1d(1, 1, k, **kw),
        lambda k, **kw: convnd.Conv2d(1, 1, k, **kw),
        lambda k, **kw: convnd.Conv3d(1, 1, k, **kw),
    ]:
        for kernel, size in [((3,), (1, 1, 100)), ((3, 3), (1, 1, 30, 30)), ((3, 3, 3), (1, 1, 12, 12, 12))]:
            m = make(kernel, stride=(1,) * len(kernel), dilation=(1,) * len(kernel), padding="same", bias=False)
            m.weight.data.fill_(1)
            x = torch.rand(size)
            ref = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[len(kernel)](
                1, 1, 3, padding="same", bias=False
            )
            ref.weight.data.fill_(1)
            assert torch.equal(m(x), ref(x))
