"""A dataset registers itself with its study defaults; the CLI's --dataset choices come from the registry."""
import pytest

from nptm.data import DATASETS, DataConfig, DataError, DataSpec, build_dataset, get_dataset, register_dataset
from nptm.data.loaders import TensorLoader
from nptm.utils.registry import Registry


@pytest.fixture
def toy():
    import torch

    @register_dataset("toy_for_test", defaults=dict(model="digits_net", epochs=3, retrain_epochs=1, batch_size=4,
                                                    lr=0.05, milestones=(0.5,)))
    def build(cfg: DataConfig) -> DataSpec:
        x, y = torch.zeros(8, 1, 8, 8), torch.arange(8) % 2
        return DataSpec(TensorLoader(x, y, cfg.batch_size, shuffle=True), TensorLoader(x, y, 8, shuffle=False),
                        2, 1, 8, 8)

    yield "toy_for_test"
    DATASETS._items.pop("toy_for_test")


def test_registry_and_defaults(toy):
    assert isinstance(DATASETS, Registry) and {"digits", "cifar10", "cifar100", "imagenet", "imagefolder"} <= set(DATASETS)
    assert build_dataset(DataConfig(name=toy, batch_size=4)).num_classes == 2
    assert get_dataset("cifar10").defaults["epochs"] == 160 and get_dataset("cifar10").loaders
    assert not get_dataset("digits").loaders and get_dataset("imagefolder").resolutions
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*digits"):
        get_dataset("mnist")


def test_cli_takes_choices_and_defaults_from_the_registry(toy):
    from nptm.study.config import ConfigError, build_parser, parse_args
    from nptm.study.validation import validate

    assert toy in build_parser().format_help()
    cfg = parse_args(["--dataset", toy])[0].resolve()
    validate(cfg)
    assert (cfg.model.model, cfg.training.epochs, cfg.training.lr, cfg.schedule.milestones) == ("digits_net", 3, 0.05, (0.5,))
    with pytest.raises(ConfigError, match="--loader applies to datasets read from files"):
        validate(parse_args(["--dataset", toy, "--loader", "ffcv"])[0].resolve())
    with pytest.raises(ConfigError, match="--train-resolution applies to image-folder datasets"):
        validate(parse_args(["--dataset", toy, "--train-resolution", "32"])[0].resolve())
