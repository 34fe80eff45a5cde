"""Gene sets the workflow scores: the shipped IL-6 axis sets plus optional user-supplied sets.

Built-in sets are read from the TSV resources in ``resources/genesets/`` (see the README there for sources
and licences) rather than hard-coded, so the shipped files stay the single source of truth and their licence
notices travel with them. User sets come as GMT (``name<TAB>description<TAB>gene...``) or as a long TSV
(``set``/``gene`` or ``set_name``/``symbol`` columns). Every set holds gene *symbols*, the var index of the
cohort AnnData; :func:`genes_present` reports how much of a set a cohort covers.

The orientation markers (role ``orientation`` of the marker file) must be independent of the genes under
test: the whole panel file and every scored IL-6 pathway set (:data:`SETS_UNDER_TEST`). Loading the sets
enforces this, for shipped and user-supplied files alike
(:func:`il6axis.analysis.orientation.check_independent`).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from il6axis.analysis.orientation import check_independent
from il6axis.errors import InputError

# The receptor-kinase-STAT3-feedback chain the project is about, in signalling order: always labelled and
# shown in figures and headlines, whatever its p-value.
CORE_SIGNALLING: tuple[str, ...] = ("IL6", "IL6R", "IL6ST", "JAK1", "JAK2", "TYK2", "STAT3", "SOCS3")

__all__ = [
    "BUILTIN_SETS",
    "BuiltinSpec",
    "GeneSet",
    "SETS_UNDER_TEST",
    "genes_present",
    "load_builtin_sets",
    "load_gene_sets",
    "read_user_sets",
    "tables_under_test",
]

PROJECT_LICENCE = "project's own"


@dataclass(frozen=True)
class GeneSet:
    """One named gene set: ordered, de-duplicated symbols plus where it came from and under which licence."""

    name: str
    genes: tuple[str, ...]
    source: str
    licence: str
    description: str


@dataclass(frozen=True)
class BuiltinSpec:
    """How to cut one built-in set out of a resource file.

    ``file`` is relative to ``resources/genesets``. When ``column`` is given, only rows whose ``column``
    equals ``value`` are kept (e.g. ``tier == core``); otherwise the whole file is the set.
    """

    file: str
    column: str | None
    value: str | None
    source: str
    licence: str
    description: str


PANEL_FILE = "il6_core.tsv"
MARKERS_FILE = "severity_sanity_markers.tsv"

BUILTIN_SETS: dict[str, BuiltinSpec] = {
    "il6_core_signalling": BuiltinSpec(
        PANEL_FILE,
        "tier",
        "core",
        "curated panel il6_core.tsv (domain brief genesets.md §2), tier core",
        PROJECT_LICENCE,
        "IL-6 receptor, sheddases, JAKs, STATs and feedback inhibitors (SOCS1/3, PIAS3, PTPN1/2/11, CBL)",
    ),
    "stat3_targets": BuiltinSpec(
        PANEL_FILE,
        "tier",
        "STAT3-target",
        "curated panel il6_core.tsv (domain brief genesets.md §2), tier STAT3-target",
        PROJECT_LICENCE,
        "STAT3 transcriptional read-outs (mostly Reactome STAT3-target reactions), scored apart from the "
        "hallmark",
    ),
    "reactome_il6_signaling": BuiltinSpec(
        "reactome_il6.tsv",
        "set_id",
        "R-HSA-1059683",
        "Reactome R-HSA-1059683 Interleukin-6 signaling (ReactomePathways.gmt 2021-12-14)",
        "CC0 1.0",
        "Reactome Interleukin-6 signaling: receptor, JAK/STAT and SOCS3/PTPN11/CBL machinery",
    ),
    "reactome_il6_family": BuiltinSpec(
        "reactome_il6.tsv",
        "set_id",
        "R-HSA-6783589",
        "Reactome R-HSA-6783589 Interleukin-6 family signaling (ReactomePathways.gmt 2021-12-14)",
        "CC0 1.0",
        "Reactome Interleukin-6 family signaling: IL-6 signaling plus the OSM, LIF, IL-11, CNTF, CT-1, CLC "
        "and IL-31 arms",
    ),
    "hallmark_il6_jak_stat3": BuiltinSpec(
        "hallmark_il6_jak_stat3.msigdb_v7.5.1.tsv",
        None,
        None,
        "MSigDB v7.5.1 HALLMARK_IL6_JAK_STAT3_SIGNALING (Liberzon et al. 2015, Cell Systems 1:417-425)",
        "CC BY 4.0",
        "Genes up-regulated by IL6 via STAT3; partly an interferon/inflammation score (no IL6R/JAK1/JAK2)",
    ),
    "kegg_medicus_il6_family_jak_stat": BuiltinSpec(
        "kegg_medicus_n01556.msigdb_2025.1.tsv",
        None,
        None,
        "KEGG MEDICUS N01556 via MSigDB v2025.1.Hs "
        "(KEGG_MEDICUS_REFERENCE_IL6_FAMILY_TO_JAK_STAT_SIGNALING_PATHWAY)",
        "CC BY-SA 4.0",
        "IL-6 family to JAK-STAT network; broader than IL-6 (IL-4/IL-13, IL-27, STAT6), "
        "lacks SOCS3/PTPN11/CBL",
    ),
    "neutrophil_score": BuiltinSpec(
        MARKERS_FILE,
        "role",
        "neutrophil_score",
        "severity_sanity_markers.tsv (domain brief genesets.md §7), role neutrophil_score",
        PROJECT_LICENCE,
        "Neutrophil abundance proxy (CSF3R, FCGR3B, CXCR2) to read IL-6 scores against cell composition",
    ),
}


# The IL-6 sets whose scores and genes the report's conclusions rest on. The orientation markers share no
# gene with them or with the panel file; the neutrophil score is a composition covariate, not under test.
SETS_UNDER_TEST: tuple[str, ...] = tuple(name for name in BUILTIN_SETS if name != "neutrophil_score")


def _dedupe(genes: Iterable[str]) -> tuple[str, ...]:
    """Keep first occurrences in order: a gene listed twice must not weigh twice in a score."""
    return tuple(dict.fromkeys(genes))


def _read_resource(path: Path, label: str) -> pd.DataFrame:
    """Read one resource TSV as strings; missing files name the config key or folder to fix."""
    if not path.is_file():
        raise InputError(
            f"{label}: gene-set file {path} not found; restore it from the repository or fix the path"
        )
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "symbol" not in table.columns:
        raise InputError(
            f"{path}: column 'symbol' missing (found {list(table.columns)}); add a 'symbol' column"
        )
    return table


def _resource_path(
    folder: Path, file: str, overrides: dict[str, str | Path | None]
) -> tuple[Path, str | None]:
    """Where a resource file is read from, and the config key that replaced it (None: shipped file)."""
    override = overrides.get(file)
    if not override:
        return folder / file, None
    return Path(override), "genesets.panel" if file == PANEL_FILE else "genesets.markers"


def _file_label(path: Path, key: str | None) -> str:
    return f"{path} (config {key})" if key else str(path)


def _under_test(
    folder: Path,
    overrides: dict[str, str | Path | None],
    read: Callable[[Path, str], pd.DataFrame],
) -> dict[str, pd.DataFrame]:
    """File label -> table of every file that defines a set under test (the whole panel file included)."""
    tables: dict[str, pd.DataFrame] = {}
    for name in SETS_UNDER_TEST:
        path, key = _resource_path(folder, BUILTIN_SETS[name].file, overrides)
        label = _file_label(path, key)
        if label not in tables:
            tables[label] = read(path, f"built-in gene set {name!r}" + (f" (config {key})" if key else ""))
    return tables


def tables_under_test(
    resources_dir: str | Path, *, panel_path: str | Path | None = None
) -> dict[str, pd.DataFrame]:
    """The genes under test, per file: the panel (``panel_path`` or the shipped ``il6_core.tsv``) and the
    files of the scored IL-6 pathway sets, as file label -> table with ``symbol`` (and ``ensembl_gene_id``
    where the file has it). Pass it to :func:`il6axis.analysis.orientation.load_markers` to check
    independence."""
    return _under_test(Path(resources_dir) / "genesets", {PANEL_FILE: panel_path}, _read_resource)


def load_builtin_sets(
    resources_dir: Path,
    *,
    panel_path: str | Path | None = None,
    markers_path: str | Path | None = None,
) -> dict[str, GeneSet]:
    """Build every set of :data:`BUILTIN_SETS` from the files in ``resources_dir / "genesets"``.

    ``resources_dir`` is the repository's ``resources/`` folder. ``panel_path`` / ``markers_path`` replace
    the shipped ``il6_core.tsv`` / ``severity_sanity_markers.tsv`` (config ``genesets.panel`` /
    ``genesets.markers``), so a user's edited panel also defines the tier-based sets. An empty selection
    is an error, not a silent empty score, and so is an orientation marker that is also a gene under test
    (the error names the marker file, the overlapping file and the genes).
    """
    folder = Path(resources_dir) / "genesets"
    overrides = {PANEL_FILE: panel_path, MARKERS_FILE: markers_path}
    cache: dict[Path, pd.DataFrame] = {}

    def read(path: Path, label: str) -> pd.DataFrame:
        if path not in cache:
            cache[path] = _read_resource(path, label)
        return cache[path]

    sets: dict[str, GeneSet] = {}
    for name, spec in BUILTIN_SETS.items():
        path, key = _resource_path(folder, spec.file, overrides)
        label = f"built-in gene set {name!r}" + (f" (config {key})" if key else "")
        table = read(path, label)
        if spec.column is not None:
            if spec.column not in table.columns:
                raise InputError(
                    f"{path}: column {spec.column!r} missing (found {list(table.columns)}); "
                    f"it defines {label}"
                )
            table = table[table[spec.column] == spec.value]
        genes = _dedupe(s.strip() for s in table["symbol"] if s.strip())
        if not genes:
            where = f"rows with {spec.column} == {spec.value!r}" if spec.column else "rows"
            raise InputError(f"{path}: no {where}, so {label} would be empty; fix the file")
        sets[name] = GeneSet(name, genes, spec.source, spec.licence, spec.description)
    markers_file, markers_key = _resource_path(folder, MARKERS_FILE, overrides)
    check_independent(
        read(markers_file, "orientation markers"),
        _file_label(markers_file, markers_key),
        _under_test(folder, overrides, read),
    )
    return sets


def _open_text(path: Path):
    """Open a text file, gunzipping ``.gz`` files; utf-8-sig drops a BOM that Excel exports prepend."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return path.open(encoding="utf-8-sig")


