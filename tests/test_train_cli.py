"""The command line is built from TrainConfig's fields: one option per field, typed as the field."""
import dataclasses

import pytest

from wae_fast.kernels import OFFICIAL_SCALES
from wae_fast.train.cli import build_parser
from wae_fast.train.config import OFFICIAL_EXTRAS, TrainConfig


def test_every_config_field_has_an_option_and_no_option_is_unknown():
    parser = build_parser()
    dests = {a.dest for a in parser._actions}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields <= dests
    run_only = {"help", "resume", "overwrite", "official_extras", "no_final_eval", "no_progress", "no_plots"}
    assert dests - fields == run_only
    args = parser.parse_args([])
    assert all(getattr(args, name) is None for name in fields)      # left out: the preset decides


def test_options_are_parsed_as_their_fields():
    args = build_parser().parse_args(
        ["--adam-betas", "0.9,0.99", "--lr-milestones", "3,5", "--lr-factors", "0.5,0.1", "--mmd-scales", "official",
         "--channels-last", "--amp", "bf16", "--max-images", "7", "--sigma-z2", "2", "--d-z", "16",
         "--checkpoint-every", "0"])
    assert args.adam_betas == (0.9, 0.99) and args.lr_milestones == (3, 5) and args.lr_factors == (0.5, 0.1)
    assert args.mmd_scales == OFFICIAL_SCALES == OFFICIAL_EXTRAS["mmd_scales"]
    assert args.channels_last is True and args.amp == "bf16" and args.max_images == 7
    assert args.sigma_z2 == 2.0 and args.d_z == 16 and args.checkpoint_every == 0
    assert build_parser().parse_args(["--no-channels-last"]).channels_last is False
    assert build_parser().parse_args(["--mmd-scales", "0.5,2"]).mmd_scales == (0.5, 2.0)


@pytest.mark.parametrize("argv, named", [(["--adam-betas", "0.9"], "--adam-betas"),
                                         (["--mmd-scales", "wide"], "--mmd-scales"),
                                         (["--epochs", "ten"], "--epochs"),
                                         (["--amp", "fp8"], "--amp")])
def test_a_bad_option_value_names_the_option(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


def test_bad_config_values_name_the_field():
    for field, value in (("amp", "fp16"), ("mmd_backend", "gpu"), ("checkpoint_every", -1),
                         ("adam_betas", (0.5, 1.5)), ("mmd_scales", (0.0,))):
        with pytest.raises(ValueError, match=field):
            dataclasses.replace(TrainConfig(), **{field: value}).validate()
