"""Question styles the verifier must read: clinician shorthand, lay wording with background, detail questions.

The first verifier learned answerability from MedQuAD's templated questions ("What are the
treatments for X?") and read terse clinical questions ("HFrEF GDMT classes?") or lay ones ("My dad
..., how soon ...?") as unanswerable even against the passage that answers them. These functions
rewrite training questions into those styles and make *detail* questions (one fact of one passage)
from guideline sentences, so the pairs cover the wording real users type. Nothing here reads the
trust evaluation's questions; the phrasings are ours.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence

# Terse clinical wording per MedQuAD question type ("{f}" is the focus, "{rel}" a relative).
STYLES: dict[str, tuple[str, ...]] = {
    "treatment": ("{f} treatment?", "{f} - treatment options?", "how do you treat {f}", "mgmt of {f}?",
                  "My {rel} has {f}. What can be done about it?", "Newly diagnosed {f}: therapy options?",
                  "best way to manage {f}?", "{f} Tx?"),
    "symptoms": ("{f} symptoms?", "{f} - presenting features?", "how does {f} present",
                 "What signs would make me think my {rel} has {f}?", "clinical features of {f}", "{f} sx?"),
    "causes": ("{f} aetiology?", "what causes {f}", "why did my {rel} get {f}?", "{f} - causes?", "etiology of {f}"),
    "exams and tests": ("{f} workup?", "how is {f} diagnosed", "tests to confirm {f}?",
                        "My doctor thinks I might have {f}. What tests will they do?", "{f} dx?"),
    "outlook": ("{f} prognosis?", "what is the outlook for {f}",
                "My {rel} was diagnosed with {f}. Will they get better?", "{f} - life expectancy?"),
    "prevention": ("{f} prevention?", "can {f} be prevented", "how do I avoid getting {f}?"),
    "susceptibility": ("who gets {f}?", "risk factors for {f}?", "{f} - who is at risk?"),
    "inheritance": ("is {f} inherited?", "{f} inheritance pattern?", "will my kids get {f} too?"),
    "frequency": ("{f} prevalence?", "how common is {f}", "how many people have {f}?"),
    "genetic changes": ("{f} - which gene?", "genetics of {f}?", "what mutation causes {f}"),
    "complications": ("{f} complications?", "what can {f} lead to?"),
    "information": ("{f}?", "what is {f}", "{f} - overview?", "My {rel} was told they have {f}. What is that?",
                    "explain {f} briefly"),
    "stages": ("{f} staging?", "stages of {f}?"),
}
_RELATIVES = ("mother", "dad", "wife", "son", "grandmother", "husband", "sister", "friend")
_BACKGROUND = ("I'm {age} and ", "My {rel} is {age}. ", "{age}yo, ", "Pt {age}{sex}, ", "")

# Wording clinicians shorten (both directions are used: the question may carry either form).
ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    # Longer forms first: "acute decompensated heart failure" must not become "acute decompensated HF".
    ("acute decompensated heart failure", "ADHF"), ("heart failure with reduced ejection fraction", "HFrEF"),
    ("heart failure with preserved ejection fraction", "HFpEF"), ("acute coronary syndrome", "ACS"),
    ("angiotensin-converting enzyme inhibitor", "ACEi"), ("mineralocorticoid receptor antagonist", "MRA"),
    ("guideline-directed medical therapy", "GDMT"), ("community-acquired pneumonia", "CAP"),
    ("acute kidney injury", "AKI"), ("estimated glomerular filtration rate", "eGFR"), ("by mouth", "PO"),
    ("twice daily", "bd"), ("potassium", "K+"), ("creatinine", "Cr"), ("blood glucose", "BG"),
    ("heart failure", "HF"), ("atrial fibrillation", "AF"), ("blood pressure", "BP"),
    ("chronic kidney disease", "CKD"), ("type 2 diabetes", "T2D"), ("myocardial infarction", "MI"),
    ("chronic obstructive pulmonary disease", "COPD"), ("ejection fraction", "EF"),
    ("hypertension", "HTN"), ("diabetes mellitus", "DM"), ("coronary artery disease", "CAD"),
    ("intravenous", "IV"), ("low-density lipoprotein", "LDL"), ("glomerular filtration rate", "GFR"),
    ("pulmonary embolism", "PE"), ("deep vein thrombosis", "DVT"), ("urinary tract infection", "UTI"),
    ("human immunodeficiency virus", "HIV"), ("treatment", "tx"), ("diagnosis", "dx"),
    ("patients", "pts"), ("patient", "pt"), ("recommended", "rec'd"), ("history", "hx"),
)

_STOP = frozenset("""a an the and or of in on for to with without by as at from is are was were be been being this that
these those it its their there which who whom whose what when where why how should may can could would will not no
than then also such other more most less least any all each both either neither per into over under between about
after before during within among than very has have had do does did done if but so because while whereas only
usually generally often recommended recommend recommends suggested suggests suggest including include
includes""".split())
_WORD = re.compile(r"[A-Za-z][\w/+-]*")
_NUMBERISH = re.compile(r"\d")


def qtype_of(question: str) -> str:
    """MedQuAD-like question type of a free question (for WikiDoc, which has none)."""
    q = question.lower()
    for pat, t in ((r"\btreat|therap|manag", "treatment"), (r"symptom|sign", "symptoms"),
                   (r"\bcause|why do", "causes"), (r"diagnos|test|exam", "exams and tests"),
                   (r"prevent", "prevention"), (r"outlook|prognos|expect", "outlook"),
                   (r"risk|who (is|are|gets)", "susceptibility"), (r"inherit|genetic", "inheritance"),
                   (r"complication", "complications"), (r"\bhow common|how many", "frequency")):
        if re.search(pat, q):
            return t
    return "information"


def abbreviate(text: str, rng: random.Random, p: float = 0.6) -> str:
    """Replace long forms by clinicians' abbreviations, each with probability ``p``."""
    for long, short in ABBREVIATIONS:
        if re.search(rf"\b{re.escape(long)}\b", text, re.I) and rng.random() < p:
            text = re.sub(rf"\b{re.escape(long)}\b", short, text, flags=re.I)
    return text


