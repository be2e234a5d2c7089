import pytest

from l2ray.languages import LANGUAGES, TAG_PATTERN, UnknownLanguageError, all_tags, get_language

REQUIRED = ["en", "zh", "ja", "ko", "fr", "de", "es", "ru", "ar", "pt", "it", "vi"]


def test_registry_has_the_required_languages_with_complete_entries():
    assert set(REQUIRED) <= set(LANGUAGES)
    for code, lang in LANGUAGES.items():
        assert lang.code == code
        assert TAG_PATTERN.fullmatch(lang.tag).group(1) == code
        assert lang.reflection_markers and lang.answer_anchors
        assert "\\boxed{}" in lang.reasoning_instruction
    assert len(set(all_tags())) == len(LANGUAGES)


def test_unknown_code_suggests_close_codes():
    with pytest.raises(UnknownLanguageError, match="Did you mean"):
        get_language("zhh")
