"""Offline OpenAI-compatible simulator: tests, the demo and the benchmarks run against it.

It is a simulator: quality numbers come from a profile, not from any model. Importing this package
does no work; the profile and task files are read when asked for.
"""

from .answers import extract_answer
from .profile import ModelProfile, Profile, load_profile
from .runner import BackgroundSim, serve
from .server import build_app
from .tasks import TASK_SETS, Task, load_tasks

__all__ = [
    "TASK_SETS",
    "BackgroundSim",
    "ModelProfile",
    "Profile",
    "Task",
    "build_app",
    "extract_answer",
    "load_profile",
    "load_tasks",
    "serve",
]