def _read_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, tab-split fields) for every non-blank line; line numbers feed error messages."""
    try:
        with _open_text(path) as handle:
            # Split on \n only: str.splitlines() also breaks on rare Unicode separators and would
            # shift the line numbers quoted in error messages.
            raw = [line.rstrip("\r") for line in handle.read().split("\n")]
    except FileNotFoundError:
        raise InputError(
            f"user gene-set file {path} not found; fix genesets.user_files in the config"
        ) from None
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise InputError(
            f"{path}: cannot be read as UTF-8 text ({exc}); supply a plain or gzipped GMT/TSV"
        ) from exc
    return [(i, [f.strip() for f in line.split("\t")]) for i, line in enumerate(raw, 1) if line.strip()]


# Long-TSV header pairs (set column, gene column), checked in order; lower-cased comparison.
_TSV_COLUMNS = (("set", "gene"), ("set_name", "symbol"))


def _tsv_columns(header: list[str]) -> tuple[int, int] | None:
    """Indices of the (set, gene) columns if ``header`` is a long-TSV header, else None."""
    lowered = [h.lower() for h in header]
    for set_col, gene_col in _TSV_COLUMNS:
        if set_col in lowered and gene_col in lowered:
            return lowered.index(set_col), lowered.index(gene_col)
    return None


def _parse_gmt(path: Path, lines: list[tuple[int, list[str]]]) -> dict[str, GeneSet]:
    sets: dict[str, GeneSet] = {}
    first_line: dict[str, int] = {}
    for number, fields in lines:
        name = fields[0]
        if not name:
            raise InputError(f"{path} line {number}: empty set name; the first GMT field must name the set")
        genes = _dedupe(g for g in fields[2:] if g)
        if not genes:
            raise InputError(
                f"{path} line {number}: set {name!r} has no genes; "
                "GMT lines are name<TAB>description<TAB>gene..."
            )
        if name in sets:
            raise InputError(
                f"{path} line {number}: duplicate set name {name!r} (first on line {first_line[name]}); "
                "rename or merge the sets"
            )
        description = fields[1] if len(fields) > 1 else ""
        first_line[name] = number
        sets[name] = GeneSet(name, genes, f"user file {path.name}", "user-supplied", description)
    return sets


def _parse_long_tsv(
    path: Path, lines: list[tuple[int, list[str]]], set_idx: int, gene_idx: int
) -> dict[str, GeneSet]:
    """Long format: one row per (set, gene); a set's rows need not be contiguous."""
    header = lines[0][1]
    lowered = [h.lower() for h in header]
    desc_idx = lowered.index("description") if "description" in lowered else None
    members: dict[str, list[str]] = {}
    descriptions: dict[str, str] = {}
    for number, fields in lines[1:]:
        if len(fields) != len(header):
            raise InputError(
                f"{path} line {number}: {len(fields)} fields but the header has {len(header)}; "
                "fix the row (tab-separated)"
            )
        name, gene = fields[set_idx], fields[gene_idx]
        if not name or not gene:
            missing = header[set_idx] if not name else header[gene_idx]
            raise InputError(
                f"{path} line {number}: empty {missing!r}; every row needs a set name and a gene"
            )
        members.setdefault(name, []).append(gene)
        if desc_idx is not None and fields[desc_idx] and name not in descriptions:
            descriptions[name] = fields[desc_idx]
    if not members:
        raise InputError(
            f"{path}: header only, no gene rows; add rows or remove the file from genesets.user_files"
        )
    return {
        name: GeneSet(
            name, _dedupe(genes), f"user file {path.name}", "user-supplied", descriptions.get(name, "")
        )
        for name, genes in members.items()
    }


