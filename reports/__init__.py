"""Reports of a sweep: report.html for people, results.json, summary.md and junit.xml for machines.

    sweep.py     what a report shows, read from the store, the transfer analysis and coord_check.json
    plots.py     the figures (seaborn, PNG)
    html.py      the self-contained page (templates/report.html)
    results.py   results.json and a validator for its schema (results.schema.json)
    summary.py   summary.md
    junit.py     junit.xml
    build.py     write_report: all four files
    tables.py    plain-text tables for the terminal, markdown tables for summaries
"""
