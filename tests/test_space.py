"""The rho space: parsing, channel arithmetic (Eq. 1), presets and search-space files."""

from __future__ import annotations

from fractions import Fraction

import pytest

from rhosearch.core.space import (
    BACKBONE_WIDTHS,
    RhoConfig,
    get_preset,
    load_presets,
    load_search_space,
    parse_search_space,
)
from rhosearch.errors import RhoSearchError

PAPER_CHANNELS = {
    "baseline": 640, "exmvit-576": 576, "exmvit-640": 640,
    "exmvit-704": 704, "exmvit-864": 864, "exmvit-928": 928,
}


@pytest.mark.parametrize("name, channels", PAPER_CHANNELS.items())
def test_paper_presets_have_the_papers_classifier_channels(name, channels):
    preset = load_presets()[name]
    assert preset.config.classifier_channels == channels
    assert preset.reported and all("table" in row for row in preset.reported)


def test_exmvit_928_is_the_papers_rule():
    # rho_k = C~_{k+1} / C~_k for blocks 3, 4 and rho_5 = 4 (paper, section D).
    config = get_preset("exmvit-928").config
    assert config.rho == (0, 0, Fraction(128, 96), Fraction(160, 128), 4)
    assert config.shortcut_channels == (0, 0, 128, 160, 640)
    assert config.name == "ExMViT-928"


@pytest.mark.parametrize("text", ["4/3,5/4,4", "0,0,4/3,1.25,4", "0, 0, 4/3, 5/4, 4.0"])
def test_parse_accepts_fractions_decimals_and_three_or_five_values(text):
    assert RhoConfig.parse(text).rho == (0, 0, Fraction(4, 3), Fraction(5, 4), 4)


@pytest.mark.parametrize("backbone", BACKBONE_WIDTHS)
def test_baseline_is_four_times_block_five(backbone):
    config = RhoConfig.parse("0,0,4", backbone=backbone)
    assert config.is_baseline
    assert config.classifier_channels == 4 * BACKBONE_WIDTHS[backbone][4]


def test_rounding_rule_half_up_and_at_least_one_channel():
    config = RhoConfig.parse("1/3,0,1/3,0,1/1000", backbone="mobilevit_xs")
    # 32/3 = 10.67 -> 11; 64/3 = 21.33 -> 21; 96/1000 -> at least 1.
    assert config.shortcut_channels == (11, 0, 21, 0, 1)
    assert RhoConfig.parse("1/64,0,0,0,0").shortcut_channels[0] == 1  # 0.5 rounds up


def test_key_tells_apart_configurations_with_equal_channels():
    a, b = RhoConfig.parse("1/3,1,3"), RhoConfig.parse("0,0,0,0,4")
    assert a.classifier_channels == b.classifier_channels == 640
    assert a.key != b.key and a.name != b.name


@pytest.mark.parametrize(
    "text, message",
    [
        ("-1,1,1", "negative"),
        ("a,1,1", "not a number"),
        ("0,0,0", "0 classifier channels"),
        ("1,1", "give 3"),
        ("1,1,1,1", "give 3"),
        ("1/0,1,1", "not a number"),
    ],
)
def test_bad_rho_is_a_clear_error(text, message):
    with pytest.raises(RhoSearchError, match=message):
        RhoConfig.parse(text)


def test_unknown_backbone_and_preset_list_the_valid_ones():
    with pytest.raises(RhoSearchError, match="mobilevit_xxs"):
        RhoConfig.parse("1,1,1", backbone="resnet50")
    with pytest.raises(RhoSearchError, match="exmvit-928"):
        get_preset("exmvit-999")


@pytest.mark.parametrize(
    "name",
    ["exmobilevit_s", "exmobilevit_s_open", "exmobilevit_xs", "exmobilevit_xxs", "paper_grid"],
)
def test_shipped_search_spaces_load(name):
    space = load_search_space(name)
    configs = list(space.configs())
    all_zero_in_grid = all(0 in choices for choices in space.choices)  # no classifier: skipped
    assert 0 < len(configs) == len(set(configs)) == space.size - all_zero_in_grid


def test_paper_grid_holds_the_paper_presets():
    space = load_search_space("paper_grid")
    for preset in load_presets().values():
        assert space.contains(preset.config)


def test_search_space_range_and_widest_channels():
    space = parse_search_space(
        {"backbone": "mobilevit_s", "rho": {"rho_3": {"min": 0, "max": 1, "step": "1/3"},
                                            "rho_5": [3, 4]}}
    )
    assert space.choices[2] == (0, Fraction(1, 3), Fraction(2, 3), 1)
    assert space.max_shortcut_channels == (0, 0, 96, 0, 640)
    assert space.widest.rho_text == "0,0,1,0,4"
    assert space.size == 8


def test_search_space_reports_every_problem_with_its_key_path():
    with pytest.raises(RhoSearchError) as info:
        parse_search_space({
            "backbone": "resnet",
            "rho": {"rho_3": ["x"], "rho_9": [1], "rho_4": {"min": 0}},
            "constraints": {"max_overhead_pct": "lots", "max_ram": 1},
        })
    message = str(info.value)
    for path in ["backbone", "rho.rho_3[0]", "rho.rho_9", "rho.rho_4",
                 "constraints.max_overhead_pct",
                 "constraints.max_ram"]:
        assert path in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(RhoSearchError, match="not found"):
        load_search_space(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rho: [1, 2\n")
    with pytest.raises(RhoSearchError, match="not valid YAML"):
        load_search_space(bad)
    with pytest.raises(RhoSearchError, match="unknown search space"):
        load_search_space("no_such_space")


@pytest.mark.parametrize("space_name", ["exmobilevit_s", "exmobilevit_s_open", "paper_grid",
                                        "exmobilevit_xs", "exmobilevit_xxs"])
def test_a_found_rho_never_gets_a_paper_name(space_name):
    # ExMViT-576 is the paper's (0,0,1/3,1/2,3); (0,0,2,1/2,2) also has 576 channels.
    paper = {p.config: p.label for p in load_presets().values()}
    configs = list(load_search_space(space_name).configs())
    for config in configs:
        if config in paper:
            assert config.name == paper[config]
        elif config.is_baseline:  # plain MobileViT-XS/XXS: timm's own model, not a paper row
            assert config.name.startswith("MobileViT-")
        else:
            assert not config.name.startswith(("ExMViT", "MobileViT")), config
            assert f"·{config.classifier_channels}" in config.name
    assert len({c.name for c in configs}) == len(configs)  # a name is one configuration


def test_found_names_show_rho_and_width():
    assert RhoConfig.parse("0,0,2,1/2,2").name == "ρ(0,0,2,½,2)·576"
    assert RhoConfig.parse("1/3,1/2,3").name == "ExMViT-576"
    assert RhoConfig.parse("1,1,4", backbone="mobilevit_xs").name.startswith("XS ρ(0,0,1,1,4)·")
    assert RhoConfig.parse("0,0,4", backbone="mobilevit_xxs").name == "MobileViT-XXS"