_WIKIDOC_HEAD = re.compile(
    r"^(what to expect if i have|when to seek urgent medical care when i have|who is at (highest )?risk for|"
    r"how to know if you have|what are (the )?(symptoms|causes|treatments?|risk factors|signs)( of| for)?|"
    r"what causes|what is|what are|how is|how are|how can i prevent|is|are|can|"
    r"(the )?(symptoms|causes|treatments?|risk factors|signs|outlook) (of|for))\s+", re.I)


def focus_of(question: str) -> str:
    """The condition a free question is about ("What to expect if I have X (Outlook/Prognosis)?" -> X)."""
    q = re.sub(r"\s*\([^)]*\)", "", question).strip().rstrip("?").strip()
    return _WIKIDOC_HEAD.sub("", q).strip()


def restyle(question: str, focus: str, qtype: str | None, rng: random.Random) -> str:
    """The question as a clinician or a patient might type it (same information need); unchanged
    when its subject cannot be told apart from the wording."""
    if qtype and qtype not in STYLES:
        return question  # a MedQuAD type we have no wording for (research, support groups ...)
    t = qtype or qtype_of(question)
    f = focus_of(focus)
    if not f or len(f.split()) > 6 or f.lower() == question.lower().rstrip("?"):
        f = focus_of(question)
    if not f or len(f.split()) > 6:
        return question
    if rng.random() < 0.5:
        f = f.lower()
    q = rng.choice(STYLES[t]).format(f=f, rel=rng.choice(_RELATIVES))
    if rng.random() < 0.3:
        q = rng.choice(_BACKGROUND).format(age=rng.randint(25, 88), rel=rng.choice(_RELATIVES),
                                           sex=rng.choice("MF")) + q
    q = abbreviate(q, rng)
    if rng.random() < 0.25:
        q = q.rstrip("?")
    return q


