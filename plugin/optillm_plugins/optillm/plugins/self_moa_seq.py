"""optillm plugin: Self-MoA-Seq (selfmoa). Served by stock optillm started in `selfmoa plugins-dir`."""

from selfmoa.entry import make_run

SLUG = "self_moa_seq"
run = make_run(SLUG)
