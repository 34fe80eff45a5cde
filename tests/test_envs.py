"""Every pin in envs/*.yaml equals the pin of the same package in requirements.txt."""

from __future__ import annotations

import re

import yaml
from conftest import PROJECT_ROOT


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_requirements_are_all_pinned():
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", line), line


def test_conda_envs_agree_with_requirements():
    pins = _requirements()
    envs = sorted((PROJECT_ROOT / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        for dep in spec["dependencies"]:
            if isinstance(dep, dict):
                for pip_dep in dep["pip"]:
                    name, version = pip_dep.split("==")
                    assert pins[name.lower()] == version, f"{env.name}: {pip_dep} vs requirements.txt"
            elif dep.startswith("python="):
                assert dep == "python=3.11", env.name


def test_every_rule_with_a_script_has_a_conda_env():
    for smk in (PROJECT_ROOT / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        assert text.count("script:") == text.count("conda:"), smk.name
