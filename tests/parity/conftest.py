"""Fixtures of the diffusers parity suite."""

import pytest

from parity_common import CONFIGS, MEASURED, tool, write_config


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\nmax relative error vs diffusers:")
    for key, value in sorted(MEASURED.items()):
        print(f"  {key:55s} {value:.2e}")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Our randomly initialised model of each config, exported as a diffusers folder by dcae-export."""
    root = tmp_path_factory.mktemp("exported")
    folders = {}
    for seed, (name, config) in enumerate(CONFIGS.items()):
        cfg = write_config(root / f"{name}.json", config)
        tool("dcae-export", "--config", cfg, "--init", "random", "--seed", 10 + seed, "--out", root / name)
        folders[name] = root / name
    return folders
