"""The tensors-only unpickler on its own: what it resolves, what it neutralises and what it keeps of the rest.

tests/test_aligner_files.py checks it through the converter with the original checkpoints and code-running gadgets;
these tests call :func:`load_tensors_only` and :func:`checkpoint_format` directly on files made for each rule.
"""

import argparse
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from tests.support.torch_files import Gadget, mapped_files, save_as_on_first_gpu
from thinkdiff.errors import ThinkDiffError
from thinkdiff.safe_pickle import Opaque, checkpoint_format, load_tensors_only


def save(obj, path: Path, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def test_formats_are_named(tmp_path):
    assert checkpoint_format(save({"a": torch.ones(2)}, tmp_path / "new.pth")) == "zip"
    assert checkpoint_format(save({"a": torch.ones(2)}, tmp_path / "old.pth", legacy=True)) == "legacy"


def test_other_files_are_refused_with_the_reason(tmp_path):
    (tmp_path / "page.pth").write_text("<html>Not Found</html>")
    with pytest.raises(ThinkDiffError) as e:
        checkpoint_format(tmp_path / "page.pth")
    assert str(e.value) == ("page.pth is not a PyTorch checkpoint (neither torch.save format): the download is damaged or "
                            "it is another kind of file; download it again.")


def test_a_damaged_zip_checkpoint_names_the_file(tmp_path):
    with zipfile.ZipFile(tmp_path / "cut.pth", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00")  # a zip, but the pickle stops short
    with pytest.raises(ThinkDiffError, match=r"^cut\.pth is not a readable PyTorch checkpoint \(.+\); download it again\.$"):
        load_tensors_only(tmp_path / "cut.pth")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy_format"])
def test_tensors_dtypes_and_containers_come_back(tmp_path, legacy):
    weight = torch.randn(3, 4).to(torch.bfloat16)
    checkpoint = {"model": {"w": weight, "p": torch.nn.Parameter(torch.arange(3.0))}, "dtype": torch.bfloat16,
                  "shape": torch.Size([3, 4]), "epoch": 4}
    loaded = load_tensors_only(save(checkpoint, tmp_path / "c.pth", legacy))
    assert loaded["dtype"] is torch.bfloat16 and loaded["shape"] == torch.Size([3, 4]) and loaded["epoch"] == 4
    torch.testing.assert_close(loaded["model"]["w"], weight)
    assert isinstance(loaded["model"]["p"], torch.nn.Parameter)
    torch.testing.assert_close(loaded["model"]["p"].data, torch.arange(3.0))


def test_objects_become_opaque_records_of_their_arguments_and_state(tmp_path):
    """A pickled config object keeps its fields for inspection; a call (here ``Path.touch`` as a bound method,
    ``getattr`` then a call) is recorded, not made."""
    marker = tmp_path / "code-ran"
    checkpoint = {"args": argparse.Namespace(lr=1e-4, epochs=4), "call": Gadget(Path.touch, str(marker))}
    torch.save(checkpoint, tmp_path / "c.pth", pickle_protocol=2)
    loaded = load_tensors_only(tmp_path / "c.pth")
    assert isinstance(loaded["args"], Opaque) and loaded["args"].state == {"lr": 1e-4, "epochs": 4}
    assert isinstance(loaded["call"], Opaque) and loaded["call"].args == (str(marker),)
    assert not marker.exists()


def test_an_opaque_call_records_keyword_arguments_too():
    made = Opaque()(1, size=2)
    assert isinstance(made, Opaque) and (made.args, made.kwargs) == ((1,), {"size": 2})


def test_torch_functions_other_than_dtypes_are_not_resolved(tmp_path):
    """``torch.set_default_dtype`` is a global of module ``torch`` (like the dtypes, which are resolved): loading it
    unrestricted would change every later tensor's dtype."""
    torch.save({"call": Gadget(torch.set_default_dtype, torch.float64)}, tmp_path / "c.pth")
    try:
        loaded = load_tensors_only(tmp_path / "c.pth")
        assert torch.get_default_dtype() is torch.float32
    finally:
        torch.set_default_dtype(torch.float32)
    assert isinstance(loaded["call"], Opaque) and loaded["call"].args == (torch.float64,)


def test_rebuild_functions_are_resolved_only_from_torch_utils(tmp_path):
    """``torch._tensor._rebuild_from_type`` calls its first argument; by name it looks like a tensor rebuild."""
    from torch._tensor import _rebuild_from_type

    torch.save({"call": Gadget(_rebuild_from_type, print, torch.Tensor, ("ran",), {})}, tmp_path / "c.pth")
    loaded = load_tensors_only(tmp_path / "c.pth")
    assert isinstance(loaded["call"], Opaque) and loaded["call"].args[2:] == (("ran",), {})


def test_the_subclass_rebuild_is_not_resolved(tmp_path):
    """A tensor with attributes pickles through ``_rebuild_from_type_v2``, which calls its argument and sets state on
    the result; older torch wrote it under ``torch._utils``. It stays opaque under either name."""
    tensor = torch.arange(3.0)
    tensor.note = "hi"
    path = save({"w": torch.ones(2), "x": tensor}, tmp_path / "c.pth", legacy=True)
    data = path.read_bytes()
    assert data.count(b"ctorch._tensor\n_rebuild_from_type_v2\n") == 1
    path.write_bytes(data.replace(b"ctorch._tensor\n_rebuild_from_type_v2\n", b"ctorch._utils\n_rebuild_from_type_v2\n"))
    loaded = load_tensors_only(path)
    torch.testing.assert_close(loaded["w"], torch.ones(2))
    assert isinstance(loaded["x"], Opaque) and loaded["x"].args[3] == {"note": "hi"}


def test_tensors_saved_on_a_gpu_load_on_the_cpu(tmp_path):
    w = load_tensors_only(save_as_on_first_gpu({"w": torch.arange(4.0)}, tmp_path / "gpu.pth"))["w"]
    assert w.device == torch.device("cpu")
    torch.testing.assert_close(w, torch.arange(4.0))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_zip_checkpoints_are_memory_mapped_legacy_ones_read(tmp_path):
    big = torch.randn(256, 1024)  # 1 MB, its own pages
    new = load_tensors_only(save({"w": big}, tmp_path / "new.pth"))["w"]
    assert mapped_files(new) == [str(tmp_path / "new.pth")]
    old = load_tensors_only(save({"w": big}, tmp_path / "old.pth", legacy=True))["w"]
    assert str(tmp_path / "old.pth") not in mapped_files(old)
    torch.testing.assert_close(new, big)
    torch.testing.assert_close(old, big)
