"""optillm plugin: Mixed-MoA-Seq (selfmoa). Served by stock optillm started in `selfmoa plugins-dir`."""

from selfmoa.entry import make_run

SLUG = "mixed_moa_seq"
run = make_run(SLUG)