def idf_table(texts: Sequence[str]) -> dict[str, float]:
    df: Counter[str] = Counter()
    for t in texts:
        df.update({w.lower() for w in _WORD.findall(t)})
    n = len(texts)
    return {w: math.log((n + 1) / (c + 0.5)) for w, c in df.items()}


def content_words(sentence: str) -> list[str]:
    return [w for w in _WORD.findall(sentence) if w.lower() not in _STOP and not _NUMBERISH.search(w)
            and len(w) > 1]


_GUIDANCE = re.compile(r"\b(recommend|should|suggest|target|goal|threshold|dose|daily|every|interval|first-line|"
                       r"initiat|start|stop|avoid|screen|monitor|measure|defin|diagnos|contraindicat)", re.I)


# Sentences about the guideline itself, not about care.
_BOILERPLATE = re.compile(r"\b(USPSTF grades|grade [A-DI]\b|column|table|panel|evidence review|this guideline|"
                          r"the guideline|working group|literature|search|bibliograph|funding|disclos)", re.I)


def detail_question(sentence: str, title: str, idf: dict[str, float], rng: random.Random
                    ) -> tuple[str, list[str]] | None:
    """A terse question for one fact of ``sentence``, as a clinician would ask it: the guideline's
    subject (title words the sentence shares, else the title's rarest word) and the sentence's most
    specific content words, never its numbers (those are what is asked). Only guidance sentences
    (a recommendation, a threshold, a dose, an interval ...) are asked about.
    Returns (question, the keywords it uses)."""
    if not _GUIDANCE.search(sentence) or _BOILERPLATE.search(sentence):
        return None
    words = content_words(sentence)
    if len(words) < 4:
        return None
    title_words = [w for w in content_words(title) if w.lower() not in {"guideline", "recommendation", "uspstf",
                                                                          "screening", "management", "clinical"}]
    shared = [w for w in words if w.lower() in {t.lower() for t in title_words}]
    subject = shared[:2] or sorted(title_words, key=lambda w: -idf.get(w.lower(), 0.0))[:1]
    rest = [w for w in words if w not in subject]
    k = min(len(rest), rng.randint(2, 4))
    top = set(sorted(rest, key=lambda w: -idf.get(w.lower(), 0.0))[:k])
    kws = subject + [w for w in rest if w in top]  # sentence order after the subject
    if len(kws) < 3:
        return None
    phrase = " ".join(kws)
    if _NUMBERISH.search(sentence):
        forms = ("{p}: what threshold?", "{p} - how much?", "{p}?", "{p} - dose or target?", "what {p} cut-off?")
    else:
        forms = ("{p}?", "{p} - what is recommended?", "what does the guideline say about {p}?", "{p} - when?",
                 "is {p} recommended?")
    q = abbreviate(rng.choice(forms).format(p=phrase), rng, p=0.5)
    return (q[0].upper() + q[1:] if rng.random() < 0.5 else q), kws


def overlap(keywords: Sequence[str], passage: str) -> float:
    """Share of ``keywords`` present in ``passage`` (case-insensitive)."""
    if not keywords:
        return 0.0
    have = {w.lower() for w in _WORD.findall(passage)}
    return sum(k.lower() in have for k in keywords) / len(keywords)


# Record questions as clinicians type them ({who}: "this patient" or "patient HF012").
RECORD_SHORTHAND: dict[str, tuple[str, ...]] = {
    "ejection_fraction": ("EF?", "LVEF for {who}?", "{who}: EF on last echo?", "what's the EF", "ejection fraction?"),
    "serum_creatinine": ("Cr?", "creat for {who}?", "renal function - creatinine?", "latest creatinine?"),
    "serum_sodium": ("Na?", "sodium level?", "{who} Na+?", "is the sodium low?"),
    "platelets": ("plt?", "platelets?", "{who} platelet count?"),
    "creatinine_phosphokinase": ("CK?", "CPK?", "creatine kinase for {who}?"),
    "age": ("age?", "how old?", "{who} age/sex?"),
    "diabetes": ("diabetic?", "DM?", "is {who} diabetic?", "any diabetes?"),
    "high_blood_pressure": ("HTN?", "hypertensive?", "{who} - hypertension?", "known hypertension?"),
    "anaemia": ("anaemic?", "anemia?", "{who} anaemic?", "is {who} anemic?"),
    "smoking": ("smoker?", "smoking status?", "does {who} smoke?", "tobacco use?"),
}


