"""IDX parsing: real-format round trip, and each kind of bad file is an error naming it."""

import numpy as np
import pytest

from alexnet_mnist.idx import IdxError, encode_idx, read_images, read_labels


def test_round_trip(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28).astype(np.uint8)
    (tmp_path / "img").write_bytes(encode_idx(images))
    (tmp_path / "lbl").write_bytes(encode_idx(np.array([7, 0, 9], dtype=np.uint8)))
    assert np.array_equal(read_images(tmp_path / "img"), images)
    assert read_labels(tmp_path / "lbl").tolist() == [7, 0, 9]
    assert encode_idx(images)[:4] == b"\x00\x00\x08\x03"  # the magic number MNIST images carry


@pytest.mark.parametrize(
    "data, message",
    [
        (encode_idx(np.zeros((2, 28, 28)))[:-1], "truncated or corrupted"),
        (encode_idx(np.zeros((2, 28, 28))) + b"\x00", "truncated or corrupted"),
        (b"\x00\x00", "truncated header"),
        (b"\x00\x00\x08\x01" + encode_idx(np.zeros((2, 28, 28)))[4:], "wrong magic number 0x00000801"),
        (b"\x12\x34\x08\x03" + encode_idx(np.zeros((2, 28, 28)))[4:], "wrong magic number"),
        (encode_idx(np.zeros((2, 20, 20))), "images are 20x20, expected 28x28"),
    ],
)
def test_bad_image_files_name_the_file(tmp_path, data, message):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(IdxError) as error:
        read_images(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_labels_out_of_range(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(encode_idx(np.array([1, 10], dtype=np.uint8)))
    with pytest.raises(IdxError, match="label 10 is out of range"):
        read_labels(path)
