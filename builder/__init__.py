"""builder: compile CUDA extensions of the LLM stack against a pinned torch, CUDA and GPU arch.

The library's surface (the CLI is a thin layer over it):

    from builder import BuildRequest, build, plan, load_settings

A build's compilers end when the call ends, whichever way; `children_end_with_builder()` around
your own code also turns SIGTERM into the same clean exit as Ctrl-C (KeyboardInterrupt):

    with children_end_with_builder():
        build(BuildRequest("causal-conv1d", archs=("86",)))
"""

__version__ = "0.1.0"

from builder.api import BuildRequest, PlanReport, RecipeInfo, build, plan, recipes
from builder.errors import BuilderError
from builder.lifetime import Interrupted, children_end_with_builder
from builder.pipeline import BuildResult
from builder.reporting import LoggingReporter, Reporter
from builder.settings import Settings, load_settings

__all__ = [
    "BuildRequest", "BuildResult", "BuilderError", "Interrupted", "LoggingReporter", "PlanReport", "RecipeInfo",
    "Reporter", "Settings", "__version__", "build", "children_end_with_builder", "load_settings", "plan", "recipes",
]
