"""One rank of the FSDP2 masking test: python fsdp2_worker.py RANK WORLD PORT (run by test_masks.py)."""
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

from nptm.pruning import Masks

rank, world, port = (int(a) for a in sys.argv[1:4])
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
dist.init_process_group("gloo", rank=rank, world_size=world)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 3))
keep = {"0.weight": torch.arange(54).reshape(9, 6) % 4 != 0, "2.weight": torch.arange(27).reshape(3, 9) % 3 != 1}
fully_shard(model[0])
fully_shard(model)
assert model[0].weight.to_local().shape[0] < 9  # really sharded over the ranks
opt = torch.optim.Adam(model.parameters(), lr=0.1)
Masks(keep).attach(opt, model)
torch.manual_seed(1 + rank)
for _ in range(3):
    opt.zero_grad()
    model(torch.randn(4, 6)).square().sum().backward()
    opt.step()
for name, k in keep.items():
    p = model.get_parameter(name)
    w, m = p.full_tensor(), opt.state[p]["exp_avg"].full_tensor()
    assert bool((w[~k] == 0).all()) and bool((w[k] != 0).all()) and bool((m[~k] == 0).all()), name
dist.destroy_process_group()
print(f"rank {rank} ok")
