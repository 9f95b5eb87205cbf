"""Layer 3: the work the GUI, ``asdesk analyze``, ``asdesk screen`` and the self-test share.

Plain functions with ``progress`` (:class:`~asdesk.core.ProgressSink`) and ``cancel``
(:class:`~asdesk.core.CancelToken`) handles: no Qt, no tqdm, no printing (DESIGN.md, "One flow, four entry
points"). Loaded models are kept in an :class:`EngineCache`.
"""

from asdesk.tasks.analysis import (
    analyze_batch,
    analyze_image,
    analyze_path,
    analyze_path_each,
    analyze_records,
    analyze_series,
    read_path,
)
from asdesk.tasks.decision import calibrate, judge, redecide, study_decision, study_result
from asdesk.tasks.dicom_export import export_dicom, reader_decision_for
from asdesk.tasks.engines import EngineCache, default_engines
from asdesk.tasks.gates import (
    NoPackAcceptsError,
    SeveralPacksAcceptError,
    choose_pack,
    metadata_reasons,
    mr_plane,
    mr_sequence,
    pack_for,
    packs_for_each,
)
from asdesk.tasks.screening import (
    ScreeningCancelledError,
    ScreeningError,
    ScreeningSummary,
    report_name,
    screen_folder,
)

__all__ = [
    "EngineCache",
    "NoPackAcceptsError",
    "SeveralPacksAcceptError",
    "ScreeningCancelledError",
    "ScreeningError",
    "ScreeningSummary",
    "analyze_batch",
    "analyze_image",
    "analyze_path",
    "analyze_path_each",
    "analyze_records",
    "analyze_series",
    "calibrate",
    "choose_pack",
    "default_engines",
    "export_dicom",
    "judge",
    "metadata_reasons",
    "mr_plane",
    "mr_sequence",
    "pack_for",
    "packs_for_each",
    "read_path",
    "reader_decision_for",
    "redecide",
    "report_name",
    "screen_folder",
    "study_decision",
    "study_result",
]
