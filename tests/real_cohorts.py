"""Contrast definitions of the real cohorts in ../shared/data, shared by the tests that build them."""

from __future__ import annotations

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
