import dataclasses
import json
import pickle

import pytest
from hypothesis import given, settings, strategies as st

from nptm.data import DATASETS
from nptm.pruning import PRUNERS
from nptm.schedules import SCHEDULES
from nptm.study.config import SECTIONS, ConfigError, StudyConfig, build_parser, parse_args
from nptm.study.validation import validate


def subsets(choices):
    return st.lists(st.sampled_from(choices), min_size=1, max_size=len(choices), unique=True).map(tuple)


configs = st.builds(
    lambda ds, pr, sp, it, sc, ep, rt, lr, seeds, flags, bs, out, dd, ms: StudyConfig().updated(dict(
        dataset=ds, pruner=pr, sparsity=sp, iterations=it, schedules=sc, epochs=ep, retrain_epochs=rt, lr=lr,
        seeds=seeds, scratch=flags[0], bimp=flags[1], include_linear=flags[2], quiet=flags[3], resume=flags[4],
        cycle_momentum=flags[5], batch_size=bs, out=out, data_dir=dd, milestones=ms)),
    st.sampled_from(DATASETS.names()), subsets(PRUNERS.names()),
    st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=3).map(tuple),
    st.integers(1, 5), subsets(SCHEDULES.names()), st.none() | st.integers(1, 500), st.none() | st.integers(1, 100),
    st.none() | st.floats(1e-5, 10), st.lists(st.integers(0, 99), min_size=1, max_size=4).map(tuple),
    st.tuples(*[st.booleans()] * 6), st.none() | st.integers(1, 1024),
    st.none() | st.text("abc/_-.", min_size=1, max_size=12).filter(lambda s: not s.startswith("-")),
    st.none() | st.just("/data/x y"), st.none() | st.lists(st.floats(0.01, 0.99), min_size=1, max_size=3).map(tuple),
)


@settings(max_examples=60, deadline=None)
@given(cfg=configs)
def test_cli_round_trip(cfg):
    parsed, given_flags = parse_args(cfg.to_argv())
    assert parsed == cfg
    assert StudyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_config_pickles():
    """Ranks receive rank 0's config by pickle, and --jobs workers too: every section must pickle by name."""
    cfg = parse_args(["--pruner", "gsm,magnitude", "--gsm-momentum", "0.8"])[0]
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_every_field_is_a_flag_with_its_help():
    parser = build_parser()
    text = parser.format_help()
    for sec in SECTIONS.values():
        for f in dataclasses.fields(sec):
            assert "--" + f.name.replace("_", "-") in text
            assert f.metadata["help"].split("(")[0].strip()[:30] in " ".join(text.split())


def test_defaults_and_dataset_defaults():
    cfg = parse_args([])[0].resolve()
    assert cfg.pruning.pruner == ("magnitude", "random") and cfg.pruning.sparsity == (0.9,)
    assert cfg.schedule.schedules == ("FT", "LRW", "SLR", "CLR", "LLR", "ALLR") and cfg.training.seeds == (0, 1)
    assert (cfg.model.model, cfg.data.batch_size) == ("digits_net", 64)
    c10 = parse_args(["--dataset", "cifar10"])[0].resolve()
    assert (c10.training.epochs, c10.data.batch_size, c10.training.lr, c10.schedule.milestones) == (160, 64, 0.1, (0.5, 0.75))
    assert (c10.training.momentum, c10.training.weight_decay) == (0.9, 1e-4)
    assert parse_args(["--dataset", "cifar10", "--epochs", "7"])[0].resolve().training.epochs == 7


def test_comma_lists_and_seeds():
    cfg, given = parse_args(["--pruner", "magnitude,l1_filters", "--sparsity", "0.5, 0.9", "--seeds", "3"])
    assert cfg.pruning.pruner == ("magnitude", "l1_filters") and cfg.pruning.sparsity == (0.5, 0.9)
    assert cfg.training.seeds == (0, 1, 2) and given == {"pruner", "sparsity", "seeds"}
    assert parse_args(["--seeds", "4,7"])[0].training.seeds == (4, 7)
    assert parse_args(["--seeds", "7,"])[0].training.seeds == (7,)
    assert parse_args(["--scratch", "--no-quiet"])[0].training.scratch


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_config_file_with_cli_override(tmp_path, fmt):
    data = {"data": {"dataset": "cifar100", "batch_size": 32}, "pruning": {"sparsity": [0.5, 0.8]},
            "schedules": "FT,CLR", "epochs": 12, "scratch": True}
    path = tmp_path / f"study.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(data))
    else:
        import yaml

        path.write_text(yaml.safe_dump(data))
    cfg, given = parse_args(["--config", str(path), "--epochs", "20", "--no-scratch"])
    assert (cfg.data.dataset, cfg.data.batch_size, cfg.pruning.sparsity) == ("cifar100", 32, (0.5, 0.8))
    assert cfg.schedule.schedules == ("FT", "CLR") and cfg.training.epochs == 20 and not cfg.training.scratch


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--pruner", "magnitude,foo"], "unknown pruner 'foo'"),
    (["--schedules", "FT,XYZ"], "unknown schedule 'XYZ'"),
    (["--epochs", "1.5"], "--epochs: invalid value"),
    (["--seeds", "0"], "--seeds: invalid value"),
    (["--bogus"], "unrecognized arguments"),
    (["--epochs"], "expected one argument"),
])
def test_bad_flags(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_args(argv)


@pytest.mark.parametrize("argv, message", [
    (["--sparsity", "1.0"], r"--sparsity 1.0 is outside \[0, 1\)"),
    (["--sparsity", "-0.1"], "outside"),
    (["--iterations", "0"], "--iterations must be at least 1"),
    (["--lr", "0"], "--lr must be positive"),
    (["--seeds", "1,1"], "distinct"),
    (["--bimp", "--epochs", "10", "--retrain-epochs", "5", "--iterations", "2"], "--bimp needs --epochs >"),
    (["--bimp", "--pruner", "l1_filters"], "--bimp needs an unstructured pruner"),
    (["--milestones", "0.5,1.5"], "--milestones"),
    (["--round-to", "0"], "--round-to must be a positive integer"),
])
def test_invalid_combinations(argv, message):
    with pytest.raises(ConfigError, match=message):
        validate(parse_args(argv)[0].resolve())


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="malformed config file"):
        parse_args(["--config", str(bad)])
    bad.write_text("nonsense_key: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'nonsense_key'"):
        parse_args(["--config", str(bad)])
    with pytest.raises(ConfigError, match="cannot read config file"):
        parse_args(["--config", str(tmp_path / "missing.yaml")])
