"""Every config field is checked in its dataclass: library callers and saved configs get the command line's checks."""

import pytest
import yaml

from multitoken import DataConfig, ModelConfig, OptimConfig, TrainConfig
from multitoken.config import from_dict, to_dict
from multitoken.errors import ConfigError

BAD = [
    (lambda: TrainConfig(precision="fp16"), r"precision must be one of 'auto', 'fp32', 'bf16' \(got 'fp16'\)"),
    (lambda: TrainConfig(loss_strategy="fast"), "loss_strategy must be one of 'sequential', 'naive'"),
    (lambda: TrainConfig(cross_entropy="fused"), "cross_entropy must be one of"),
    (lambda: TrainConfig(freeze="heads"), "freeze must be one of"),
    (lambda: TrainConfig(parallel="tp"), "parallel must be one of"),
    (lambda: DataConfig(order="shuffled"), "data.order must be one of"),
    (lambda: OptimConfig(weight_decay=-1), "optim.weight_decay must be >= 0"),
    (lambda: OptimConfig(beta2=1.0), r"optim.beta2 must be in \[0, 1\)"),
    (lambda: OptimConfig(eps=0), "optim.eps must be positive"),
    (lambda: OptimConfig(lr=float("nan")), "optim.lr must be a finite number"),
    (lambda: OptimConfig(lr=float("inf")), "optim.lr must be a finite number"),
    (lambda: ModelConfig(ffn_hidden=0), "model.ffn_hidden must be positive"),
    (lambda: ModelConfig(n_kv_head=0), "model.n_kv_head must be positive"),
    (lambda: ModelConfig(rope_theta=0), "model.rope_theta must be positive"),
    (lambda: ModelConfig(norm_eps=-1), "model.norm_eps must be positive"),
    (lambda: ModelConfig(d_model="128"), "model.d_model must be an integer"),
    (lambda: TrainConfig(head_weights=[0, 0, 0, 0]), "are all zero"),
    (lambda: TrainConfig(head_weights=[1, float("nan"), 1, 1]), "must be a list of finite numbers"),
    (lambda: TrainConfig(out_dir=""), "out_dir is empty"),
    (lambda: TrainConfig(out_dir="  "), "out_dir is empty"),
    (lambda: TrainConfig(seed=-1), r"seed must be in \[0, 2\*\*63\)"),
    (lambda: TrainConfig(seed=2 ** 70), r"seed must be in \[0, 2\*\*63\)"),
    (lambda: TrainConfig(max_steps=True), "max_steps must be an integer"),
    (lambda: TrainConfig(resume=""), "resume is empty"),
    (lambda: TrainConfig(model={"n_future": 2}), "model must be ModelConfig"),
    (lambda: DataConfig(path=""), "names no file"),
    (lambda: DataConfig(tokenizer=""), "data.tokenizer is empty"),
]


@pytest.mark.parametrize("make,message", BAD, ids=[m for _, m in BAD])
def test_bad_values_are_refused_by_the_dataclass(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_deepseek_weights_with_a_single_head_are_just_head_one():
    cfg = TrainConfig(model=ModelConfig(n_future=1, n_layer=2), head_weights="deepseek:0.3")
    assert cfg.resolved_head_weights() == [1.0]


def test_good_values_round_trip_through_yaml():
    cfg = TrainConfig(model=ModelConfig(n_kv_head=2, ffn_hidden=64), optim=OptimConfig(lr=1, weight_decay=0),
                      head_weights=[1, 0.5, 0.25, 0], resume="runs/x/checkpoints/step_000200", seed=2 ** 63 - 1)
    again = from_dict(TrainConfig, yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    assert again == cfg


def test_a_saved_config_is_checked_on_load(tmp_path):
    values = to_dict(TrainConfig())
    values["precision"] = "fp16"
    with pytest.raises(ConfigError, match="precision must be one of"):
        from_dict(TrainConfig, yaml.safe_load(yaml.safe_dump(values)))
