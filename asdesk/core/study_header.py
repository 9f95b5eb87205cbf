"""The patient and study header of a report, as clinics expect it, stated once for the PDF and the DICOM export.

A referrer looks for the patient, the accession number (the RIS order), the study date and description, the
institution and the referring physician before reading a finding. :func:`study_header` turns an
:class:`~asdesk.core.records.ImageMetadata` into labelled, readable values: DICOM person names (PS3.5 6.2,
``Family^Given^Middle``) as ``Family, Given Middle``, dates (DA, ``YYYYMMDD``) as ``YYYY-MM-DD``, sex codes as
words, and every absent attribute as :data:`ABSENT` ("—"), never as an empty cell or a stray comma.

Only the standard library is used (layer 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from asdesk.core.records import ImageMetadata

__all__ = ["ABSENT", "HeaderField", "dicom_date", "dicom_time", "person_name", "sex_text", "study_header"]

ABSENT = "—"
"""Shown for an attribute the file does not have (an em dash)."""

_SEX = {"M": "male", "F": "female", "O": "other"}


@dataclass(frozen=True)
class HeaderField:
    """One labelled value of the header.

    Attributes
    ----------
    label : str
        E.g. ``"Accession number"``.
    value : str
        Readable text, :data:`ABSENT` when the attribute is missing or empty.
    present : bool
        The file has the attribute (with a value).
    """

    label: str
    value: str
    present: bool


def person_name(value: str) -> str:
    """A DICOM person name as people write it.

    Parameters
    ----------
    value : str
        PN value (PS3.5 6.2): ``Family^Given^Middle^Prefix^Suffix``, possibly with ``=``-separated ideographic
        and phonetic groups (only the first group is used).

    Returns
    -------
    str
        ``"Family, Given Middle"``; a single component as it is; ``""`` for an empty name.
    """
    first = str(value or "").split("=")[0]
    parts = [part.strip() for part in first.split("^")]
    family, given = (parts[0] if parts else ""), " ".join(part for part in parts[1:3] if part)
    prefix = parts[3] if len(parts) > 3 else ""
    suffix = parts[4] if len(parts) > 4 else ""
    if not given:
        name = family
    elif not family:
        name = given
    else:
        name = f"{family}, {given}"
    name = " ".join(part for part in (prefix, name, suffix) if part)
    return name.strip()


def dicom_date(value: str) -> str:
    """A DICOM DA value ``YYYYMMDD`` as ``YYYY-MM-DD`` (other text is returned stripped, as it is)."""
    text = str(value or "").strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def dicom_time(value: str) -> str:
    """A DICOM TM value ``HHMMSS.FFFFFF`` as ``HH:MM`` (or ``HH:MM:SS`` when seconds are given and not 0)."""
    text = str(value or "").strip().split(".")[0].replace(":", "")
    if len(text) >= 4 and text[:4].isdigit():
        seconds = text[4:6] if len(text) >= 6 and text[4:6].isdigit() and text[4:6] != "00" else ""
        return f"{text[:2]}:{text[2:4]}" + (f":{seconds}" if seconds else "")
    return text


def sex_text(value: str) -> str:
    """(0010,0040) Patient's Sex ``M``/``F``/``O`` as ``male``/``female``/``other`` (else as stored)."""
    code = str(value or "").strip().upper()
    return _SEX.get(code, code)


def study_header(metadata: ImageMetadata) -> list[HeaderField]:
    """The header fields of a report, in the order a referrer reads them.

    Parameters
    ----------
    metadata : ImageMetadata
        Of the image (or the first slice of the series) reported.

    Returns
    -------
    list of HeaderField
        Patient, Patient ID, Sex, Birth date, Accession number, Study date (with the time when known), Study
        description, Institution, Referring physician, Modality (with the body part when known). Values a raster
        image (PNG, JPEG) or a DICOM file does not have are :data:`ABSENT`.
    """
    study_date = dicom_date(metadata.study_date)
    if study_date and metadata.study_time:
        study_date += f" {dicom_time(metadata.study_time)}"
    modality = " · ".join(part for part in (metadata.modality or metadata.format, metadata.body_part) if part)
    values = [
        ("Patient", person_name(metadata.patient_name)),
        ("Patient ID", metadata.patient_id.strip()),
        ("Sex", sex_text(metadata.patient_sex)),
        ("Birth date", dicom_date(metadata.patient_birth_date)),
        ("Accession number", metadata.accession_number.strip()),
        ("Study date", study_date),
        ("Study description", metadata.study_description.strip()),
        ("Institution", metadata.institution_name.strip()),
        ("Referring physician", person_name(metadata.referring_physician)),
        ("Modality", modality),
    ]
    return [HeaderField(label, value if value else ABSENT, bool(value)) for label, value in values]
