"""The declared value type is checked against the numbers before modelling (il6axis.cohort.value_scale).

Planted truth: synthetic tables built the way each value type is made (integer NB counts, RSEM-like
expected counts, CPM, log2 CPM with edgeR's prior count, log2(x + 1)), and the real GSE293708 tables (the
author's DESeq2-normalised values and the raw counts reconstructed from them). Each must be sorted into the
right kind, and each wrong declaration must stop with a message naming the value type to use.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from il6axis.cohort.build import build_cohort
from il6axis.cohort.value_scale import (
    INTEGER,
    INVALID,
    LINEAR,
    LOG,
    LOG2_MAX,
    check_value_type,
    classify,
    detected_log2,
)
from il6axis.errors import InputError

N_GENES, N_SAMPLES = 2000, 12


def _frame(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        values,
        index=[f"G{i}" for i in range(values.shape[0])],
        columns=[f"S{j}" for j in range(values.shape[1])],
    )


def nb_counts(seed: int = 1, depth: float = 2e7) -> pd.DataFrame:
    """Genes x samples NB counts: lognormal gene proportions, ~20 M reads, 30% zero-expression genes."""
    rng = np.random.default_rng(seed)
    share = rng.lognormal(0.0, 2.0, N_GENES)
    share[rng.random(N_GENES) < 0.3] = 0.0
    share /= share.sum()
    lib = depth * rng.uniform(0.6, 1.4, N_SAMPLES)
    mu = share[:, None] * lib[None, :]
    counts = rng.negative_binomial(5.0, 5.0 / (5.0 + mu))
    return _frame(counts.astype(np.int64))


def log2_cpm_edger(counts: pd.DataFrame, prior: float = 2.0) -> pd.DataFrame:
    """edgeR ``cpm(log = TRUE, prior.count = 2)``: the prior scales with library size, zeros share a floor."""
    lib = counts.sum(axis=0).to_numpy(float)
    prior_adj = prior * lib / lib.mean()
    values = (counts.to_numpy(float) + prior_adj) / (lib + 2 * prior_adj) * 1e6
    return _frame(np.log2(values))


def cpm(counts: pd.DataFrame) -> pd.DataFrame:
    return counts / counts.sum(axis=0) * 1e6


# ---------------------------------------------------------------------------------------------- kinds


def test_each_value_type_is_recognised():
    counts = nb_counts()
    assert classify(counts).kind == INTEGER
    # Float-typed whole numbers are still counts.
    assert classify(counts.astype(float)).kind == INTEGER
    log2 = log2_cpm_edger(counts)
    ev = classify(log2)
    assert ev.kind == LOG and ev.minimum < 0 and ev.fraction_negative > 0.1
    # log2(x + 1) has no negatives (min 0) and tops out near 20: still log-scaled.
    plus1 = np.log2(counts + 1.0)
    ev = classify(plus1)
    assert ev.kind == LOG and ev.minimum == 0 and 15 < ev.maximum < LOG2_MAX
    c = cpm(counts)
    ev = classify(c)
    assert ev.kind == LINEAR and ev.cpm_like and 1e3 < ev.maximum
    # RSEM-like expected counts: most genes whole, a few fractional (multi-mapping reads).
    rng = np.random.default_rng(2)
    expected = counts.to_numpy(float)
    frac = rng.random(counts.shape) < 0.2
    expected[frac] += rng.uniform(0.05, 0.95, int(frac.sum()))
    ev = classify(_frame(expected))
    assert ev.kind == LINEAR and not ev.cpm_like


def test_edge_cases():
    counts = nb_counts()
    # A count matrix with a few huge values stays integer.
    huge = counts.copy()
    huge.iloc[:3, 0] = 10**9
    assert classify(huge).kind == INTEGER
    # Sparse, mostly zero: counts stay counts, their log2(x + 1) stays log-scaled.
    rng = np.random.default_rng(3)
    sparse = _frame(
        np.where(rng.random((N_GENES, N_SAMPLES)) < 0.95, 0, rng.poisson(40.0, (N_GENES, N_SAMPLES)))
    )
    assert classify(sparse).kind == INTEGER
    assert classify(np.log2(sparse + 1.0)).kind == LOG
    # Negatives that reach far above any log2 value, or negative whole numbers: neither scale.
    centred = cpm(counts) - cpm(counts).mean(axis=1).to_numpy()[:, None]
    assert classify(centred).kind == INVALID
    sentinel = counts.copy()
    sentinel.iloc[5, 2] = -1
    ev = classify(sentinel)
    assert ev.kind == INVALID and ev.first_negative == "column 'S2' row 'G5' (-1)"
    # A tiny table of expected counts with a small maximum is not mistaken for log values: its non-zero
    # values are mostly whole numbers.
    tiny = _frame(np.array([[5.4, 7.0, 0.0, 2.0], [9.0, 1.0, 3.0, 2.0]]))
    assert classify(tiny).kind == LINEAR


@pytest.mark.parametrize(("top", "kind"), [(LOG2_MAX - 0.1, LOG), (LOG2_MAX + 0.1, LINEAR)])
def test_log2_max_threshold(top, kind):
    rng = np.random.default_rng(4)
    values = rng.uniform(0.0, 20.0, (200, 6))
    values[0, 0] = top
    assert classify(_frame(values)).kind == kind


def test_detection_above_the_sample_floor():
    counts = nb_counts()
    log2 = log2_cpm_edger(counts).T  # samples x genes, as in the AnnData
    detected = detected_log2(log2)
    pd.testing.assert_frame_equal(detected, counts.T > 0)
    assert detected_log2(log2, ["G1", "G7"]).columns.tolist() == ["G1", "G7"]


# ------------------------------------------------------------------------------------------ mismatches


def test_message_names_file_declared_type_and_type_to_use():
    rng = np.random.default_rng(5)
    values = rng.uniform(0.5, 11.0, (100, 10))
    values[:12, :] = -4.3  # 12% of cells at the floor of a log2 CPM matrix
    values[50, 3] = 11.7
    with pytest.raises(InputError) as err:
        check_value_type(_frame(values), "counts", "GSE172114: matrix.csv.gz")
    msg = str(err.value)
    assert msg.startswith("GSE172114: matrix.csv.gz: declared `counts.value_type: counts`")
    assert "values look log2-scaled (min -4.3, max 11.7, 12% negative" in msg
    assert "set `counts.value_type: log2_normalised`" in msg


@pytest.mark.parametrize(
    ("make", "declared", "to_use"),
    [
        (lambda c: log2_cpm_edger(c), "counts", "log2_normalised"),
        (lambda c: log2_cpm_edger(c), "expected_counts", "log2_normalised"),
        (lambda c: log2_cpm_edger(c), "normalised", "log2_normalised"),
        (lambda c: np.log2(c + 1.0), "normalised", "log2_normalised"),
        (lambda c: c, "log2_normalised", "counts"),
        (lambda c: cpm(c), "log2_normalised", "normalised"),
        (lambda c: cpm(c), "counts", "normalised"),
        (lambda c: c + 0.5, "counts", "expected_counts"),
    ],
)
def test_mismatch_names_the_value_type_to_use(make, declared, to_use):
    table = make(nb_counts())
    with pytest.raises(
        InputError, match=rf"declared `counts.value_type: {declared}`.*`counts.value_type: {to_use}`"
    ):
        check_value_type(table, declared, "X: f.tsv")


@pytest.mark.parametrize(
    ("make", "declared"),
    [
        (lambda c: c, "counts"),
        (lambda c: c, "expected_counts"),
        (lambda c: c, "normalised"),  # rounded normalised values exist: build.normalised_values warns
        (lambda c: c + 0.5, "expected_counts"),
        (lambda c: cpm(c), "normalised"),
        (lambda c: log2_cpm_edger(c), "log2_normalised"),
        (lambda c: np.log2(c + 1.0), "log2_normalised"),
    ],
)
def test_matching_declarations_pass(make, declared):
    check_value_type(make(nb_counts()), declared, "X: f.tsv")


def test_invalid_tables_stop_whatever_is_declared():
    counts = nb_counts()
    centred = cpm(counts) - cpm(counts).mean(axis=1).to_numpy()[:, None]
    for declared in ("counts", "normalised", "log2_normalised"):
        with pytest.raises(InputError, match=r"X: f\.tsv: values have negatives.*first at column"):
            check_value_type(centred, declared, "X: f.tsv")


def test_unknown_value_type():
    with pytest.raises(InputError, match="not one of"):
        check_value_type(nb_counts(), "tpm", "X: f.tsv")


# ---------------------------------------------------------------------------------------------- real data


def test_gse293708_normalised_and_reconstructed_counts(shared_data):
    folder = shared_data / "GSE293708"
    norm = pd.read_csv(folder / "GSE293708_DESeq2_normalized_counts.csv.gz", index_col=0)
    norm = norm.drop(columns=["geneID", "Symbol"])
    raw = pd.read_csv(folder / "GSE293708_reconstructed_raw_counts.csv.gz", index_col=0).drop(
        columns="Symbol"
    )
    assert classify(norm).kind == LINEAR and classify(raw).kind == INTEGER
    assert classify(np.log2(norm + 1.0)).kind == LOG
    with pytest.raises(InputError, match="`counts.value_type: normalised`"):
        check_value_type(norm, "log2_normalised", "GSE293708: normalized_counts.csv")
    with pytest.raises(InputError, match="`counts.value_type: log2_normalised`"):
        check_value_type(np.log2(norm + 1.0), "normalised", "GSE293708: log.csv")


# ------------------------------------------------------------------------------------- through the build

SPEC = {
    "counts": {
        "source": "local",
        "gene_id": "symbol",
        "map_symbols": False,
        "value_type": "log2_normalised",
        "id_column": None,
    },
    "metadata": {"source": "sample_sheet", "sample_column": "sample_id"},
    "severity": {"field": "group", "severe": ["severe"], "mild": ["mild"], "exclude": []},
    "covariates": {},
}


def _write(tmp_path, table: pd.DataFrame, name: str = "counts.tsv"):
    counts_path, samples_path = tmp_path / name, tmp_path / "samples.tsv"
    table.to_csv(counts_path, sep="\t", index_label="gene")
    groups = ["severe" if j % 2 else "mild" for j in range(table.shape[1])]
    pd.DataFrame({"sample_id": table.columns, "group": groups}).to_csv(samples_path, sep="\t", index=False)
    return counts_path, samples_path


def test_build_keeps_log2_values_and_merges_duplicates_on_the_linear_scale(tmp_path):
    log2 = log2_cpm_edger(nb_counts()).round(6)
    log2.index = [*log2.index[:-1], "G0"]  # the last row shares the first row's symbol
    counts_path, samples_path = _write(tmp_path, log2)
    built = build_cohort("L", SPEC, counts_path, samples_path)
    adata = built.adata
    assert adata.X.dtype == np.float64 and adata.uns["value_type"] == "log2_normalised"
    x = pd.DataFrame(adata.X, index=adata.obs_names, columns=adata.var_names)
    assert x.min().min() < 0  # negatives kept, no second log, nothing clipped
    np.testing.assert_allclose(x["G5"], log2.loc["G5", x.index], atol=1e-9)
    merged = np.log2(np.exp2(log2.iloc[0]) + np.exp2(log2.iloc[-1]))
    np.testing.assert_allclose(x["G0"], merged[x.index], atol=1e-9)


@pytest.mark.parametrize(
    ("make", "declared", "to_use"),
    [
        (lambda c: log2_cpm_edger(c).round(6), "counts", "log2_normalised"),
        (lambda c: c, "log2_normalised", "counts"),
        (lambda c: log2_cpm_edger(c).round(6), "normalised", "log2_normalised"),
    ],
)
def test_build_stops_on_a_mismatch_naming_file_and_type(tmp_path, make, declared, to_use):
    counts_path, samples_path = _write(tmp_path, make(nb_counts()), "matrix.tsv")
    spec = {**SPEC, "counts": {**SPEC["counts"], "value_type": declared}}
    with pytest.raises(
        InputError, match=rf"^M: matrix\.tsv: declared .*{declared}.*set `counts.value_type: {to_use}`"
    ):
        build_cohort("M", spec, counts_path, samples_path)


@pytest.mark.e2e
def test_rule_build_cohort_stops_on_each_mismatch_and_leaves_no_output(tmp_path):
    """Each wrong declaration fails rule build_cohort with the type to use in its log; no output is left."""
    import shutil

    import yaml
    from workflow_runner import PROJECT_ROOT, run_snakemake

    counts = nb_counts()
    cases = {
        "log2_as_counts": (log2_cpm_edger(counts).round(6), "counts", "log2_normalised"),
        "counts_as_log2": (counts, "log2_normalised", "counts"),
        "log2_as_normalised": (log2_cpm_edger(counts).round(6), "normalised", "log2_normalised"),
    }
    config = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    template = config["cohorts"]["demo"]
    config["cohorts"] = {}
    for name, (table, declared, _) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        counts_path, samples_path = _write(folder, table, "matrix.tsv")
        cohort = yaml.safe_load(yaml.safe_dump(template))
        cohort["counts"].update({"path": str(counts_path), "value_type": declared})
        cohort["metadata"]["path"] = str(samples_path)
        cohort["severity"] = {"field": "group", "severe": ["severe"], "mild": ["mild"], "exclude": []}
        cohort["covariates"] = {}
        config["cohorts"][name] = cohort
    configfile = tmp_path / "mismatch.yaml"
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    workdir.mkdir()
    targets = [f"results/cohorts/{name}.h5ad" for name in cases]
    proc = run_snakemake(workdir, configfile, "--keep-going", *targets)
    assert proc.returncode != 0
    for name, (_, declared, to_use) in cases.items():
        assert not list((workdir / "results" / "cohorts").glob(f"{name}.*")), name
        log = (workdir / f"results/logs/build_cohort/{name}.log").read_text()
        assert f"{name}: matrix.tsv: declared `counts.value_type: {declared}`" in log
        assert f"set `counts.value_type: {to_use}`" in log
    shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
