"""optillm plugin: Mixed-MoA (selfmoa). Served by stock optillm started in `selfmoa plugins-dir`."""

from selfmoa.entry import make_run

SLUG = "mixed_moa"
run = make_run(SLUG)
