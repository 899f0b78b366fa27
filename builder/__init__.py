"""builder: compile CUDA extensions of the LLM stack against a pinned torch, CUDA and GPU arch.

The library's surface (the CLI is a thin layer over it):

    from builder import BuildRequest, build, plan, load_settings
"""

__version__ = "0.1.0"

from builder.api import BuildRequest, PlanReport, RecipeInfo, build, plan, recipes
from builder.errors import BuilderError
from builder.pipeline import BuildResult
from builder.reporting import LoggingReporter, Reporter
from builder.settings import Settings, load_settings

__all__ = [
    "BuildRequest", "BuildResult", "BuilderError", "LoggingReporter", "PlanReport", "RecipeInfo", "Reporter",
    "Settings", "__version__", "build", "load_settings", "plan", "recipes",
]