# -- clinical vignettes (version 3) ----------------------------------------------------------------
# Version 2 gated out clinicians' questions that open with the patient ("NSTEMI pt now hypotensive
# ... how quickly to angiography?": answerability 0.01 on the passage that answers it): its training
# questions never carried a case before the ask. These fragments are ours and deliberately generic:
# a context that does not change what is asked, so the pair keeps its label and the model learns to
# read past the case to the question.
_CASE_PROBLEMS = ("HTN", "T2D", "CKD stage 3", "AF", "COPD", "obesity", "prior MI", "HFrEF", "osteoarthritis",
                  "hypothyroidism", "depression", "asthma", "gout", "hyperlipidaemia", "previous stroke",
                  "anaemia", "sleep apnoea", "no past history")
_CASE_DRUGS = ("metformin", "ramipril", "amlodipine", "atorvastatin", "bisoprolol", "apixaban", "furosemide",
               "levothyroxine", "sertraline", "omeprazole", "salbutamol inhaler", "aspirin", "insulin glargine",
               "no regular medicines")
_CASE_SETTINGS = ("seen in clinic", "admitted overnight", "in ED", "on the ward", "at a routine review",
                  "referred by the GP", "follow-up visit")
_CASE_FORMS = ("{age}{sex}, {p1}, {p2}, on {d1}. ", "{age}yo {sexw} with {p1} and {p2}, {setting}. ",
               "Pt {age}{sex} {setting}; PMH {p1}, {p2}; meds {d1}, {d2}. ",
               "{age}-year-old {sexw}, {p1}, takes {d1}. ", "{setting}: {age}{sex}, {p1}. BP {sbp}/{dbp}, HR {hr}. ")
_LAY_CASE_FORMS = ("My {rel} is {age} and has {p1}; she takes {d1}. ", "I'm {age}, I have {p1} and take {d1}. ",
                   "My {rel} ({age}) was {setting_lay}. ", "I am a {age} year old {sexw} with {p1}. ")
_LAY_SETTINGS = ("seen by the doctor today", "in hospital last week", "told to come back in a month")


def vignette(question: str, rng: random.Random, lay: bool | None = None) -> str:
    """``question`` after a short, generic case description, as clinicians (or patients) write them."""
    lay = rng.random() < 0.3 if lay is None else lay
    p1, p2 = rng.sample(_CASE_PROBLEMS, 2)
    d1, d2 = rng.sample(_CASE_DRUGS, 2)
    sex = rng.choice("MF")
    fields = {"age": rng.randint(24, 91), "sex": sex, "sexw": "man" if sex == "M" else "woman", "p1": p1, "p2": p2,
              "d1": d1, "d2": d2, "setting": rng.choice(_CASE_SETTINGS), "setting_lay": rng.choice(_LAY_SETTINGS),
              "rel": rng.choice(_RELATIVES), "sbp": (sbp := rng.randint(100, 175)), "dbp": sbp - rng.randint(30, 70),
              "hr": rng.randint(52, 118)}
    case = rng.choice(_LAY_CASE_FORMS if lay else _CASE_FORMS).format(**fields)
    case = case[0].upper() + case[1:]
    q = question.strip()
    return case + (q[0].upper() + q[1:] if q else q)


