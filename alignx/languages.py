"""The language registry: ISO codes, names, scripts, fastText labels and per-dataset file codes.

Everything that maps between our ISO 639-1 codes and the codes used by data sets or models goes here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Language:
    """One pipeline language."""

    code: str  # ISO 639-1, our canonical id
    iso3: str  # ISO 639-3 (Tatoeba folder/file code)
    flores: str  # FLORES-200 code
    name: str
    script: str  # ISO 15924
    ntrex: str | None = None  # NTREX-128 file code
    fasttext_labels: tuple[str, ...] = field(default=())  # labels counted as this language

    @property
    def labels(self) -> tuple[str, ...]:
        return self.fasttext_labels or (self.code,)


_LANGS = [
    Language("en", "eng", "eng_Latn", "English", "Latn", "eng"),
    Language("bn", "ben", "ben_Beng", "Bengali", "Beng", "ben"),
    Language("de", "deu", "deu_Latn", "German", "Latn", "deu"),
    Language("es", "spa", "spa_Latn", "Spanish", "Latn", "spa"),
    Language("fr", "fra", "fra_Latn", "French", "Latn", "fra"),
    Language("ja", "jpn", "jpn_Jpan", "Japanese", "Jpan", "jpn"),
    Language("ru", "rus", "rus_Cyrl", "Russian", "Cyrl", "rus"),
    Language("sw", "swa", "swh_Latn", "Swahili", "Latn", "swa"),
    Language("th", "tha", "tha_Thai", "Thai", "Thai", "tha"),
    Language("zh", "zho", "zho_Hans", "Chinese", "Hans", "zho_Hans", ("zh", "yue", "wuu")),
    # Benchmark-only languages (XCOPA, MGSM); not in the training mirror.
    Language("te", "tel", "tel_Telu", "Telugu", "Telu"),
    Language("et", "est", "est_Latn", "Estonian", "Latn"),
    Language("ht", "hat", "hat_Latn", "Haitian Creole", "Latn"),
    Language("id", "ind", "ind_Latn", "Indonesian", "Latn"),
    Language("it", "ita", "ita_Latn", "Italian", "Latn"),
    Language("qu", "que", "quy_Latn", "Quechua", "Latn"),
    Language("ta", "tam", "tam_Taml", "Tamil", "Taml"),
    Language("tr", "tur", "tur_Latn", "Turkish", "Latn"),
    Language("vi", "vie", "vie_Latn", "Vietnamese", "Latn"),
    # The rest of XNLI, XStoryCloze, XWinograd and PAWS-X (FLORES and Belebele have them all), so an
    # evaluation can name any language these benchmarks have.
    Language("ar", "ara", "arb_Arab", "Arabic", "Arab"),
    Language("bg", "bul", "bul_Cyrl", "Bulgarian", "Cyrl"),
    Language("el", "ell", "ell_Grek", "Greek", "Grek"),
    Language("eu", "eus", "eus_Latn", "Basque", "Latn"),
    Language("hi", "hin", "hin_Deva", "Hindi", "Deva"),
    Language("ko", "kor", "kor_Hang", "Korean", "Hang"),
    Language("my", "mya", "mya_Mymr", "Burmese", "Mymr"),
    Language("pt", "por", "por_Latn", "Portuguese", "Latn"),
    Language("ur", "urd", "urd_Arab", "Urdu", "Arab"),
]

LANGUAGES: dict[str, Language] = {lang.code: lang for lang in _LANGS}


class UnknownLanguageError(ValueError):
    """A language code that the registry does not know."""


def get_language(code: str) -> Language:
    """Return the registry entry for an ISO 639-1 code, or raise listing the known codes."""
    try:
        return LANGUAGES[code]
    except KeyError:
        raise UnknownLanguageError(
            f"unknown language code {code!r}; known codes: {', '.join(sorted(LANGUAGES))}"
        ) from None
