import pytest

from rag.text import STOPWORDS, normalize, split_sentences, tokenize

# -- tokenize -------------------------------------------------------------------------------


def test_keeps_decimal_numbers_whole():
    toks = tokenize("Target potassium 1.5 and 0.3 above")
    assert "1.5" in toks and "0.3" in toks
    # A plain number is not split into its digits.
    assert "1" not in toks and "5" not in toks and "3" not in toks


def test_unit_kept_lowercased_and_split_into_parts():
    toks = tokenize("Creatinine 1.30 mg/dL")
    assert toks == ["creatinine", "1.30", "mg/dl", "mg", "dl"]


def test_abbreviation_lowercased_not_stemmed():
    assert tokenize("HFrEF") == ["hfref"]
    assert tokenize("SGLT2 inhibitors") == ["sglt2", "inhibitor"]


def test_hyphenated_compound_emits_compound_and_parts():
    toks = tokenize("NT-proBNP 125 pg/mL")
    assert toks[:3] == ["nt-probnp", "nt", "probnp"]
    assert "pg/ml" in toks and "pg" in toks and "ml" in toks and "125" in toks


def test_compound_query_matches_part_in_document():
    # "proBNP" alone must share a token with "NT-proBNP".
    assert set(tokenize("proBNP")) <= set(tokenize("NT-proBNP elevated"))


def test_score_name_with_digits():
    assert tokenize("CHA2DS2-VASc score") == ["cha2ds2-vasc", "cha2ds2", "vasc", "score"]


def test_stopwords_removed():
    toks = tokenize("What is the dose of the drug for an adult")
    assert toks == ["dose", "drug", "adult"]
    assert not set(toks) & STOPWORDS


def test_stopword_parts_of_compounds_dropped():
    # "in" is a stopword; the compound itself is kept.
    assert tokenize("in-hospital") == ["in-hospital", "hospital"]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("patients", "patient"),
        ("therapies", "therapy"),
        ("kidneys", "kidney"),
        ("diuretics", "diuretic"),
        ("status", "status"),  # -us kept
        ("class", "class"),  # -ss kept
        ("dialysis", "dialysis"),  # -is kept
        ("beds", "beds"),  # too short to fold
        ("ACEs", "aces"),  # four letters: too short to fold
    ],
)
def test_plural_folding(word, expected):
    assert tokenize(word) == [expected]


def test_plural_and_singular_match():
    assert tokenize("diuretic therapy") == tokenize("diuretics therapies")


def test_nfkc_superscript_and_fullwidth():
    assert tokenize("eGFR 60 mL/min/1.73 m²")[-1] == "m2"
    assert tokenize("０．５ ﬁnd") == ["0.5", "find"]
    assert normalize("M²") == "m2"


def test_comparison_sign_dropped_number_kept():
    assert tokenize("LVEF ≤40%") == ["lvef", "40"]
    assert tokenize("eGFR ≥30") == ["egfr", "30"]


def test_trailing_sentence_period_stripped():
    assert tokenize("Give furosemide.") == ["give", "furosemide"]
    assert tokenize("Dose was 2.5.") == ["dose", "2.5"]


def test_empty_and_punctuation_only():
    assert tokenize("") == []
    assert tokenize("... -- // !!") == []


def test_tokenize_is_deterministic_and_order_preserving():
    text = "Start sacubitril/valsartan after a 36-hour ACE-inhibitor washout"
    assert tokenize(text) == tokenize(text)
    toks = tokenize(text)
    assert toks.index("sacubitril/valsartan") < toks.index("ace-inhibitor")


# -- split_sentences ----------------------------------------------------------------------


def test_trailing_markers_stay_with_their_sentence():
    text = "Start an ACE inhibitor [1]. Add a beta-blocker [2, 3]. Done."
    assert split_sentences(text) == ["Start an ACE inhibitor [1].", "Add a beta-blocker [2, 3].", "Done."]


def test_markers_after_the_period_stay_with_the_sentence():
    assert split_sentences("Use statins. [1][2] Check lipids. [3]") == [
        "Use statins. [1][2]",
        "Check lipids. [3]",
    ]


def test_no_split_after_eg_or_ie():
    text = "Use a loop diuretic, e.g. Furosemide, first [1]. Then reassess, i.e. Weigh daily [2]."
    assert split_sentences(text) == [
        "Use a loop diuretic, e.g. Furosemide, first [1].",
        "Then reassess, i.e. Weigh daily [2].",
    ]


def test_decimal_not_split():
    assert split_sentences("Dose is 2.5 mg daily [1]. Next step [2].") == [
        "Dose is 2.5 mg daily [1].",
        "Next step [2].",
    ]


def test_question_and_exclamation_end_sentences():
    assert split_sentences("Why? Because [1]! Yes.") == ["Why?", "Because [1]!", "Yes."]


def test_lines_are_separate_and_blank_lines_dropped():
    text = "- Start SGLT2 inhibitor [1]\n\n- Titrate beta-blocker [2]\n   \n"
    assert split_sentences(text) == ["- Start SGLT2 inhibitor [1]", "- Titrate beta-blocker [2]"]


def test_no_split_before_lowercase():
    assert split_sentences("Dr. Smith agreed. the end.") == ["Dr. Smith agreed. the end."]


def test_punctuation_only_lines_dropped():
    assert split_sentences("...\n---\nReal sentence.") == ["Real sentence."]


@pytest.mark.parametrize(
    "text",
    ["Give furosemide 40 mg. Check potassium [1].", "Target LDL below 55 mg/dL. Use a statin [1]."],
)
def test_sentence_ending_in_a_unit_is_a_boundary(text):
    assert len(split_sentences(text)) == 2
