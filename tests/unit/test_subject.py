"""rag.subject: is a shown source about the asked subject or about another variant of it?"""

from rag.subject import other_variant, parse, relation


def test_type_numbers_letter_codes_and_roman_numerals_are_variants():
    assert relation("What are the symptoms of Aicardi-Goutieres syndrome type 4 ?",
                    "Aicardi-Goutieres syndrome type 1") == "sibling"
    assert relation("What is limb-girdle muscular dystrophy type 2H?", "Limb-girdle muscular dystrophy type 2I") \
        == "sibling"
    assert relation("Treatments for mitochondrial complex II deficiency?", "Mitochondrial complex III deficiency") \
        == "sibling"
    assert relation("Is complex I deficiency inherited?", "Complex IV deficiency") == "sibling"  # "I" after "complex"


def test_exclusive_qualifiers_are_variants():
    assert relation("Is autosomal recessive hyper-IgE syndrome inherited?", "Autosomal dominant hyper-IgE syndrome") \
        == "sibling"
    assert relation("Treatment of adult acute lymphoblastic leukemia?", "Childhood Acute Lymphoblastic Leukemia") \
        == "sibling"
    assert relation("Acute myeloid leukemia in adults: treatment?", "Acute Myeloid Leukemia") == "compatible"


def test_the_asked_page_a_general_page_and_unrelated_pages():
    assert relation("What is (are) Diabetes type 1 ?", "Type 1 Diabetes") == "compatible"
    assert relation("What are the symptoms of LGMD type 2H? limb-girdle muscular dystrophy",
                    "Limb-girdle muscular dystrophy") == "compatible"  # the general page may cover the type
    assert relation("Is a glucose of 50 mg/dL level 2 hypoglycaemia?",
                    "Diabetes: glycaemic targets and hypoglycaemia (ADA 2024)") == "unrelated"
    assert relation("What is the latest ejection fraction of this patient?", "Progress note 2026-03-10") \
        == "unrelated"
    # Doses, years and other numbers of a question are not the title's variant when the title names none.
    assert relation("Type 2 diabetes on metformin 500 mg since 2019: HbA1c goal?", "Type 2 diabetes") \
        == "compatible"


def test_other_variant_needs_a_sibling_and_no_compatible_source():
    q = "What are the symptoms of Microphthalmia syndromic 8 ?"
    assert other_variant(q, ["Microphthalmia syndromic 6", "Anophthalmia"]) == "Microphthalmia syndromic 6"
    assert other_variant(q, ["Microphthalmia syndromic 6", "Microphthalmia syndromic 8"]) is None
    assert other_variant(q, ["Anophthalmia", "Coloboma"]) is None  # unrelated only: the other checks decide
    assert other_variant(q, []) is None


def test_parse_keeps_words_and_variants_apart():
    s = parse("Spinocerebellar ataxia type 3 (SCA3), group B, autosomal dominant")
    assert {"spinocerebellar", "ataxia", "sca3"} <= s.words and {"3", "b"} <= s.variants
    assert "dominant" in s.qualifiers and "type" in s.words


def test_dates_in_note_titles_are_not_variants():
    assert relation("What does P002's discharge summary of 2025-09-02 say?", "P002 discharge summary, 2025-02-14") \
        == "compatible"


def test_the_measurement_set_keeps_clear_of_the_trust_split():
    """eval/subject_variant.py: sibling families are asked only when no member touches the trust split."""
    from types import SimpleNamespace

    from eval.subject_variant import select, siblings

    assert siblings(["AGS type 1", "AGS type 4", "Asthma"]) == {"AGS type 1": {"AGS type 4"},
                                                                "AGS type 4": {"AGS type 1"}}

    def doc(i: str, focus: str, folder: str = "2_GARD_QA") -> SimpleNamespace:
        return SimpleNamespace(doc_id=i, meta={"focus": focus}, source=f"medquad/{folder}/{i}.xml#1")

    docs = [doc("a1", "AGS type 1"), doc("a4", "AGS type 4"), doc("m6", "Microphthalmia syndromic 6"),
            doc("m8", "Microphthalmia syndromic 8"), doc("x", "Asthma"), doc("y", "Gout")]
    trust = {"dev": {"medquad": ["a1"], "topic_removed": []}, "test": {"medquad": [], "topic_removed": []},
             "index_medquad_files": []}
    sel = select(docs, trust, distractors=1, seed=0)
    assert sel["sibling"] == ["Microphthalmia syndromic 6", "Microphthalmia syndromic 8"]  # AGS: a1 is asked
    assert len(sel["other"]) == 1 and sel["other"][0] in {"Asthma", "Gout"}
    assert "2_GARD_QA/m6.xml" in sel["files"] and "2_GARD_QA/a1.xml" not in sel["files"]