def read_user_sets(path: str | Path) -> dict[str, GeneSet]:
    """Read user gene sets from a GMT or long-TSV file (optionally gzipped).

    Format detection: a ``.gmt``/``.gmt.gz`` name means GMT (checked first, since a GMT line may list the
    gene SET); otherwise a first line containing the columns ``set`` and ``gene`` (or ``set_name`` and
    ``symbol``) means long TSV; anything else is refused rather than guessed, because a mis-read file would
    silently produce wrong sets.
    """
    path = Path(path)
    lines = _read_lines(path)
    if not lines:
        raise InputError(f"{path}: file is empty; add gene sets or remove it from genesets.user_files")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gmt"] or suffixes[-2:] == [".gmt", ".gz"]:
        return _parse_gmt(path, lines)
    columns = _tsv_columns(lines[0][1])
    if columns is not None:
        return _parse_long_tsv(path, lines, *columns)
    raise InputError(
        f"{path}: unknown gene-set format; use a .gmt file (name<TAB>description<TAB>genes...) "
        f"or a TSV whose header has columns set/gene or set_name/symbol (first line found: {lines[0][1][:5]})"
    )


def load_gene_sets(
    resources_dir: Path,
    user_files: list[str],
    *,
    panel_path: str | Path | None = None,
    markers_path: str | Path | None = None,
) -> dict[str, GeneSet]:
    """Built-in sets followed by the sets of every user file, in config order.

    A user set may not reuse a built-in name or a name from another user file: silently replacing, say,
    ``hallmark_il6_jak_stat3`` would change what a reported score means.
    """
    sets = load_builtin_sets(resources_dir, panel_path=panel_path, markers_path=markers_path)
    origin = dict.fromkeys(sets, "built-in")
    for file in user_files:
        for name, gene_set in read_user_sets(file).items():
            if name in sets:
                where = "a built-in set" if origin[name] == "built-in" else f"a set in {origin[name]}"
                raise InputError(f"{file}: set name {name!r} is already used by {where}; rename the user set")
            sets[name] = gene_set
            origin[name] = str(file)
    return sets


def genes_present(gene_set: GeneSet, symbols: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split a set's genes into (present, missing) among ``symbols``, both in the set's order.

    Used to report coverage: a score over 3 of 27 genes must not read like one over all 27.
    """
    available = set(symbols)
    present = [g for g in gene_set.genes if g in available]
    missing = [g for g in gene_set.genes if g not in available]
    return present, missing
