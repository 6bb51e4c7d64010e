"""seglab.profiles: which profile runs, and why."""

import pytest

from seglab import profiles
from seglab.profiles import Profile, select_profile


def test_explicit_profile_wins_over_fast(capsys):
    profile = select_profile({"SEGLAB_PROFILE": "laptop", "SEGLAB_FAST": "1"})
    assert profile.name == "laptop" and profile.laptop
    assert "profile: laptop (set by SEGLAB_PROFILE)" in capsys.readouterr().out


def test_fast_is_an_alias_of_smoke():
    assert select_profile({"SEGLAB_FAST": "1"}, verbose=False).name == "smoke"


@pytest.mark.parametrize("cuda, expected", [(True, "full"), (False, "laptop")])
def test_default_follows_the_device(monkeypatch, cuda, expected):
    monkeypatch.setattr(profiles, "_cuda_available", lambda: cuda)
    assert select_profile({}, verbose=False).name == expected


def test_pick_and_cap_steps():
    profile = Profile("full", "test", max_steps=2)
    assert profile.pick(smoke=1, laptop=2, full=3) == 3
    assert profile.cap_steps(3000) == 2 and Profile("laptop", "x").cap_steps(300) == 300
    assert "at most 2 training steps" in str(profile)


@pytest.mark.parametrize("env", [{"SEGLAB_PROFILE": "gpu"}, {"SEGLAB_MAX_STEPS": "0"}, {"SEGLAB_MAX_STEPS": "x"}])
def test_bad_values_are_refused(env):
    with pytest.raises(ValueError, match="SEGLAB_"):
        select_profile(env, verbose=False)


def test_full_dry_is_full_with_small_caps(capsys):
    profile = select_profile({"SEGLAB_PROFILE": "full-dry"})
    assert profile.full and profile.dry and profile.pick(smoke=1, laptop=2, full=3) == 3
    assert (profile.cap_steps(3000), profile.cap_images(1449), profile.cap_images(None), profile.cap_batch(16)) == (
        2, 4, 4, 2)
    assert "profile: full-dry" in capsys.readouterr().out
    # Explicit caps win over the dry defaults, and apply to any profile.
    profile = select_profile({"SEGLAB_PROFILE": "full-dry", "SEGLAB_MAX_IMAGES": "8"}, verbose=False)
    assert profile.cap_images(1449) == 8 and profile.cap_steps(10) == 2
    laptop = select_profile({"SEGLAB_PROFILE": "laptop", "SEGLAB_MAX_BATCH": "3"}, verbose=False)
    assert not laptop.dry and laptop.cap_batch(8) == 3 and laptop.cap_images(101) == 101 and laptop.cap_images(None) is None


@pytest.mark.parametrize("variable", ["SEGLAB_MAX_IMAGES", "SEGLAB_MAX_BATCH"])
def test_bad_caps_are_refused(variable):
    with pytest.raises(ValueError, match=variable):
        select_profile({variable: "-1"}, verbose=False)


def test_seed_and_precision_come_from_the_environment():
    profile = select_profile({"SEGLAB_PROFILE": "laptop", "SEGLAB_SEED": "2", "SEGLAB_AMP": "off",
                              "SEGLAB_CHANNELS_LAST": "OFF"}, verbose=False)
    assert (profile.seed, profile.amp, profile.channels_last) == (2, "off", "off")
    assert "seed 2" in str(profile) and "amp off" in str(profile)
    default = select_profile({"SEGLAB_PROFILE": "laptop"}, verbose=False)
    assert (default.seed, default.amp, default.channels_last) == (0, "auto", "auto")
    for env, name in (({"SEGLAB_SEED": "-1"}, "SEGLAB_SEED"), ({"SEGLAB_SEED": "x"}, "SEGLAB_SEED"),
                      ({"SEGLAB_AMP": "bf16"}, "SEGLAB_AMP"), ({"SEGLAB_CHANNELS_LAST": "yes"}, "SEGLAB_CHANNELS_LAST")):
        with pytest.raises(ValueError, match=name):
            select_profile(env, verbose=False)
