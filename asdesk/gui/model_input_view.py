"""The "model input" view: exactly the preprocessed image the model received (or would receive).

After an analysis it shows ``AnalysisResult.model_input`` (``ModelInput.image``: float32 (h, w) in [0, 1],
before channel replication and backbone normalisation). While the preprocessing panel is edited it shows the
live preview of the edited pipeline, with a menu to look at each intermediate stage (window, crop, CLAHE,
histogram equalisation, resize).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

pg.setConfigOptions(imageAxisOrder="row-major")

_STAGE_TITLES = {
    "window": "after window",
    "crop_mm": "after crop",
    "clahe": "after CLAHE",
    "histogram_equalisation": "after histogram equalisation",
    "resize": "model input (after resize)",
}


class ModelInputView(QWidget):
    """A small grey-scale view of the model input and of the pipeline's stages."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._stages: list[tuple[str, np.ndarray]] = []
        self._final_caption = ""
        self._note = ""
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("k")
        self.view = self.graphics.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image_item)
        self.caption = QLabel("The preprocessed image the model receives appears here.")
        self.caption.setWordWrap(True)
        self.stage_box = QComboBox()
        self.stage_box.setToolTip("Pipeline stage shown")
        self.stage_box.currentIndexChanged.connect(self._show_stage)
        top = QHBoxLayout()
        top.addWidget(QLabel("Stage"))
        top.addWidget(self.stage_box, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.caption)
        self.setMinimumHeight(160)

    def set_stages(self, stages: list[tuple[str, np.ndarray]], caption: str = "", note: str = "") -> None:
        """Show the stages of a pipeline run, the last (the model input) selected.

        Parameters
        ----------
        stages : list of (str, numpy.ndarray)
            From :meth:`asdesk.preprocess.Pipeline.stages`: (step name, float32 (H, W) in [0, 1]).
        caption : str
            Shown under the last stage (the model input), e.g. "Exactly what the model received …".
            An intermediate stage gets its own caption, which says that it is not the model input.
        note : str
            Shown under every stage (e.g. a warning that the preprocessing was modified).
        """
        self._stages = list(stages)
        self._final_caption = caption
        self._note = note
        self.stage_box.blockSignals(True)
        self.stage_box.clear()
        self.stage_box.addItems([_STAGE_TITLES.get(name, name) for name, _ in self._stages])
        self.stage_box.setCurrentIndex(len(self._stages) - 1)
        self.stage_box.blockSignals(False)
        self._show_stage(len(self._stages) - 1)

    def set_model_input(self, image: np.ndarray, caption: str = "") -> None:
        """Show the model input of a result.

        Parameters
        ----------
        image : numpy.ndarray
            float32 (h, w) in [0, 1] (``AnalysisResult.model_input``).
        caption : str
            Shown under the image.
        """
        self.set_stages([("resize", image)], caption)

    def clear(self) -> None:
        """Show nothing."""
        self._stages = []
        self._final_caption = self._note = ""
        self.stage_box.clear()
        self.image_item.clear()
        self.caption.setText("The preprocessed image the model receives appears here.")

    def current_image(self) -> np.ndarray | None:
        """The image shown, or ``None``."""
        index = self.stage_box.currentIndex()
        return self._stages[index][1] if 0 <= index < len(self._stages) else None

    def _show_stage(self, index: int) -> None:
        if not 0 <= index < len(self._stages):
            return
        name, image = self._stages[index]
        if index == len(self._stages) - 1:
            caption = self._final_caption
        else:
            height, width = image.shape[:2]
            caption = (f"Intermediate stage ({_STAGE_TITLES.get(name, name)}, {width}×{height} px): not what the "
                       "model receives; the last stage is the model input.")
        self.caption.setText(" ".join(part for part in (caption, self._note) if part))
        self.image_item.setImage(np.asarray(image, dtype=np.float32), autoLevels=False, levels=(0.0, 1.0))
        self.image_item.setRect(0, 0, image.shape[1], image.shape[0])
        self.view.setRange(xRange=(0, image.shape[1]), yRange=(0, image.shape[0]), padding=0.02)
