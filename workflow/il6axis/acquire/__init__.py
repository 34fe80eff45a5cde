"""Acquire stage (rules/download.smk, rules/demo.smk): get the public inputs and read them into tables.

- ``geo``: GEO / NCBI names, folder layout, hosts and URLs (the rules import it for paths too);
- ``download``: HTTP transport with retries, verified atomic writes, local copies, ``DownloadSettings``;
- ``payload_checks``: is the file that arrived the data file (HTML page, gzip completeness, first line);
- ``series_listing``: what a series folder holds, for "did you mean" on a missing file;
- ``sources``: where each file comes from (host, mirror, local dir) and count sources in order of preference;
- ``download_records``: per-file records and the download manifest;
- ``table_files``: opening plain/gzipped text tables (separator, first lines);
- ``count_tables``: reading and validating count tables, integer / normalised values;
- ``sample_matching``: matching count columns to sample metadata;
- ``geo_metadata``: series matrices, sample sheets, typed age / sex;
- ``demo``: the seeded simulated cohort.
"""
