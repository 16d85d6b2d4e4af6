"""The same inside Hugging Face Trainer: prune a torchvision model, then Trainer retrains it with ALLR.

    pip install transformers accelerate   # test dependencies of nptm, not needed to use it
    python examples/hf_trainer_allr.py --data DIR --model resnet18 --checkpoint resnet18.pth
    python examples/hf_trainer_allr.py --tiny   # a tiny Hugging Face ResNet built from its config (no download)

Trainer takes the optimizer and nptm's scheduler through ``optimizers=(opt, sched)`` and steps the
scheduler after every optimizer step, as nptm's schedules expect; ``masks.attach(opt)`` keeps the pruned
weights at zero without touching Trainer's loop.
"""
import math
import tempfile

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from nptm.schedules import retrain_scheduler
from prune_retrain_allr import ORIGINAL, accuracy, datasets, load_model, parse, prune


class Classifier(nn.Module):
    """Trainer passes a batch as keyword arguments and reads the loss from the output."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, pixel_values, labels=None):
        logits = self.net(pixel_values)
        return {"logits": logits, **({} if labels is None else {"loss": nn.functional.cross_entropy(logits, labels)})}


class Logits(nn.Module):
    """A Hugging Face image classifier seen as a plain network: images in, logits out."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model

    def forward(self, x):
        return self.hf(pixel_values=x).logits


def tiny_model(classes: int) -> nn.Module:
    """A two-stage Hugging Face ResNet built from its config: random weights, nothing downloaded."""
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic",
                          num_labels=classes)
    return Logits(ResNetForImageClassification(config))


def collate(batch):
    images, labels = zip(*batch)
    return {"pixel_values": torch.stack(images), "labels": torch.tensor(labels)}


def main(argv=None):
    args = parse(argv, __doc__)
    train_set, val_set, classes = datasets(args)
    model = Classifier(tiny_model(classes) if args.tiny else load_model(args, classes))
    masks, d = prune(model, args.sparsity, args.epochs)

    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=ORIGINAL.lr, momentum=0.9, weight_decay=1e-4)
    sched = retrain_scheduler(opt, "ALLR", original=ORIGINAL, retrain_steps=args.epochs * steps_per_epoch,
                              steps_per_epoch=steps_per_epoch, d=d)
    masks.attach(opt)
    targs = TrainingArguments(tempfile.mkdtemp(), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                              dataloader_num_workers=args.workers, remove_unused_columns=False, save_strategy="no",
                              report_to=[], logging_steps=max(1, steps_per_epoch // 4))
    Trainer(model=model, args=targs, train_dataset=train_set, data_collator=collate, optimizers=(opt, sched)).train()
    device = next(model.parameters()).device
    val = torch.utils.data.DataLoader(val_set, args.batch_size, num_workers=args.workers)
    print(f"retrained: {accuracy(model.net, val, device):.2f}% top-1, sparsity {masks.sparsity():.1%}")
    return model, masks


if __name__ == "__main__":
    main()
