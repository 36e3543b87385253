from rag.abbrev import ANY_CASE, CASED, expand


def test_expansions_are_found_in_order_and_the_original_is_kept():
    e = expand("HFrEF GDMT")
    assert e.found == [("HFrEF", "heart failure with reduced ejection fraction"),
                       ("GDMT", "guideline-directed medical therapy")]
    assert e.bm25_text.startswith("HFrEF GDMT ")
    assert "heart failure with reduced ejection fraction" in e.bm25_text
    assert e.dense_text == ("HFrEF (heart failure with reduced ejection fraction) "
                            "GDMT (guideline-directed medical therapy)")


def test_upper_case_abbreviations_match_only_as_written():
    assert expand("the af and ms words").found == []
    assert [a for a, _ in expand("AF in MS").found] == ["AF", "MS"]


def test_note_shorthand_matches_in_any_case():
    assert expand("Tx of T2DM").found == [("Tx", "treatment"), ("T2DM", "type 2 diabetes mellitus")]
    assert expand("AF TX").found[1] == ("TX", "treatment")


def test_punctuation_slash_compounds_and_stages():
    e = expand("pt w/ CKD3a, IC/PBS.")
    assert [a for a, _ in e.found] == ["pt", "w/", "CKD3a", "IC", "PBS"]
    assert "CKD3a (chronic kidney disease)," in e.dense_text
    assert "IC/PBS (interstitial cystitis; painful bladder syndrome)." in e.dense_text


def test_ambiguous_abbreviation_gets_every_reading_and_repeats_expand_once():
    e = expand("MS sx vs MS tx")
    assert e.found[0] == ("MS", "multiple sclerosis or mitral stenosis")
    assert [a for a, _ in e.found] == ["MS", "sx", "tx"]
    assert e.dense_text.count("(multiple sclerosis or mitral stenosis)") == 2


def test_nothing_to_expand_leaves_the_query_unchanged():
    q = "my mother gets dizzy when she stands up"
    e = expand(q)
    assert e.found == [] and e.bm25_text == q and e.dense_text == q


def test_the_list_is_well_formed():
    assert all(v and v == v.strip() for v in (*CASED.values(), *ANY_CASE.values()))
    assert all(k == k.lower() for k in ANY_CASE)
