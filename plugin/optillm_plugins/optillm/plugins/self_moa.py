"""optillm plugin: Self-MoA (selfmoa). Served by stock optillm started in `selfmoa plugins-dir`."""

from selfmoa.entry import make_run

SLUG = "self_moa"
run = make_run(SLUG)
