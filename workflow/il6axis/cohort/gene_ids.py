"""Harmonise gene identifiers (Entrez GeneID, Ensembl, HGNC symbol) to official NCBI gene symbols.

Cohorts key their count tables differently (GSE152418 NCBI counts: Entrez; GSE172114: versioned
Ensembl; GSE155454 and GSE157103: symbols). Everything is mapped to the official ``Symbol`` of NCBI's
``Homo_sapiens.gene_info`` so cohorts and the IL-6 panel share one key. Rows mapping to the same
symbol are summed (read counts are additive); rows that cannot be mapped unambiguously are dropped.
Every drop and merge is counted in a :class:`MappingReport`, so nothing disappears silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from il6axis.acquire import geo
from il6axis.acquire.table_files import is_gzipped, require_file
from il6axis.errors import InputError

__all__ = [
    "GeneInfo",
    "MappingReport",
    "check_panel_presence",
    "load_gene_info",
    "map_to_symbols",
    "strip_ensembl_version",
]

log = logging.getLogger(__name__)

IdType = Literal["entrez", "ensembl", "symbol"]
_GENE_INFO_COLUMNS = [
    "#tax_id",
    "GeneID",
    "Symbol",
    "Synonyms",
    "dbXrefs",
    "type_of_gene",
    "Symbol_from_nomenclature_authority",
]
_N_EXAMPLES = 10


@dataclass(frozen=True)
class GeneInfo:
    """Lookup tables built from one NCBI ``gene_info`` file, restricted to one taxon.

    The output symbol of a gene is its HGNC symbol (``Symbol_from_nomenclature_authority``) when NCBI
    lists one, else NCBI's ``Symbol``. The two differ only for the 37 mitochondrial genes (NCBI ``COX2``
    vs HGNC ``MT-CO2``), and count tables and gene sets use the HGNC form. ``symbol_aliases`` maps the
    NCBI form to it. ``ensembl_ambiguous`` and ``synonym_ambiguous`` hold IDs naming several distinct
    symbols; they are deliberately absent from the unambiguous maps, so a lookup never guesses.
    """

    source: str
    tax_id: int
    entrez_to_symbol: dict[str, str]
    ensembl_to_symbol: dict[str, str]
    ensembl_ambiguous: dict[str, tuple[str, ...]]
    official_symbols: frozenset[str]
    symbol_aliases: dict[str, str]
    synonym_to_symbol: dict[str, str]
    synonym_ambiguous: dict[str, tuple[str, ...]]
    symbol_to_ensembl: dict[str, tuple[str, ...]]
    entrez_type: dict[str, str]

    @property
    def n_genes(self) -> int:
        """Number of GeneIDs loaded."""
        return len(self.entrez_to_symbol)

    def official_name_to_symbol(self) -> dict[str, str]:
        """Every official name (HGNC and NCBI form) -> output symbol."""
        return {**self.symbol_aliases, **{s: s for s in self.official_symbols}}


def load_gene_info(path: str | Path, tax_id: int = 9606) -> GeneInfo:
    """Load NCBI ``Homo_sapiens.gene_info(.gz)`` and build the ID maps (well under a second for 61k rows).

    Only rows of ``tax_id`` are kept (the human file also lists a few archaic-human genes). Ensembl
    IDs come from ``dbXrefs`` (``Ensembl:ENSG...``). A synonym is used only when it names exactly one
    gene symbol and is not itself an official name of any gene.
    """
    path = require_file(path, "NCBI gene_info", "gene_info")
    label = path.name
    table = _read_gene_info(path, label)
    table = table[table["#tax_id"].str.strip() == str(tax_id)]
    if table.empty:
        raise InputError(f"{label}: no rows with tax_id {tax_id}; use the gene_info file of that organism")
    gene_ids = table["GeneID"].str.strip().tolist()
    ncbi = table["Symbol"].str.strip().tolist()
    hgnc = table["Symbol_from_nomenclature_authority"].str.strip().tolist()
    symbols = [h if h not in ("", "-") else n for h, n in zip(hgnc, ncbi, strict=True)]
    official = frozenset(symbols)
    aliases = {n: s for n, s in zip(ncbi, symbols, strict=True) if n != s and n not in official}
    ens_unique, ens_ambiguous, sym_to_ens = _ensembl_maps(table["dbXrefs"].tolist(), symbols)
    syn_unique, syn_ambiguous = _synonym_maps(table["Synonyms"].tolist(), symbols, official | set(aliases))
    info = GeneInfo(
        source=str(path),
        tax_id=tax_id,
        entrez_to_symbol=dict(zip(gene_ids, symbols, strict=True)),
        ensembl_to_symbol=ens_unique,
        ensembl_ambiguous=ens_ambiguous,
        official_symbols=official,
        symbol_aliases=aliases,
        synonym_to_symbol=syn_unique,
        synonym_ambiguous=syn_ambiguous,
        symbol_to_ensembl=sym_to_ens,
        entrez_type=dict(zip(gene_ids, table["type_of_gene"].tolist(), strict=True)),
    )
    log.info(
        "%s: %d genes (tax_id %d); %d Ensembl IDs (%d ambiguous); %d usable synonyms (%d ambiguous)",
        label,
        info.n_genes,
        tax_id,
        len(ens_unique),
        len(ens_ambiguous),
        len(syn_unique),
        len(syn_ambiguous),
    )
    return info


def _read_gene_info(path: Path, label: str) -> pd.DataFrame:
    """The needed columns as strings; a wrong file fails naming the columns it should have."""
    try:
        return pd.read_csv(
            path,
            sep="\t",
            usecols=_GENE_INFO_COLUMNS,
            dtype=str,
            keep_default_na=False,
            engine="c",
            compression="gzip" if is_gzipped(path) else None,
            quoting=3,
        )
    except ValueError as exc:
        raise InputError(
            f"{label}: not an NCBI gene_info table ({exc}); expected tab-separated columns "
            f"{_GENE_INFO_COLUMNS}; download {geo.GENE_INFO_FOLDER}/{geo.GENE_INFO_NAME} from NCBI"
        ) from exc


def _split_by_ambiguity(
    key_to_symbols: dict[str, set[str]],
) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Keys naming one symbol -> that symbol; keys naming several -> sorted tuple of them."""
    unique: dict[str, str] = {}
    ambiguous: dict[str, tuple[str, ...]] = {}
    for key, syms in key_to_symbols.items():
        if len(syms) == 1:
            unique[key] = next(iter(syms))
        else:
            ambiguous[key] = tuple(sorted(syms))
    return unique, ambiguous


