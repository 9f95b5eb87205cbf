"""The reader's decision: confirm or override the AI finding, add a note; saved to disk at once.

The panel sits in the Results dock under the finding. The reader chooses *Agree with the AI* or *Disagree:
positive / negative / indeterminate* (only *Positive / Negative / Indeterminate* when the AI gave no finding) and
may write a note. Every choice is written to disk immediately, the note half a second after typing stops (and
when the case changes or the window closes), by :class:`asdesk.core.reader_decision.ReaderDecisionStore`: one
JSON file per case in the user data folder, keyed by the case's SOP Instance UID, Series Instance UID or file
SHA-256. Reopening the case, in this window or a new one, shows the decision again. The reader's name is a setting,
asked once (:func:`ask_reader_name`), and recorded with the time of every decision.
"""

from __future__ import annotations

import getpass
import html
import logging
from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QPlainTextEdit,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from asdesk.core import AnalysisResult, SeriesResult
from asdesk.core.reader_decision import (
    AiFindingRef,
    ReaderDecision,
    ReaderDecisionStore,
    case_key,
    format_timestamp,
)
from asdesk.core.settings import Settings

LOGGER = logging.getLogger(__name__)

__all__ = ["NOTE_SAVE_DELAY_MS", "ReaderDecisionPanel", "ask_reader_name"]

NOTE_SAVE_DELAY_MS = 500
"""The note is saved this long after the last keystroke (and at once when the case changes or the window closes)."""
_CHOICES = ("agree", "positive", "negative", "indeterminate")


def ask_reader_name(parent: QWidget | None, settings: Settings, force: bool = False, dialogs: bool = True) -> str:
    """The reader's name from the settings, asked once (and saved at once) when it is not known yet.

    Parameters
    ----------
    parent : QWidget or None
        Parent of the dialog.
    settings : Settings
        ``reader_name`` is read and, after asking, written and saved.
    force : bool
        Ask even when a name is known (to change it).
    dialogs : bool
        False never shows a dialog (tests, headless): the known name, or ``""``.

    Returns
    -------
    str
        The name; ``""`` when the reader gave none (the decision is then recorded as by an unnamed reader).
    """
    name = settings.reader_name.strip()
    if (name and not force) or not dialogs:
        return name
    try:
        default = name or getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        default = name
    text, accepted = QInputDialog.getText(
        parent, "Reader's name", "Your name, recorded with each reader's decision and shown in the reports:",
        text=default)
    if accepted and text.strip():
        settings.reader_name = " ".join(text.split())
        try:
            settings.save()
        except OSError as error:
            LOGGER.warning("could not save the settings: %s", error)
    return settings.reader_name.strip()


