"""`paradigm compare`: the guide's "Key Differences" table, measured on a running service.

plan.py says what to measure, experiments.py measures it through ParadigmClient, records.py
holds the results (JSON), verdicts.py judges each row of the guide's table, plots.py and
report.py write the PNGs and report.md; driver.py ties them together. docs/compare.md
explains the method and the verdict rules.
"""
