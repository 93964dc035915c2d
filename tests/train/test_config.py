import pytest

from polyemo.heads import HeadConfig
from polyemo.train import TrainConfig


def test_configs_load_from_yaml_and_name_the_file_on_errors(tmp_path):
    good = tmp_path / "train.yaml"
    good.write_text("lr: 0.0005\nepochs: 3\nselection_metric: ua\nsampling: undersample\nloss: focal\n"
                    "loss_params: {gamma: 2.0}\nnormalisation: speaker\n")
    config = TrainConfig.from_yaml(good)
    assert config.lr == 0.0005 and config.selection_metric == "ua" and config.loss_params == {"gamma": 2.0}
    assert config.normaliser_options() == {"min_utterances": 5}
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.001\nselection_metric: accuracy\n")
    with pytest.raises(ValueError, match="(?s)bad.yaml.*selection_metric"):
        TrainConfig.from_yaml(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_yaml(typo)
    head = tmp_path / "head.yaml"
    head.write_text("name: attentive_stats\nparams: {hidden_dim: 64}\nlayers: weighted\nlayer_norm: true\n")
    assert HeadConfig.from_yaml(head).params == {"hidden_dim": 64}
