"""Layer 3: the work the GUI, ``asdesk analyze``, ``asdesk screen`` and the self-test share.

Plain functions with ``progress`` (:class:`~asdesk.core.ProgressSink`) and ``cancel``
(:class:`~asdesk.core.CancelToken`) handles: no Qt, no tqdm, no printing (DESIGN.md, "One flow, four entry
points"). Loaded models are kept in an :class:`EngineCache`.
"""

from asdesk.tasks.analysis import (
    analyze_image,
    analyze_path,
    analyze_records,
    analyze_series,
    read_path,
    study_decision,
)
from asdesk.tasks.engines import EngineCache, default_engines
from asdesk.tasks.screening import (
    ScreeningCancelledError,
    ScreeningError,
    ScreeningSummary,
    report_name,
    screen_folder,
)

__all__ = [
    "EngineCache",
    "ScreeningCancelledError",
    "ScreeningError",
    "ScreeningSummary",
    "analyze_image",
    "analyze_path",
    "analyze_records",
    "analyze_series",
    "default_engines",
    "read_path",
    "report_name",
    "screen_folder",
    "study_decision",
]
