"""Great Expectations suites as code, one builder per asset (see docs/validation.md).

- ``expectations.run.validate(settings, assets)``: run the suites, keep Data Docs under
  ``<data_dir>/gx/``, append ``monitoring.validation_results``;
- ``expectations.run.validate_frame(settings, asset, frame, expectations, relation=...)``:
  the same for a data frame a caller holds (the monitor's current window);
- ``expectations.suites``: the builders (``raw``, ``staging``, ``core``, ``features``,
  ``predictions``) and the critical/warning marking; ``expectations.suites.monitoring``
  derives drift warnings from a reference sample (not a warehouse asset);
- ``expectations.declared``: what dbt's manifest and the warehouse declare about a relation;
- ``expectations.gx_duckdb``: the adapter that runs GX's SQL datasource on DuckDB;
- ``expectations.unique_key``: a one-GROUP-BY uniqueness expectation.

Nothing is imported here: Great Expectations takes seconds to import.
"""