def _ensembl_maps(
    xrefs: list[str], symbols: list[str]
) -> tuple[dict[str, str], dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """Unambiguous Ensembl->symbol, ambiguous Ensembl->symbols, and symbol->Ensembl IDs."""
    per_id: dict[str, set[str]] = {}
    per_symbol: dict[str, list[str]] = {}
    for refs, symbol in zip(xrefs, symbols, strict=True):
        if "Ensembl:" not in refs:
            continue
        for ref in refs.split("|"):
            if ref.startswith("Ensembl:"):
                ens = ref[len("Ensembl:") :].strip()
                per_id.setdefault(ens, set()).add(symbol)
                per_symbol.setdefault(symbol, []).append(ens)
    unique, ambiguous = _split_by_ambiguity(per_id)
    return unique, ambiguous, {s: tuple(sorted(set(e))) for s, e in per_symbol.items()}


def _synonym_maps(
    synonyms: list[str], symbols: list[str], official_names: frozenset[str] | set[str]
) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Synonym maps; a synonym equal to any official name is never used (the official gene wins)."""
    per_syn: dict[str, set[str]] = {}
    for field_value, symbol in zip(synonyms, symbols, strict=True):
        if field_value in ("", "-"):
            continue
        for syn in field_value.split("|"):
            syn = syn.strip()
            if syn and syn != "-" and syn not in official_names:
                per_syn.setdefault(syn, set()).add(symbol)
    return _split_by_ambiguity(per_syn)


# ------------------------------------------------------------------------------------------ mapping
@dataclass
class MappingReport:
    """What happened to the rows of one table during ID harmonisation.

    Invariants: ``n_input = n_mapped + n_unmapped + n_ambiguous + n_par_y_dropped`` and
    ``n_output = n_mapped - n_merged_rows``. ``n_via_synonym`` counts mapped rows that needed a synonym;
    ``n_synonym_conflicts`` (part of ``n_ambiguous``) counts synonym rows dropped because their target
    symbol is also in the table under its official name.
    ``checked`` is False when symbols were kept without a gene_info check.
    """

    id_type: str
    n_input: int = 0
    n_mapped: int = 0
    n_unmapped: int = 0
    n_ambiguous: int = 0
    n_par_y_dropped: int = 0
    n_merged_rows: int = 0
    n_output: int = 0
    n_via_synonym: int = 0
    n_synonym_conflicts: int = 0
    n_version_stripped: int = 0
    checked: bool = True
    examples_unmapped: list[str] = field(default_factory=list)
    examples_ambiguous: list[str] = field(default_factory=list)
    examples_merged: list[str] = field(default_factory=list)
    examples_synonym: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """Plain dict (lists kept as lists), e.g. for JSON."""
        return asdict(self)

    def to_frame(self) -> pd.DataFrame:
        """Two-column ``metric``/``value`` frame for a TSV; example lists joined with ';'."""
        rows = [(k, ";".join(v) if isinstance(v, list) else v) for k, v in self.to_dict().items()]
        return pd.DataFrame(rows, columns=["metric", "value"])

    def summary(self) -> str:
        """One log line."""
        return (
            f"{self.id_type}: {self.n_input} rows -> {self.n_output} symbols; unmapped {self.n_unmapped}, "
            f"ambiguous {self.n_ambiguous}, PAR_Y dropped {self.n_par_y_dropped}, "
            f"merged {self.n_merged_rows}, "
            f"via synonym {self.n_via_synonym}" + ("" if self.checked else " (symbols not checked)")
        )


def strip_ensembl_version(ids: pd.Index | pd.Series) -> tuple[pd.Series, pd.Series]:
    """(unversioned IDs, is_PAR_Y mask): ``ENSG00000223972.5`` -> ``ENSG00000223972``.

    GENCODE lists pseudo-autosomal genes twice, the Y copy as ``ENSG...._PAR_Y``; those rows are flagged
    so the caller can drop them instead of double counting the X copy.
    """
    text = pd.Series(ids, dtype=object).astype(str).str.strip()
    par_y = text.str.upper().str.endswith("_PAR_Y")
    base = text.str.replace(r"(?i)_PAR_Y$", "", regex=True).str.replace(r"\.\d+$", "", regex=True)
    return base, par_y


def _examples(values: pd.Series) -> list[str]:
    return [str(v) for v in values.iloc[:_N_EXAMPLES]]


def map_to_symbols(
    counts: pd.DataFrame,
    id_type: IdType,
    gene_info: GeneInfo | None,
) -> tuple[pd.DataFrame, MappingReport]:
    """Re-key a gene x sample table by official gene symbol; sum rows that share a symbol.

    - ``entrez``: GeneID -> Symbol.
    - ``ensembl``: version suffix stripped, ``_PAR_Y`` rows dropped (counted), Ensembl -> Symbol via
      ``dbXrefs``; an Ensembl ID listed for genes with different symbols is dropped as ambiguous.
    - ``symbol``: official symbols kept; outdated ones mapped through unambiguous synonyms; ambiguous
      synonyms dropped. With ``gene_info=None`` symbols are kept unchecked (``report.checked=False``).

    Returns the summed table (index name ``symbol``, sorted) and the :class:`MappingReport`.
    """
    if id_type not in ("entrez", "ensembl", "symbol"):
        raise InputError(
            f"gene ID type {id_type!r} is not supported; use one of 'entrez', 'ensembl', 'symbol'"
        )
    if gene_info is None and id_type != "symbol":
        raise InputError(f"mapping {id_type} IDs needs the NCBI gene_info table; set `gene_info` in config")
    report = MappingReport(id_type=id_type, n_input=int(counts.shape[0]))
    ids = pd.Series(counts.index, dtype=object).astype(str).str.strip()
    par_y = pd.Series(False, index=ids.index)
    ambiguous = pd.Series(False, index=ids.index)
    via_synonym = pd.Series(False, index=ids.index)

    if gene_info is None:
        target = ids.where(ids != "")
        report.checked = False
    elif id_type == "entrez":
        target = ids.str.replace(r"\.0$", "", regex=True).map(gene_info.entrez_to_symbol)
    elif id_type == "ensembl":
        base, par_y = strip_ensembl_version(ids)
        report.n_version_stripped = int((base != ids.str.replace(r"(?i)_PAR_Y$", "", regex=True)).sum())
        target = base.map(gene_info.ensembl_to_symbol).where(~par_y)
        ambiguous = base.isin(gene_info.ensembl_ambiguous.keys()) & ~par_y
    else:
        official_target = ids.map(gene_info.official_name_to_symbol())
        official = official_target.notna()
        synonym = ids.map(gene_info.synonym_to_symbol).where(~official)
        # The source annotation saw these as two genes: a synonym landing on a symbol that is also in the
        # table under its official name is more likely a wrong alias than a renamed gene. Drop it.
        conflict = synonym.notna() & synonym.isin(set(official_target.dropna()))
        synonym = synonym.where(~conflict)
        target = official_target.fillna(synonym)
        via_synonym = synonym.notna()
        ambiguous = ~official & (ids.isin(gene_info.synonym_ambiguous.keys()) | conflict)
        report.n_synonym_conflicts = int(conflict.sum())

    mapped = target.notna().to_numpy()
    unmapped = ~mapped & ~ambiguous.to_numpy() & ~par_y.to_numpy()
    report.n_mapped = int(mapped.sum())
    report.n_par_y_dropped = int(par_y.sum())
    report.n_ambiguous = int(ambiguous.sum())
    report.n_unmapped = int(unmapped.sum())
    report.n_via_synonym = int(via_synonym.sum())
    report.examples_unmapped = _examples(ids[unmapped])
    report.examples_ambiguous = _examples(ids[ambiguous.to_numpy()])
    report.examples_synonym = [
        f"{a}->{b}"
        for a, b in zip(
            _examples(ids[via_synonym.to_numpy()]), _examples(target[via_synonym.to_numpy()]), strict=True
        )
    ]

    kept = counts.iloc[mapped]
    keys = target[mapped].to_numpy()
    summed = kept.groupby(keys, sort=True).sum()
    summed.index.name = "symbol"
    sizes = pd.Series(keys).value_counts()
    report.n_output = int(summed.shape[0])
    report.n_merged_rows = report.n_mapped - report.n_output
    report.examples_merged = sorted(map(str, sizes[sizes > 1].index))[:_N_EXAMPLES]
    log.info("%s", report.summary())
    return summed, report


def check_panel_presence(symbols: Iterable[str], panel: Iterable[str]) -> pd.DataFrame:
    """Which panel genes are in ``symbols``: columns ``symbol`` (panel order, deduplicated), ``present``."""
    available = {str(s) for s in symbols}
    ordered = list(dict.fromkeys(str(p).strip() for p in panel))
    return pd.DataFrame(
        {"symbol": ordered, "present": [p in available for p in ordered]},
    ).astype({"present": bool})
