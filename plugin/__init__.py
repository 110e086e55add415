"""selfmoa: Self-MoA, Mixed-MoA and their Seq variants as optillm approaches."""

__version__ = "0.1.0"
