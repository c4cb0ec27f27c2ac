import torch

from raycl.data.tokens import batch_at, pack_blocks, pad_batch


def test_pack_blocks_concatenates_and_drops_the_remainder() -> None:
    blocks = pack_blocks([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_size=4)
    assert blocks.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_batch_at_is_a_pure_function_of_the_step() -> None:
    blocks = torch.arange(10).view(10, 1)
    assert torch.equal(batch_at(blocks, 4, step=3, seed=7), batch_at(blocks, 4, step=3, seed=7))
    assert not torch.equal(batch_at(blocks, 4, step=0, seed=7), batch_at(blocks, 4, step=0, seed=8))


def test_batch_at_visits_every_block_once_per_epoch() -> None:
    blocks = torch.arange(12).view(12, 1)
    first_epoch = torch.cat([batch_at(blocks, 4, step, seed=0) for step in range(3)]).flatten().tolist()
    assert sorted(first_epoch) == list(range(12))
    # A batch that straddles two epochs still has the right size.
    assert batch_at(torch.arange(10).view(10, 1), 4, step=2, seed=0).shape == (4, 1)


def test_pad_batch_right_pads_with_a_mask() -> None:
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
