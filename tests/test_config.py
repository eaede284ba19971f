"""Every choice and number of a run is checked before any training (crt.config.resolve), in-process.

Each bad input must end in one ConfigError whose message is one paragraph naming the key, the bad value and
the fix; none may reach a loader or a trainer (both are made to fail loudly here).
"""

from __future__ import annotations

import math

import pytest

import crt.pipeline as pipeline
from crt.config import resolve
from crt.errors import ConfigError
from crt.registry import AUGMENTERS, DATASETS, ENCODERS, LOSSES, STAGES
from crt.stages.configs import DemixConfig, PretrainConfig, RefineConfig

# (overrides, text the message must contain: the key and the bad value)
BAD = [
    # component names (typos)
    (["method.augment=nonparametrik"], ["method.augment", "nonparametrik", "did you mean 'nonparametric'"]),
    (["method.refine_loss=nope"], ["method.refine_loss", "'nope'"]),
    (["method.pretrain_loss=focall"], ["method.pretrain_loss", "'focall'", "did you mean 'focal'"]),
    (["stage.refine.weighting=nope"], ["stage.refine.weighting", "'nope'", "not a registered weighting", "code, paper."]),
    (["stage.refine.sampler=balancd"], ["stage.refine.sampler", "'balancd'", "did you mean 'balanced'"]),
    (["stage.pretrain.sampler=uniform"], ["stage.pretrain.sampler", "'uniform'"]),
    (["stage.pretrain.optimizer=adamm"], ["stage.pretrain.optimizer", "'adamm'", "did you mean 'adam'"]),
    (["stage.demix.optimizer=rmsprop"], ["stage.demix.optimizer", "'rmsprop'"]),
    (["method.refine_space=sources"], ["method.refine_space", "'sources'"]),
    (["stage.selection.metric=acc"], ["stage.selection.metric", "'acc'"]),
    (["+trainer.max_epoch=3"], ["trainer.max_epoch=3", "did you mean"]),
    (["progress=maybe"], ["progress='maybe'"]),
    (["method.loss=nce"], ["method.loss", "'nce'"]),
    (["method.prior=mixture"], ["method.prior", "'mixture'"]),
    (["data.encoder.name=resnet50"], ["data.encoder.name", "'resnet50'"]),
    (["data.imbalance=zipf"], ["data.imbalance", "'zipf'"]),
    (["stage.demix.critic.negatives=all"], ["stage.demix.critic.negatives", "'all'"]),
    (["stage.demix.classes=minority"], ["stage.demix.classes", "'minority'"]),
    (["method.pretrain_classes=some"], ["method.pretrain_classes", "'some'"]),
    (["method.stages=[pretrain,refine,demix]"], ["method.stages", "order"]),
    (["method.stages=[pretrain,mix]"], ["method.stages", "'mix'"]),
    # unknown keys and options
    (["+method.lamda=0.1"], ["method.lamda", "did you mean 'lam'"]),
    (["+method.refine_loss_kwargs.gamma_typo=3"], ["method.refine_loss_kwargs.gamma_typo", "loss 'ce' takes no options"]),
    (["method=focal", "+method.pretrain_loss_kwargs.gamma_typo=3"], ["method.pretrain_loss_kwargs.gamma_typo",
                                                                     "did you mean 'gamma'"]),
    (["method=smote", "+method.augment_kwargs.k=3"], ["method.augment_kwargs.k"]),
    (["+stage.refine.epoch=3"], ["stage.refine.epoch", "did you mean 'epochs'"]),
    (["+data.n_per_clas=10"], ["data.n_per_clas", "did you mean 'n_per_class'"]),
    (["+data.encoder.width=8"], ["data.encoder.width"]),
    (["+method.loss_kwargs.max_m=0.3"], ["method.loss_kwargs"]),
    # numbers
    (["method.lam=nan"], ["method.lam", "nan"]),
    (["method.lam=-1"], ["method.lam", "-1", "negative"]),
    (["method.rho=inf"], ["method.rho", "inf"]),
    (["method.rho=-0.1"], ["method.rho", "negative"]),
    (["stage.pretrain.epochs=0"], ["stage.pretrain.epochs=0", "below 1"]),
    (["stage.refine.epochs=2.5"], ["stage.refine.epochs=2.5", "not an integer"]),
    (["stage.demix.batch_size=0"], ["stage.demix.batch_size=0"]),
    (["stage.pretrain.lr=nan"], ["stage.pretrain.lr=nan", "finite"]),
    (["stage.refine.lr=0"], ["stage.refine.lr=0", "not above 0"]),
    (["stage.refine.lr=abc"], ["stage.refine.lr='abc'", "not a number"]),
    (["stage.pretrain.weight_decay=-1e-4"], ["stage.pretrain.weight_decay"]),
    (["stage.demix.flow.blocks=0"], ["stage.demix.flow.blocks=0"]),
    (["stage.demix.critic.clamp=[5.0,-5.0]"], ["stage.demix.critic.clamp", "interval"]),
    (["stage.augment.n_per_class=0"], ["stage.augment.n_per_class=0"]),
    (["seed=abc"], ["seed='abc'", "integer"]),
    (["seed=1.5"], ["seed=1.5", "integer"]),
    (["data.minority_classes=1"], ["data.minority_classes=1", "not a list of integers"]),
    (["data.minority_classes=[0,0]"], ["data.minority_classes", "repeats"]),
    (["data.minority_classes=[9]"], ["data.minority_classes", "9"]),
    (["data.ratio=0"], ["data.ratio=0"]),
    (["data.ratio=1.5"], ["data.ratio=1.5"]),
    (["data.val_fraction=1.0"], ["data.val_fraction=1.0"]),
    (["data.feature_dim=0"], ["data.feature_dim=0"]),
    (["data.feature_dim=1"], ["data.feature_dim=1", "flow"]),
    (["model.predictor.hidden=[0]"], ["model.predictor.hidden"]),
    (["method=focal", "method.pretrain_loss_kwargs.gamma=-1"], ["method.pretrain_loss_kwargs", "gamma=-1"]),
    (["method=ldam", "method.pretrain_loss_kwargs.s=abc"], ["method.pretrain_loss_kwargs.s='abc'"]),
    (["method=gan", "method.augment_kwargs.steps=0"], ["method.augment_kwargs.steps=0"]),
    (["method=smote", "method.augment_kwargs.k_neighbors=0"], ["method.augment_kwargs.k_neighbors=0"]),
    (["method.refine_space=source", "method.stages=[pretrain,augment,refine]"], ["refine_space=source", "demix"]),
    (["cache.enabled=maybe"], ["cache.enabled='maybe'"]),
]


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to read data or train fails the test: the error must come first."""
    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("reached data loading / training before the config error")

    monkeypatch.setattr(pipeline, "build_split", boom)
    monkeypatch.setattr(pipeline, "RUNNERS", {s: boom for s in STAGES})


@pytest.mark.parametrize("overrides,needles", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_fails_before_training_with_one_paragraph(make_cfg, tmp_path, no_training, overrides, needles):
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError) as err:
        pipeline.run(cfg, run_dir=tmp_path / "run")
    text = str(err.value)
    for needle in needles:
        assert needle in text, text
    assert "Fix:" in text and "\n" not in text.strip(), text
    assert not (tmp_path / "run").exists()


def test_at_least_twenty_bad_inputs() -> None:
    assert len(BAD) >= 20


def test_defaults_resolve_to_typed_stage_configs(make_cfg) -> None:
    run = resolve(make_cfg())
    assert list(run.stages) == ["pretrain", "demix", "augment", "refine"] and run.seed == 0
    pre, dem, ref = run.stages["pretrain"], run.stages["demix"], run.stages["refine"]
    assert isinstance(pre, PretrainConfig) and isinstance(dem, DemixConfig) and isinstance(ref, RefineConfig)
    assert (pre.train.epochs, pre.train.batch_size, pre.train.lr, pre.train.sampler) == (30, 256, 1e-3, "natural")
    assert pre.encoder.name == "mlp" and pre.encoder.options.hidden == (64, 64) and pre.feature_dim == 2
    assert (dem.loss, dem.prior, dem.rho, dem.train.flow.blocks, dem.train.critic.clamp) == \
        ("fdv", "multi", 1e-2, 4, (-5.0, 15.0))
    assert (ref.lam, ref.space, ref.train.weighting, ref.train.sampler, ref.predictor_hidden) == \
        (1e-3, "source", "code", "balanced", (128, 128))
    assert run.stages["augment"].augmenter.name == "nonparametric" and run.data.protocol.minority_classes == (0,)


def test_loss_options_are_typed_and_belong_to_one_stage(make_cfg) -> None:
    run = resolve(make_cfg("method.refine_loss=ldam", "+method.refine_loss_kwargs.max_m=0.3"))
    assert run.stages["refine"].loss.name == "ldam" and run.stages["refine"].loss.options.max_m == 0.3
    assert run.stages["refine"].loss.options.s == 30.0  # the loss's own default
    assert run.stages["pretrain"].loss.name == "ce"


def test_pretrain_only_method_carries_no_later_stage_keys(make_cfg) -> None:
    run = resolve(make_cfg("method=erm"))
    assert list(run.stages) == ["pretrain"]
    assert set(make_cfg("method=erm").method) == {"name", "stages", "pretrain_loss", "pretrain_classes",
                                                  "pretrain_loss_kwargs"}


def test_gan_noise_dim_follows_the_dataset(make_cfg) -> None:
    assert resolve(make_cfg("method=gan")).stages["augment"].augmenter.options.noise_dim == 32
    assert resolve(make_cfg("method=gan", "data=cifar100")).stages["augment"].augmenter.options.noise_dim == 64


@pytest.mark.parametrize("registry", [DATASETS, ENCODERS, LOSSES, AUGMENTERS], ids=lambda r: r.kind)
def test_every_registered_component_has_typed_options(registry) -> None:
    from crt.registry import build

    assert len(registry) >= 3
    for name in registry:
        opts = registry.options(name, None, f"x.{name}")  # constructible from defaults
        assert build(type(opts), {}, "x") == opts
        with pytest.raises(ConfigError, match="not an option|takes no options"):
            registry.options(name, {"no_such_option": 1}, "x")


def test_messages_name_bounds_exactly() -> None:
    from crt.stages.configs import Train

    values = dict(epochs=1, batch_size=1, lr=1e-3, lr_ref_batch=None, weight_decay=0.0, optimizer="adam",
                  patience=None, grad_clip=0.0)
    from crt.registry import build

    assert build(Train, values, "stage.x").scaled_lr == 1e-3
    assert math.isclose(build(Train, {**values, "batch_size": 512, "lr_ref_batch": 128}, "s").scaled_lr, 4e-3)
    with pytest.raises(ConfigError, match=r"^stage\.x\.epochs=0 is below 1\. Fix: use at least 1 epoch\.$"):
        build(Train, {**values, "epochs": 0}, "stage.x")
    with pytest.raises(ConfigError, match=r"^stage\.x\.patience is missing"):
        build(Train, {k: v for k, v in values.items() if k != "patience"}, "stage.x")


def test_lam_defaults_per_dataset_and_an_override_wins(make_cfg) -> None:
    """method.lam: ${data.lam}: the papers' 1e-3 on the toy, 1.0 on MNIST (chosen on held-out balanced accuracy)."""
    assert resolve(make_cfg()).stages["refine"].lam == 1e-3
    assert resolve(make_cfg("data=mnist")).stages["refine"].lam == 1.0
    assert resolve(make_cfg("data=mnist", "method.lam=1e-3")).stages["refine"].lam == 1e-3


@pytest.mark.parametrize("value", ["0", "2.5", "eight", "true"])
def test_steps_per_call_must_be_a_whole_number_of_at_least_one(make_cfg, value: str) -> None:
    with pytest.raises(ConfigError, match=r"^trainer\.steps_per_call=.* is not a whole number of at least 1\. Fix:"):
        resolve(make_cfg(f"trainer.steps_per_call={value}"))
    assert resolve(make_cfg("trainer.steps_per_call=1")) is not None
