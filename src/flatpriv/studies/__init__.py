"""Studies: one module per reproduction of science.md §6 (claims, settings, stages) and the shared runner.

What lives here: each study declares its claims (science.md §6.1 wording and verdict rule), its default and
``--quick`` settings and its stages; the runner executes the stages into one run directory and writes the report.

Imports: anything below it (``analyses``, ``pools``, ``train``, ``step``, ``privacy``, ``data``, ``models``,
``results``, ``plots``, the array-only estimators); never ``cli``.
"""
