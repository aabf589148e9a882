"""The reply in the user's language: the ASR's detected language turns into one
sentence added to the system prompt (English needs none)."""
from __future__ import annotations

from typing import Optional

NAMES = {
    "en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "ru": "Russian", "uk": "Ukrainian",
    "tr": "Turkish", "ar": "Arabic", "hi": "Hindi", "zh": "Chinese", "ja": "Japanese",
    "ko": "Korean", "sv": "Swedish", "da": "Danish", "no": "Norwegian", "fi": "Finnish",
    "cs": "Czech", "el": "Greek", "he": "Hebrew", "ro": "Romanian", "hu": "Hungarian",
    "vi": "Vietnamese", "id": "Indonesian", "th": "Thai", "ca": "Catalan",
}


def system_prompt(base: str, language: Optional[str]) -> str:
    if not language or language == "en":
        return base
    name = NAMES.get(language, language)
    return f"{base} The user speaks {name}: reply in {name}."