# -- term swaps (version 3) ------------------------------------------------------------------------
# A sentence copied from its passage with one treatment or condition replaced by a sibling ("start an
# ACE inhibitor" -> "start an ARB") read as supported by version 2: most of the words still match.
# Groups of terms a clinician would never accept one for the other; the swap stays inside a group so
# the sentence remains fluent.
TERM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("ACE inhibitor", "angiotensin receptor blocker", "beta-blocker", "calcium channel blocker",
     "thiazide diuretic", "loop diuretic", "mineralocorticoid receptor antagonist", "SGLT2 inhibitor",
     "statin", "nitrate", "digoxin", "aspirin"),
    ("ACE inhibitors", "angiotensin receptor blockers", "beta-blockers", "calcium channel blockers",
     "thiazide diuretics", "loop diuretics", "SGLT2 inhibitors", "statins", "nitrates", "anticoagulants",
     "antiplatelet agents", "opioids", "corticosteroids", "antibiotics", "antidepressants", "NSAIDs"),
    ("metformin", "insulin", "sulfonylurea", "pioglitazone", "warfarin", "apixaban", "heparin", "clopidogrel",
     "amoxicillin", "doxycycline", "azithromycin", "ciprofloxacin", "furosemide", "spironolactone", "lisinopril",
     "amlodipine", "atorvastatin", "prednisone", "ibuprofen", "acetaminophen", "morphine", "levothyroxine"),
    ("hypertension", "hypotension", "diabetes", "heart failure", "atrial fibrillation", "asthma", "COPD",
     "pneumonia", "sepsis", "stroke", "chronic kidney disease", "osteoporosis", "depression", "obesity",
     "anaemia", "anemia", "cancer", "epilepsy", "migraine", "hypothyroidism", "tuberculosis", "HIV"),
    ("children", "adults", "older adults", "women", "men", "pregnant women", "infants", "adolescents"),
    ("daily", "weekly", "monthly", "yearly", "annually", "twice daily", "every 3 years", "every 10 years"),
    ("increase", "decrease", "reduce", "raise", "lower"),
    ("oral", "intravenous", "intramuscular", "subcutaneous", "topical", "inhaled"),
    ("mild", "moderate", "severe"),
    ("before", "after"),
    ("first-line", "second-line", "last-resort"),
)


def swap_term(sentence: str, passage: str, rng: random.Random) -> str | None:
    """``sentence`` with one listed term replaced by a sibling the passage never mentions (None: no term)."""
    found = []
    for group in TERM_GROUPS:
        for term in group:
            m = re.search(rf"(?<![\w-]){re.escape(term)}(?![\w-])", sentence, re.I)
            if m:
                found.append((group, term, m))
    rng.shuffle(found)
    low = passage.lower()
    for group, term, m in found:
        options = [t for t in group if t.lower() != term.lower() and not re.search(
            rf"(?<![\w-]){re.escape(t.lower())}(?![\w-])", low)]
        if options:
            new = rng.choice(options)
            if m.group(0)[0].isupper():
                new = new[0].upper() + new[1:]
            return sentence[:m.start()] + new + sentence[m.end():]
    return None


# Positive rewordings the generator produces: the guideline named as the speaker, a trailing aside dropped.
_LEADS = ("The guideline recommends that ", "According to the guideline, ", "Guidance: ", "The source states that ",
          "It is recommended that ")


def attribute_lead(sentence: str, rng: random.Random) -> str:
    """``sentence`` as the generator often phrases it: with a lead naming the source, or without a final
    parenthetical aside. The statement is unchanged."""
    s = sentence.strip()
    if rng.random() < 0.4 and re.search(r"\s*\([^()]{2,40}\)\.?$", s):
        return re.sub(r"\s*\([^()]{2,40}\)(\.?)$", r"\1", s)
    lead = rng.choice(_LEADS)
    first = s.split()[0] if s.split() else ""
    # "The ECG ..." -> "... that the ECG ..."; "HbA1c ..." and "ACE inhibitors ..." keep their case.
    return lead + (s[0].lower() + s[1:] if first[:1].isupper() and first[1:].islower() else s)
