"""`selfmoa ab`: the A/B harness. Compare approaches on your own tasks through an optillm endpoint.

Modules, one job each: tasks (task files, bundled sets), scorers, judge (pairwise verdicts),
diversity (Vendi), endpoint (requests, lenient replies), runner (concurrency, resume), store
(results.jsonl, run.json), stats (scipy), summary, cost, plots, report, proxy (a local
`selfmoa serve`), app (the whole run), command (the click command). Importing this package does no
work and needs none of the `selfmoa[ab]` extra.
"""
