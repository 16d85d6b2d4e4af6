"""python -m nptm.export --sparse: a pruned-model file (with its masks) written sparsified, loadable by
nptm.load_sparse, computing what the masked model computes."""
import copy

import torch

import nptm
from nptm.export.__main__ import main
from nptm.models import build_model
from nptm.pruning import prune_unstructured


def test_export_sparse(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20", 10).eval()
    masks = prune_unstructured(copy.deepcopy(model), "magnitude", 0.9)
    nptm.save_pruned(model, tmp_path / "p.pt", masks)  # the weights unmasked: the file's masks must be applied
    assert main([str(tmp_path / "p.pt"), "--model", "resnet20", "--sparse", str(tmp_path / "s.pt")]) == 0
    sparse = nptm.load_sparse(tmp_path / "s.pt")
    masks.apply(model)
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        want = model(x)
        assert (sparse(x) - want).abs().max() <= 1e-4 * want.abs().max()
