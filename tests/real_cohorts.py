"""Contrast definitions of the real cohorts in ../shared/data, shared by the tests that build them."""

from __future__ import annotations

import copy

# GSE155454: severity from the sample names' prefix (severe_ / mild_; `1_` and healthy excluded), day of
# illness from the `acute_day<N>` tag as the covariate (cohorts.md).
GSE155454_CONTRAST = {
    "tissue": "whole_blood",
    "derived_fields": {"day_of_illness": {"from": "timepoint_tag", "regex": "day([0-9]+)"}},
    "severity": {
        "field": "group_label_in_source",
        "severe": ["severe"],
        "mild": ["mild"],
        "exclude": ["1", "healthy"],
    },
    "covariates": {"day_of_illness": {"field": "day_of_illness", "type": "numeric"}},
}


def gse155454_from_geo() -> dict:
    """GSE155454's cohort block reading the curated counts and sample sheet from the (fake) GEO suppl/
    folder; a fresh copy each call, since tests edit it."""
    return copy.deepcopy(
        {
            **GSE155454_CONTRAST,
            "counts": {"source": "geo_supplementary", "file": "GSE155454_counts_kuanrongchan_v1.csv.gz"},
            "metadata": {
                "source": "geo_supplementary",
                "file": "GSE155454_sample_sheet_from_colnames.csv.gz",
                "sample_column": "sample",
            },
        }
    )


def gse155454_local_spec() -> dict:
    """GSE155454's validated-looking spec for calling ``il6axis.cohort.build.build_cohort`` on the shared
    files."""
    return copy.deepcopy(
        {
            **GSE155454_CONTRAST,
            "counts": {"gene_id": "symbol", "value_type": "counts", "map_symbols": True},
            "metadata": {"source": "sample_sheet", "sample_column": "sample"},
        }
    )
