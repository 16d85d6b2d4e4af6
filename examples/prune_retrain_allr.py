"""Prune a trained torchvision model and retrain it with ALLR in a plain PyTorch loop.

    python examples/prune_retrain_allr.py --data DIR --model resnet18 --checkpoint resnet18.pth \
        --sparsity 0.9 --epochs 5

DIR holds train/<class>/*.jpg and val/<class>/*.jpg; the checkpoint is a state dict (e.g. torchvision's
resnet18-f37072d3.pth). ``--tiny`` runs on a few random images in seconds (the tests use it).
"""
import argparse

import torch
import torchvision
from torch import nn
from torchvision import transforms as T

from nptm.pruning import Masks, prune_unstructured
from nptm.schedules import OriginalSchedule, allr_scale, retrain_scheduler

# The recipe the checkpoint was trained with (torchvision's ImageNet one: 90 epochs, lr 0.1, x0.1 at 30 and 60).
ORIGINAL = OriginalSchedule(lr=0.1, epochs=90, milestones=(1 / 3, 2 / 3))


def parse(argv=None, description=__doc__):
    p = argparse.ArgumentParser(description=description.splitlines()[0])
    p.add_argument("--data", help="folder with train/<class>/ and val/<class>/")
    p.add_argument("--model", default="resnet18", help="a torchvision classification model")
    p.add_argument("--checkpoint", help="the trained model's state dict")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--epochs", type=int, default=5, help="retraining epochs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--tiny", action="store_true", help="random 32x32 images, one epoch: a smoke test")
    args = p.parse_args(argv)
    if args.tiny:
        args.epochs, args.batch_size, args.workers = 1, 16, 0
    elif not args.data:
        p.error("--data DIR is required (or --tiny)")
    return args


def datasets(args):
    """(train, val, number of classes)."""
    if args.tiny:
        fake = lambda n, offset: torchvision.datasets.FakeData(n, (3, 32, 32), 10, T.ToTensor(), random_offset=offset)  # noqa
        return fake(64, 0), fake(32, 1000), 10
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    folder = torchvision.datasets.ImageFolder
    train = folder(f"{args.data}/train", T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm]))
    val = folder(f"{args.data}/val", T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm]))
    return train, val, len(train.classes)


def load_model(args, classes):
    model = torchvision.models.get_model(args.model, num_classes=classes)
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, weights_only=True))
    return model


def prune(model, sparsity, retrain_epochs):
    """Global magnitude pruning of the conv and linear weights, the classifier spared; returns (masks, ALLR's d)."""
    masks = Masks.for_model(model, include_linear=True, spare_classifier=True)
    before = [model.get_parameter(n).detach().clone() for n in masks]
    masks = prune_unstructured(model, "magnitude", sparsity, masks=masks)
    d, d1, _ = allr_scale(before, [model.get_parameter(n) for n in masks], sparsity, retrain_epochs, ORIGINAL.T)
    print(f"pruned to {masks.sparsity():.1%}; ALLR d = {d:.3f} (norm drop d1 = {d1:.3f})")
    return masks, d


@torch.no_grad()
def accuracy(model, loader, device):
    model.eval()
    right = total = 0
    for x, y in loader:
        right += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
        total += len(y)
    return 100.0 * right / total


def main(argv=None):
    args = parse(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train_set, val_set, classes = datasets(args)
    train = torch.utils.data.DataLoader(train_set, args.batch_size, shuffle=True, num_workers=args.workers)
    val = torch.utils.data.DataLoader(val_set, args.batch_size, num_workers=args.workers)
    model = load_model(args, classes).to(device)
    print(f"dense: {accuracy(model, val, device):.2f}% top-1")
    masks, d = prune(model, args.sparsity, args.epochs)
    print(f"pruned: {accuracy(model, val, device):.2f}% top-1")

    opt = torch.optim.SGD(model.parameters(), lr=ORIGINAL.lr, momentum=0.9, weight_decay=1e-4)
    sched = retrain_scheduler(opt, "ALLR", original=ORIGINAL, retrain_steps=args.epochs * len(train),
                              steps_per_epoch=len(train), d=d)
    masks.attach(opt)  # the pruned weights and their momentum stay zero after every opt.step()
    for epoch in range(args.epochs):
        model.train()
        for x, y in train:
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
            opt.step()
            sched.step()  # per iteration
        print(f"epoch {epoch + 1}: {accuracy(model, val, device):.2f}% top-1, lr {sched.get_last_lr()[0]:.5f}")
    return model, masks


if __name__ == "__main__":
    main()
