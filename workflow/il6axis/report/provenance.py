"""The report's provenance: software versions, downloaded files (URL and sha256) and the configuration used.

``provenance.rst`` goes on the front page; the versions and the configuration are also written as files
of their own (``software_versions.tsv``, ``config_used.yaml``) that the report links.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import yaml

from il6axis.errors import InputError
from il6axis.report.rst import heading, list_table, rst_escape

SOFTWARE_PACKAGES = (
    "snakemake",
    "pydeseq2",
    "scanpy",
    "anndata",
    "pandas",
    "numpy",
    "scipy",
    "statsmodels",
    "gseapy",
    "seaborn",
    "matplotlib",
)


def software_versions(packages: Sequence[str] = SOFTWARE_PACKAGES) -> pd.DataFrame:
    """Installed version of Python and of each package (``not installed`` when absent)."""
    rows = [{"package": "python", "version": platform.python_version()}]
    for name in packages:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        rows.append({"package": name, "version": version})
    return pd.DataFrame(rows, columns=["package", "version"])


def _plain(value: Any) -> Any:
    """Plain dicts / lists / scalars (Snakemake may hand over its own mapping types)."""
    return json.loads(json.dumps(value, default=str))


def config_yaml(config: Mapping[str, Any]) -> str:
    """YAML of the configuration the workflow ran with (without the report text attached at parse time)."""
    plain = {k: v for k, v in _plain(dict(config)).items() if k != "_report"}
    return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, default_flow_style=False)


def provenance_rst(versions: pd.DataFrame, config_text: str, manifest: pd.DataFrame | None = None) -> str:
    """reStructuredText: software versions, downloaded files with URL and sha256, the configuration used."""
    lines = heading("Software")
    lines += list_table(
        ["package", "version"], [[rst_escape(r.package), f"``{r.version}``"] for r in versions.itertuples()]
    )
    lines += heading("Downloaded files")
    if manifest is None or manifest.empty:
        lines += ["No file was downloaded (local inputs only, e.g. the demo cohort).", ""]
    else:
        missing = [c for c in ("file", "url", "sha256") if c not in manifest.columns]
        if missing:
            raise InputError(f"download manifest: missing column(s) {missing}; rerun rule download_manifest.")
        for r in manifest.itertuples():
            lines += [f"- ``{r.file}``", "", f"  from ``{r.url}``", "", f"  sha256 ``{r.sha256}``", ""]
    lines += heading("Configuration used")
    lines += ["::", ""]
    lines += [f"   {line}" if line else "" for line in config_text.rstrip().splitlines()]
    return "\n".join(lines).rstrip() + "\n"
