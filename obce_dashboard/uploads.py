"""Model & data's texts upload: read an uploaded file into texts, or refuse it with one message.

A refused file is taken out of the uploader (the uploader gets a new key), so the page never lists
a file it does not use; the refusal stays on screen, alone (no "No file uploaded yet" beside it),
until a file is accepted or the data source changes. Texts accepted earlier in the session stay in
use (``st.session_state["uploaded"] = (file name, texts)``, read by ``session.current_texts``).
"""

from __future__ import annotations

import streamlit as st

from obce_core.scoring import parse_texts

__all__ = ["UPLOAD_TYPES", "forget_refusal", "texts_from_upload", "upload_error", "upload_ui"]

UPLOAD_TYPES = ["txt", "csv", "tsv"]
_FIX = "upload a .txt file with one text per line, or a .csv/.tsv with a 'text' or 'sentence' column, saved as UTF-8"
_ERROR = "_upload_error"
_VERSION = "_upload_version"


def texts_from_upload(name: str, data: bytes) -> list[str]:
    """The texts in an uploaded file's bytes; ``ValueError`` naming the file and the fix otherwise."""
    if not data.strip():
        raise ValueError(f"{name} is empty; {_FIX}.")
    if b"\x00" in data[:8192]:  # text files hold no NUL byte; images, archives and spreadsheets do
        raise ValueError(f"{name} is not a text file (it holds binary data); {_FIX}.")
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name} is not UTF-8 text (byte {exc.start + 1} cannot be read as UTF-8); {_FIX}.") from None
    return parse_texts(content, name)


def upload_error() -> str | None:
    """The refusal of the last uploaded file, while it is on screen."""
    return st.session_state.get(_ERROR)


def forget_refusal() -> None:
    """Drop the refusal (another data source was chosen)."""
    st.session_state.pop(_ERROR, None)


def upload_ui() -> None:
    ss = st.session_state
    version = int(ss.get(_VERSION, 0))
    file = st.file_uploader("Texts file", type=UPLOAD_TYPES, key=f"texts_file_{version}",
                            help="A .txt with one text per line, or a .csv/.tsv with a 'text' or 'sentence' column.")
    if file is not None and ss.get("uploaded_id") != file.file_id:
        try:
            texts = texts_from_upload(file.name, file.getvalue())
        except ValueError as exc:
            ss[_ERROR] = f"**Could not read {file.name}.** {exc}"
            ss[_VERSION] = version + 1  # a fresh, empty uploader: the refused file is no longer listed
            st.rerun()
        ss["uploaded"] = (file.name, texts)
        ss["uploaded_id"] = file.file_id
        ss.pop(_ERROR, None)
    problem = upload_error()
    if problem:
        st.error(problem, icon=":material/error:")
    if file is None and ss.get("uploaded"):
        name, texts = ss["uploaded"]
        st.caption(f"Using {name} ({len(texts)} texts), uploaded earlier in this session.")
