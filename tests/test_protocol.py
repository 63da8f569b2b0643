"""DataProto operations on concrete values, including per-sample Python objects in object arrays."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from verl.protocol import DataProto, DataProtoItem, pad_dataproto_to_divisor, unpad_dataproto

PROMPTS = ["1+1?", "2+2?", "3+3?", "4+4?", "5+5?"]
EXTRAS = [{"id": 0}, {"id": 1, "tags": ["a"]}, {"id": 2}, {"id": 3}, {"id": 4, "x": None}]
# Equal-length inner lists: the object array must stay 1-D, one list per sample.
ANSWERS = [["2", "two"], ["4", "four"], ["6", "six"], ["8", "eight"], ["10", "ten"]]


def make(n: int = 5) -> DataProto:
    """Rows are identifiable: row i has ids [10i, 10i+5], score i and prompt PROMPTS[i]."""
    ids = torch.arange(2 * n).reshape(n, 2) * 5  # row i = [10i, 10i+5]
    return DataProto.from_dict(
        tensors={"input_ids": ids, "score": torch.arange(n, dtype=torch.float32)},
        non_tensors={"prompt": PROMPTS[:n], "extra": EXTRAS[:n], "answers": ANSWERS[:n]},
        meta_info={"temperature": 1.0},
    )


def rows_of(data: DataProto) -> list[int]:
    """Which original rows a DataProto made by make() holds, read from every part independently."""
    from_tensor = [int(v) for v in data.batch["score"]]
    from_ids = [int(r[0]) // 10 for r in data.batch["input_ids"]]
    from_prompt = [PROMPTS.index(p) for p in data.non_tensor_batch["prompt"]]
    from_extra = [e["id"] for e in data.non_tensor_batch["extra"]]
    from_answers = [ANSWERS.index(a) for a in data.non_tensor_batch["answers"]]
    assert from_tensor == from_ids == from_prompt == from_extra == from_answers
    return from_tensor


def assert_same(a: DataProto, b: DataProto) -> None:
    assert a.batch.keys() == b.batch.keys()
    for k in a.batch:
        assert a.batch[k].dtype == b.batch[k].dtype
        assert torch.equal(a.batch[k], b.batch[k]), k
    assert a.non_tensor_batch.keys() == b.non_tensor_batch.keys()
    for k in a.non_tensor_batch:
        assert a.non_tensor_batch[k].shape == b.non_tensor_batch[k].shape
        assert a.non_tensor_batch[k].tolist() == b.non_tensor_batch[k].tolist(), k
    assert a.meta_info == b.meta_info


# ---------------------------------------------------------------- construction and consistency
def test_lists_become_1d_object_arrays() -> None:
    data = make()
    assert len(data) == 5
    for key in ("prompt", "extra", "answers"):
        arr = data.non_tensor_batch[key]
        assert isinstance(arr, np.ndarray) and arr.dtype == object and arr.shape == (5,)
    assert data.non_tensor_batch["answers"][1] == ["4", "four"]
    assert data.non_tensor_batch["extra"][1] == {"id": 1, "tags": ["a"]}


def test_inconsistent_lengths_name_the_key_and_sizes() -> None:
    with pytest.raises(ValueError, match=r"non_tensor_batch\['prompt'\] has 2 rows.*has 3"):
        DataProto.from_dict({"x": torch.zeros(3, 4)}, {"prompt": ["a", "b"]})
    with pytest.raises(ValueError, match=r"batch\['y'\] has 4 rows"):
        DataProto(batch={"x": torch.zeros(3), "y": torch.zeros(4)})
    with pytest.raises(ValueError, match="0-d"):
        DataProto(batch={"x": torch.tensor(1.0)})
    with pytest.raises(TypeError, match="'x'"):
        DataProto(non_tensor_batch={"x": 3})  # type: ignore[dict-item]


def test_from_single_dict_splits_by_type() -> None:
    data = DataProto.from_single_dict(
        {"ids": torch.ones(2, 3), "uid": np.array(["u0", "u1"], dtype=object), "text": ["a", "b"]},
        meta_info={"step": 7},
    )
    assert list(data.batch) == ["ids"]
    assert sorted(data.non_tensor_batch) == ["text", "uid"]
    assert data.non_tensor_batch["text"].tolist() == ["a", "b"]
    assert data.meta_info == {"step": 7}
    with pytest.raises(TypeError, match="'bad'"):
        DataProto.from_single_dict({"bad": 1.5})


def test_empty_dataproto() -> None:
    data = DataProto()
    assert len(data) == 0 and data.batch == {} and data.non_tensor_batch == {} and data.meta_info == {}


# ---------------------------------------------------------------- indexing
def test_getitem_int_returns_item_with_row_values() -> None:
    item = make()[2]
    assert isinstance(item, DataProtoItem)
    assert item.batch["input_ids"].tolist() == [20, 25]
    assert item.non_tensor_batch["prompt"] == "3+3?"
    assert item.non_tensor_batch["extra"] == {"id": 2}
    assert item.non_tensor_batch["answers"] == ["6", "six"]
    assert item.meta_info == {"temperature": 1.0}
    assert make()[-1].non_tensor_batch["prompt"] == "5+5?"
    with pytest.raises(IndexError):
        make()[5]


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (slice(1, 4), [1, 2, 3]),
        (slice(None, None, 2), [0, 2, 4]),
        ([4, 0, 0], [4, 0, 0]),
        (np.array([3, 1]), [3, 1]),
        (torch.tensor([2, 4]), [2, 4]),
        ([True, False, False, True, True], [0, 3, 4]),
        (torch.tensor([False, True, False, False, True]), [1, 4]),
        ([], []),
    ],
)
def test_getitem_selects_rows_in_every_part(index: object, expected: list[int]) -> None:
    out = make()[index]  # type: ignore[index]
    assert isinstance(out, DataProto)
    assert rows_of(out) == expected
    assert out.meta_info == {"temperature": 1.0}


def test_bad_indices_raise() -> None:
    with pytest.raises(ValueError, match="bool mask has length 2"):
        make()[[True, False]]
    with pytest.raises(IndexError):
        make()[[0, 5]]


def test_index_select_and_reorder() -> None:
    data = make()
    picked = data.index_select([4, 2])
    assert rows_of(picked) == [4, 2]
    assert rows_of(data) == [0, 1, 2, 3, 4]  # the original is untouched
    assert data.reorder(torch.tensor([4, 3, 2, 1, 0])) is None
    assert rows_of(data) == [4, 3, 2, 1, 0]


def test_shuffle_is_a_seeded_permutation() -> None:
    a, b = make().shuffle(seed=3), make().shuffle(seed=3)
    assert rows_of(a) == rows_of(b)
    assert sorted(rows_of(a)) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- keys
def test_select_shares_or_copies() -> None:
    data = make()
    sel = data.select(batch_keys=["score"], non_tensor_batch_keys=["prompt"], meta_info_keys=[])
    assert list(sel.batch) == ["score"] and list(sel.non_tensor_batch) == ["prompt"] and sel.meta_info == {}
    sel.batch["score"][0] = 100.0  # shared storage without deepcopy
    assert data.batch["score"][0] == 100.0
    deep = data.select(deepcopy=True)
    deep.batch["score"][1] = -1.0
    deep.non_tensor_batch["extra"][1]["id"] = 99
    assert data.batch["score"][1] == 1.0 and data.non_tensor_batch["extra"][1]["id"] == 1
    assert sorted(deep.batch) == ["input_ids", "score"]
    with pytest.raises(KeyError, match="missing"):
        data.select(batch_keys=["missing"])


def test_pop_removes_and_returns() -> None:
    data = make()
    popped = data.pop(batch_keys=["score"], non_tensor_batch_keys=["extra"], meta_info_keys=["temperature"])
    assert popped.batch["score"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert popped.non_tensor_batch["extra"][4] == {"id": 4, "x": None}
    assert popped.meta_info == {"temperature": 1.0}
    assert list(data.batch) == ["input_ids"]
    assert sorted(data.non_tensor_batch) == ["answers", "prompt"]
    assert data.meta_info == {}
    with pytest.raises(KeyError):
        data.pop(batch_keys=["score"])


def test_union_merges_in_place_and_accepts_equal_shared_keys() -> None:
    data = make()
    other = DataProto.from_dict(
        {"score": torch.arange(5, dtype=torch.float32), "reward": torch.ones(5)},
        {"extra": list(EXTRAS), "label": ["x"] * 5},
        {"temperature": 1.0, "step": 3},
    )
    assert data.union(other) is data
    assert sorted(data.batch) == ["input_ids", "reward", "score"]
    assert data.non_tensor_batch["label"].tolist() == ["x"] * 5
    assert data.meta_info == {"temperature": 1.0, "step": 3}


@pytest.mark.parametrize(
    ("other", "key"),
    [
        (DataProto(batch={"score": torch.zeros(5)}), "batch['score']"),
        (DataProto(batch={"score": torch.arange(5)}), "batch['score']"),  # same values, other dtype
        (DataProto(non_tensor_batch={"prompt": ["?"] * 5}), "non_tensor_batch['prompt']"),
        (DataProto(meta_info={"temperature": 0.5}), "meta_info['temperature']"),
    ],
)
def test_union_refuses_conflicting_keys(other: DataProto, key: str) -> None:
    data = make()
    with pytest.raises(ValueError, match="conflicting.*" + key.replace("[", r"\[").replace("]", r"\]")):
        data.union(other)
    assert rows_of(data) == [0, 1, 2, 3, 4] and data.meta_info == {"temperature": 1.0}


def test_union_with_meta_only_and_object_arrays_of_arrays() -> None:
    data = make().union(DataProto(meta_info={"step": 1}))
    assert len(data) == 5 and data.meta_info == {"temperature": 1.0, "step": 1}
    images = [np.zeros((2, 2)), np.ones((3,))]
    a = DataProto(non_tensor_batch={"img": list(images)})
    a.union(DataProto(non_tensor_batch={"img": [x.copy() for x in images]}))  # equal: accepted
    with pytest.raises(ValueError, match="img"):
        a.union(DataProto(non_tensor_batch={"img": [np.zeros((2, 2)), np.zeros((3,))]}))


def test_union_refuses_other_length() -> None:
    with pytest.raises(ValueError, match="5 vs 3"):
        make().union(DataProto(batch={"reward": torch.zeros(3)}))


# ---------------------------------------------------------------- splitting and joining
def test_chunk_equal_parts_and_error() -> None:
    parts = make(4).chunk(2)
    assert [rows_of(p) for p in parts] == [[0, 1], [2, 3]]
    assert all(p.meta_info == {"temperature": 1.0} for p in parts)
    with pytest.raises(ValueError, match="5 rows into 2"):
        make().chunk(2)


def test_split_last_part_smaller() -> None:
    assert [rows_of(p) for p in make().split(2)] == [[0, 1], [2, 3], [4]]


def test_concat_of_splits_equals_original() -> None:
    data = make()
    assert_same(DataProto.concat(data.split(2)), data)
    assert_same(DataProto.concat(data.chunk(5)), data)


def test_concat_keeps_first_meta_and_refuses_key_mismatch() -> None:
    a, b = make()[:2], make()[2:]
    b.meta_info["temperature"] = 0.1
    assert DataProto.concat([a, b]).meta_info == {"temperature": 1.0}
    b.pop(non_tensor_batch_keys=["extra"])
    with pytest.raises(ValueError, match="part 1"):
        DataProto.concat([a, b])
    with pytest.raises(ValueError, match="empty"):
        DataProto.concat([])


def test_repeat_interleaved_and_tiled() -> None:
    data = DataProto.from_dict({"x": torch.tensor([[1], [2]])}, {"p": ["a", {"k": 1}]})
    inter = data.repeat(2)
    assert inter.batch["x"].tolist() == [[1], [1], [2], [2]]
    assert inter.non_tensor_batch["p"].tolist() == ["a", "a", {"k": 1}, {"k": 1}]
    tiled = data.repeat(2, interleave=False)
    assert tiled.batch["x"].tolist() == [[1], [2], [1], [2]]
    assert tiled.non_tensor_batch["p"].tolist() == ["a", {"k": 1}, "a", {"k": 1}]
    assert rows_of(make(3).repeat(3)) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert rows_of(make(3).repeat(2, interleave=False)) == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize(
    ("n", "divisor", "pad", "rows"),
    [
        (5, 4, 3, [0, 1, 2, 3, 4, 0, 1, 2]),
        (4, 4, 0, [0, 1, 2, 3]),
        (2, 5, 3, [0, 1, 0, 1, 0]),  # divisor larger than the batch: cycle through the rows
        (1, 3, 2, [0, 0, 0]),
    ],
)
def test_pad_unpad_round_trip(n: int, divisor: int, pad: int, rows: list[int]) -> None:
    data = make(n)
    padded, pad_size = pad_dataproto_to_divisor(data, divisor)
    assert pad_size == pad and len(padded) % divisor == 0
    assert rows_of(padded) == rows
    assert_same(unpad_dataproto(padded, pad_size), data)
    assert_same(padded.unpad(pad_size), data)


def test_pad_errors() -> None:
    with pytest.raises(ValueError, match="divisor"):
        make().pad_to_divisor(0)
    with pytest.raises(ValueError, match="pad_size"):
        make().unpad(6)


# ---------------------------------------------------------------- devices and storage
def test_to_and_cpu_move_tensors() -> None:
    data = make()
    assert data.to("cpu") is data and data.cpu() is data
    assert data.to(torch.device("meta")).batch["score"].device.type == "meta"
    assert data.non_tensor_batch["prompt"].tolist() == PROMPTS  # objects stay as they are


def test_pickle_round_trip() -> None:
    data = make()
    restored = pickle.loads(pickle.dumps(data))
    assert_same(restored, data)
    assert_same(restored.repeat(2)[3:7], data.repeat(2)[3:7])


def test_objects_survive_a_chain_of_operations() -> None:
    data = make()
    out = data.repeat(2, interleave=True)  # 10 rows
    out, pad = out.pad_to_divisor(4)  # 12 rows
    out = DataProto.concat(out.chunk(3)).unpad(pad)
    out = out.index_select(np.arange(len(out))[::-1].copy())
    out = pickle.loads(pickle.dumps(out))
    assert rows_of(out) == [4, 4, 3, 3, 2, 2, 1, 1, 0, 0]
    assert out.non_tensor_batch["answers"][0] == ["10", "ten"]
    assert out.non_tensor_batch["extra"][2] == {"id": 3}


def test_repr_is_short() -> None:
    text = repr(make())
    assert text.startswith("DataProto(len=5") and "input_ids" in text and "(5, 2)" in text