class ReaderDecisionPanel(QGroupBox):
    """Confirm or override the AI finding of the case shown, with a note; autosaved.

    Parameters
    ----------
    name_provider : callable, optional
        ``name_provider(force: bool) -> str``: the reader's name (asking when needed). Default: no name.
    store : ReaderDecisionStore, optional
        Where decisions are saved; default the user's folder.
    reader_name : str
        The name known at start (shown; the provider is asked when a decision is recorded).
    parent : QWidget, optional

    Signals
    -------
    sig_decision_saved(ReaderDecision)
        A decision (or a note) was written to disk.
    sig_save_failed(str)
        Writing failed (the message says why); the panel shows it too.
    """

    sig_decision_saved = Signal(object)
    sig_save_failed = Signal(str)

    def __init__(self, name_provider: Callable[[bool], str] | None = None, store: ReaderDecisionStore | None = None,
                 reader_name: str = "", parent: QWidget | None = None) -> None:
        super().__init__("Reader's decision", parent)
        self.store = store or ReaderDecisionStore()
        self.name_provider = name_provider or (lambda _force: "")
        self.reader_name = reader_name
        self._key: str | None = None
        self._ai: AiFindingRef | None = None
        self._source = ""
        self._labels = ("", "")
        self._decision: ReaderDecision | None = None
        self._note_timer = QTimer(self)
        self._note_timer.setSingleShot(True)
        self._note_timer.setInterval(NOTE_SAVE_DELAY_MS)
        self._note_timer.timeout.connect(self._save_note)

        self.ai_label = QLabel("")
        self.ai_label.setWordWrap(True)
        self.ai_label.setTextFormat(Qt.TextFormat.RichText)
        self.group = QButtonGroup(self)
        self.buttons: dict[str, QRadioButton] = {}
        grid = QVBoxLayout()
        grid.setSpacing(2)
        for choice in _CHOICES:
            button = QRadioButton()
            button.setObjectName(f"reader_{choice}")
            self.buttons[choice] = button
            self.group.addButton(button)
            grid.addWidget(button)
        self.group.buttonClicked.connect(self._on_choice)
        self.note_edit = QPlainTextEdit()
        self.note_edit.setPlaceholderText("Note (saved automatically)")
        self.note_edit.setMaximumHeight(70)
        self.note_edit.textChanged.connect(self._on_note_changed)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setTextFormat(Qt.TextFormat.RichText)
        self.status_label.setStyleSheet("color: #444444;")
        self.name_label = QLabel("")
        self.name_label.setTextFormat(Qt.TextFormat.RichText)
        self.name_label.linkActivated.connect(lambda _link: self._change_name())
        self.name_label.setStyleSheet("color: #444444;")
        name_row = QHBoxLayout()
        name_row.setContentsMargins(0, 0, 0, 0)
        name_row.addWidget(self.name_label, 1)

        layout = QVBoxLayout(self)
        layout.addWidget(self.ai_label)
        layout.addLayout(grid)
        layout.addWidget(self.note_edit)
        layout.addWidget(self.status_label)
        layout.addLayout(name_row)
        self.clear_case()

    # ------------------------------------------------------------------------------------------- cases
    def clear_case(self, message: str = "Analyse a case to record your decision on its AI finding.") -> None:
        """No case (or no AI result yet): nothing can be decided; a pending note is saved first."""
        self.flush()
        self._key = None
        self._ai = None
        self._decision = None
        self.ai_label.setText(f"<i>{html.escape(message)}</i>")
        self._show_choices(None)
        self.note_edit.blockSignals(True)
        self.note_edit.setPlainText("")
        self.note_edit.blockSignals(False)
        self.setEnabled(False)
        self.status_label.setText("")
        self._show_name()

    def set_result(self, result: AnalysisResult | SeriesResult, source: str = "") -> None:
        """Show the decision on the case of ``result`` (restored from disk) beside its AI finding.

        Parameters
        ----------
        result : AnalysisResult or SeriesResult
            As displayed (judged at the operating point shown).
        source : str
            The case's file or folder (recorded for people; the key identifies the case).
        """
        slices = result.slices if isinstance(result, SeriesResult) else (result,)
        try:
            key = case_key([item.record.metadata for item in slices])
        except (OSError, ValueError) as error:
            self.clear_case(f"The case cannot be identified to save a decision ({error}).")
            return
        model = slices[0].model
        self.set_case(key, AiFindingRef.from_result(result), source, (model.positive_label, model.negative_label))

    def set_case(self, key: str, ai: AiFindingRef, source: str = "", labels: tuple[str, str] = ("", "")) -> None:
        """Show the decision saved under ``key`` (if any) beside the AI finding ``ai``.

        Parameters
        ----------
        key : str
            :func:`asdesk.core.reader_decision.case_key` of the case.
        ai : AiFindingRef
            The AI finding as now shown.
        source : str
        labels : tuple of str
            The card's positive and negative labels (for the buttons and texts).
        """
        if key != self._key:
            self.flush()
        self._key, self._ai, self._source, self._labels = key, ai, source, labels
        self._decision = self.store.load(key)
        self.setEnabled(True)
        level = "study finding" if ai.level == "study" else "finding"
        if ai.positive is None:
            self.ai_label.setText(f"<b>AI:</b> no finding ({html.escape(ai.finding)}). Your conclusion:")
        else:
            self.ai_label.setText(f"<b>AI {level}:</b> {html.escape(ai.text())}")
        self._show_choices(self._decision)
        self.note_edit.blockSignals(True)
        self.note_edit.setPlainText(self._decision.note if self._decision is not None else "")
        self.note_edit.blockSignals(False)
        self._show_status()

    def decision(self) -> ReaderDecision | None:
        """The decision on the case shown (``None`` when nothing was recorded), with any pending note saved."""
        self.flush()
        return self._decision

    @property
    def key(self) -> str | None:
        """The case key shown (``None`` without a case)."""
        return self._key

    # ------------------------------------------------------------------------------------------ actions
    def choose(self, choice: str) -> ReaderDecision | None:
        """Choose ``"agree"``, ``"positive"``, ``"negative"`` or ``"indeterminate"`` (as a click does) and save.

        Raises
        ------
        ValueError
            For another choice, or one that is disabled (e.g. "agree" when the AI gave no finding).
        """
        button = self.buttons.get(choice)
        if button is None or not button.isEnabled() or not self.isEnabled():
            raise ValueError(f"cannot choose {choice!r} now; choose one of the enabled options: "
                             + ", ".join(name for name, item in self.buttons.items() if item.isEnabled()))
        button.setChecked(True)
        self._on_choice(button)
        return self._decision

    def flush(self) -> None:
        """Save a note whose autosave is still pending (the case changes, the window closes)."""
        if self._note_timer.isActive():
            self._note_timer.stop()
            self._save_note()

    # -------------------------------------------------------------------------------------- internals
    def _conclusion_of(self, choice: str) -> str:
        if choice == "agree":
            return self._ai.conclusion if self._ai is not None else ""
        return choice

    def _show_choices(self, decision: ReaderDecision | None) -> None:
        ai = self._ai
        has_finding = ai is not None and ai.positive is not None
        positive_label, negative_label = self._labels
        prefix = "Disagree: " if has_finding else ""
        texts = {
            "agree": (f"Agree with the AI ({ai.conclusion})" if has_finding and ai is not None
                      else "Agree with the AI (no AI finding)"),
            "positive": f"{prefix}positive" + (f" ({positive_label})" if positive_label else ""),
            "negative": f"{prefix}negative" + (f" ({negative_label})" if negative_label else ""),
            "indeterminate": f"{prefix}indeterminate",
        }
        self.group.setExclusive(False)
        for choice, button in self.buttons.items():
            button.setText(texts[choice])
            button.setChecked(False)
            # Agreeing needs an AI finding; "disagreeing" with the AI's own polarity would be agreement.
            enabled = has_finding if choice == "agree" else not (has_finding and ai is not None
                                                                and choice == ai.conclusion)
            button.setEnabled(enabled)
        self.group.setExclusive(True)
        if decision is not None and decision.decided:
            if has_finding and ai is not None and decision.conclusion == ai.conclusion:
                self.buttons["agree"].setChecked(True)
            else:
                self.buttons[decision.conclusion].setChecked(True)

    def _current_choice(self) -> str:
        for choice, button in self.buttons.items():
            if button.isChecked():
                return choice
        return ""

    def _save(self, conclusion: str, ask_name: bool = True) -> None:
        """Record ``conclusion`` (``""``: a note only) with the note, the reader's name and the time, at once."""
        if self._key is None:
            return
        note = self.note_edit.toPlainText()
        if not conclusion and not note.strip() and self._decision is None:
            return  # nothing to keep
        if ask_name:  # a choice: the name is asked once, the first time
            self.reader_name = self.name_provider(False) or self.reader_name
        reader = self.reader_name or (self._decision.reader if self._decision is not None else "")
        try:
            self._decision = self.store.record(self._key, conclusion, note, reader, self._ai, self._source)
        except OSError as error:
            message = f"Your decision could not be saved ({error.strerror or error}); it is kept in the window only."
            LOGGER.warning("reader decision not saved: %s", error)
            self.status_label.setText(f"<span style='color:#b02a37'><b>{html.escape(message)}</b></span>")
            self.sig_save_failed.emit(message)
            return
        self._show_status()
        self._show_name()
        self.sig_decision_saved.emit(self._decision)

    def _on_choice(self, button: QRadioButton) -> None:
        choice = next((name for name, item in self.buttons.items() if item is button), "")
        if choice:
            self._note_timer.stop()
            self._save(self._conclusion_of(choice))

    def _on_note_changed(self) -> None:
        if self._key is not None:
            self._note_timer.start()
            self.status_label.setText("<i>Saving the note…</i>")

    def _save_note(self) -> None:
        choice = self._current_choice()
        self._save(self._conclusion_of(choice) if choice else "", ask_name=False)

    def _show_status(self) -> None:
        decision = self._decision
        if decision is None:
            self.status_label.setText("<i>Not recorded yet. Your choice is saved at once.</i>")
            return
        positive_label, negative_label = self._labels
        text = (f"<b>{html.escape(decision.summary(positive_label, negative_label))}</b><br>"
                f"Saved {html.escape(format_timestamp(decision.recorded_at))} · "
                f"{html.escape(decision.reader or 'reader not named')}")
        if decision.ai is not None and self._ai is not None and not decision.ai.same_finding(self._ai):
            text += (f"<br><span style='color:#8a5a00'>Recorded against another AI finding: "
                     f"{html.escape(decision.ai.text())}. Choose again to confirm against the one shown.</span>")
        self.status_label.setText(text)

    def _show_name(self) -> None:
        shown = html.escape(self.reader_name) if self.reader_name else "not named yet"
        self.name_label.setText(f"<small>Reader: {shown} · <a href='change'>change name…</a></small>")

    def _change_name(self) -> None:
        self.reader_name = self.name_provider(True) or self.reader_name
        self._show_name()
