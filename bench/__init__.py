"""Benchmarks against the budgets of DESIGN.md section 8: ``make bench`` runs them all through
``bench/run.py`` and writes ``bench/results.md``. They measure; the table compares."""
