"""Device memory: the least a run needs, the check before any work, and running out as one line."""

import pytest
import torch

from alexnet_mnist import memory
from alexnet_mnist.device import autocast
from alexnet_mnist.errors import PipelineError
from alexnet_mnist.model import AlexNet, ModelConfig

CPU = torch.device("cpu")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_footprint_is_the_real_weights_and_first_layer_output(precision):
    config = ModelConfig(image_size=99, dropout=0.5)
    model = AlexNet(config)
    with torch.no_grad(), autocast(CPU, precision):
        first = model.features[0](torch.randn(3, 1, 99, 99))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert memory.footprint(config, 3, precision) == (weights, first.numel() * first.element_size())


@pytest.mark.parametrize(
    "batch_size, images, processes, share",
    [(64, 55_000, 1, 64), (64, 55_000, 2, 32), (64, 55_000, 3, 22), (1000, 100, 1, 100), (1000, 100, 3, 34)],
)
def test_batch_share_is_each_process_part_of_the_batch_or_of_fewer_images(batch_size, images, processes, share):
    assert memory.batch_share(batch_size, images, processes) == share


def test_sizes_that_fit_pass_the_check():
    memory.require_fits(ModelConfig(image_size=227, dropout=0.5), "train.batch_size", 64, 64, CPU, "fp32", True)
    memory.require_fits(ModelConfig(image_size=227, dropout=0.5), "evaluate.batch_size", 1000, 1000, CPU, "fp32", False)


def test_weights_too_large_for_the_device_are_rejected_naming_the_image_size():
    with pytest.raises(PipelineError) as error:
        memory.require_fits(
            ModelConfig(image_size=100_000, dropout=0.5), "train.batch_size", 64, 64, CPU, "bf16", training=True
        )
    assert str(error.value) == (
        f"model.image_size 100000 with train.batch_size 64 cannot fit on cpu, which has "
        f"{memory.size(memory.capacity(CPU))}: training needs at least 148.8 TiB there, 37.2 TiB of weights and "
        f"as much again for each of their gradients and Adam's two moments; lower model.image_size"
    )


def test_a_batch_too_large_for_the_device_is_rejected_naming_the_batch_size():
    config = ModelConfig(image_size=227, dropout=0.5)
    images = 10**8  # x 96 x 55 x 55 x 4 bytes: 105.6 TiB
    with pytest.raises(
        PipelineError,
        match=r"^model.image_size 227 with evaluate.batch_size 100000000 cannot fit on "
        r"cpu, which has .*: evaluation needs at least 105.6 TiB there, 222.4 MiB "
        r"of weights and 105.6 TiB for the first layer's output of a batch of "
        r"100000000 images; lower model.image_size or evaluate.batch_size$",
    ):
        memory.require_fits(config, "evaluate.batch_size", images, images, CPU, "fp32", training=False)


def test_a_failed_cpu_allocation_becomes_one_line_with_the_sizes_and_the_fix():
    with (
        pytest.raises(PipelineError) as error,
        memory.out_of_memory("evaluate", CPU, 227, "evaluate.batch_size", 1000),
    ):
        torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: more than any machine's address space, fails at once
    assert str(error.value) == (
        f"evaluate stage: out of memory on cpu ({memory.size(memory.capacity(CPU))}) with model.image_size 227 and "
        f"evaluate.batch_size 1000: an allocation of 1024.0 TiB failed; lower evaluate.batch_size or "
        f"model.image_size and rerun"
    )


def test_other_errors_pass_through_unchanged():
    with pytest.raises(RuntimeError, match="shape"), memory.out_of_memory("train", CPU, 227, "train.batch_size", 64):
        torch.zeros(2, 3) @ torch.zeros(2, 3)


@pytest.mark.parametrize(
    "message, asked",
    [
        (
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 40907587977216 bytes. Error code 12 (Cannot allocate memory)",
            40907587977216,
        ),
        (
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.15 GiB of which 1.2 GiB "
            "is free.",
            2 * 2**30,
        ),
        ("CUDA out of memory. Tried to allocate 20.50 MiB. GPU 0 has a total capacity of 7.8 GiB", 20.5 * 2**20),
        ("CUDA out of memory. Tried to allocate 512 bytes.", 512),
        ("std::bad_alloc", None),
    ],
)
def test_the_size_asked_for_is_read_from_the_allocators_messages(message, asked):
    assert memory.requested(message) == asked


@pytest.mark.parametrize(
    "n, text",
    [(0, "0 bytes"), (1023, "1023 bytes"), (1536, "1.5 KiB"), (25_200_000_000, "23.5 GiB"), (2**50, "1024.0 TiB")],
)
def test_sizes_read_in_binary_units(n, text):
    assert memory.size(n) == text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_running_out_becomes_one_line():
    cuda = torch.device("cuda")
    total = torch.cuda.get_device_properties(cuda).total_memory
    with pytest.raises(PipelineError) as error, memory.out_of_memory("train", cuda, 227, "train.batch_size", 64):
        torch.empty(2 * total, dtype=torch.uint8, device=cuda)  # twice the GPU: fails before using any
    assert str(error.value).startswith(
        f"train stage: out of memory on cuda ({memory.size(total)}) with "
        f"model.image_size 227 and train.batch_size 64: an allocation of "
    )
    assert str(error.value).endswith(" failed; lower train.batch_size or model.image_size and rerun")
