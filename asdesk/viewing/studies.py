"""Series grouped by study (StudyInstanceUID), for a study browser: study → its series."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StudyGroup:
    """Opened series that belong to one study.

    Attributes
    ----------
    study_uid : str
        (0020,000D); ``""`` for images without one (PNG, JPEG), which are never grouped.
    members : tuple of int
        Indices of the series, in the order they were opened.
    """

    study_uid: str
    members: tuple[int, ...]

    @property
    def is_study(self) -> bool:
        """Several series of one study: shown as a study with its series under it."""
        return bool(self.study_uid) and len(self.members) > 1


def group_by_study(study_uids: Sequence[str]) -> list[StudyGroup]:
    """Group opened series by StudyInstanceUID, keeping the order in which they were opened.

    Parameters
    ----------
    study_uids : sequence of str
        The study uid of each opened series (``""`` when unknown).

    Returns
    -------
    list of StudyGroup
        One group per study in order of first appearance; a series without a study uid is a group of its own.
    """
    groups: dict[str, list[int]] = {}
    order: list[str] = []
    for index, uid in enumerate(study_uids):
        key = uid.strip() if uid and uid.strip() else f"\0{index}"
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(index)
    return [StudyGroup("" if key.startswith("\0") else key, tuple(groups[key])) for key in order]
