"""Clinical abbreviation expansion for queries (the original text is always kept).

Real questions come in two registers the corpus does not use: clinicians' shorthand ("AF tx
rate vs rhythm", "HFrEF GDMT", "pt w/ CKD3 + T2DM") and long lay messages. Sources spell
terms out, so an abbreviation only BM25 can match by letters ("AF") misses passages that say
"atrial fibrillation", and the small embedder has rarely seen it. :func:`expand` appends the
spelled-out forms for BM25 (both forms then count) and writes them in after the abbreviation
for the dense query ("AF (atrial fibrillation) tx (treatment)").

The list is ours, written by hand from common clinical usage (cardiology, renal, endocrine,
respiratory, infection, neurology, obstetrics, oncology, note-writing shorthand); it is not
mined from any evaluation set. Matching is on whole tokens: upper-case abbreviations match only
as written (so "AF" but not the word "af", "MS" but not "ms"); the lower-case note shorthand
("tx", "sx", "dx", "abx", "hx") matches in any case. An ambiguous abbreviation expands to
every reading ("MS" -> multiple sclerosis, mitral stenosis): BM25 is helped by the right one
and barely hurt by the other, which the question's other words outvote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Abbreviations written as they are used (case-sensitive); value: one or more readings separated by "; ".
CASED: dict[str, str] = {
    # cardiovascular
    "AF": "atrial fibrillation", "AFib": "atrial fibrillation", "A-fib": "atrial fibrillation",
    "HF": "heart failure", "CHF": "congestive heart failure",
    "HFrEF": "heart failure with reduced ejection fraction", "HFpEF": "heart failure with preserved ejection fraction",
    "EF": "ejection fraction", "LVEF": "left ventricular ejection fraction",
    "GDMT": "guideline-directed medical therapy", "MI": "myocardial infarction heart attack",
    "STEMI": "ST-elevation myocardial infarction", "NSTEMI": "non-ST-elevation myocardial infarction",
    "ACS": "acute coronary syndrome", "CAD": "coronary artery disease", "CHD": "coronary heart disease",
    "CVD": "cardiovascular disease", "ASCVD": "atherosclerotic cardiovascular disease",
    "HTN": "hypertension high blood pressure", "BP": "blood pressure", "SBP": "systolic blood pressure",
    "DBP": "diastolic blood pressure", "ABPM": "ambulatory blood pressure monitoring",
    "PAD": "peripheral artery disease", "ABI": "ankle-brachial index", "AAA": "abdominal aortic aneurysm",
    "DVT": "deep vein thrombosis", "PE": "pulmonary embolism", "VTE": "venous thromboembolism",
    "MVP": "mitral valve prolapse", "TIA": "transient ischemic attack", "CVA": "stroke cerebrovascular accident",
    "ECG": "electrocardiogram", "EKG": "electrocardiogram", "LDL": "low-density lipoprotein cholesterol",
    "HDL": "high-density lipoprotein cholesterol", "FH": "familial hypercholesterolemia",
    "ACEi": "angiotensin-converting enzyme inhibitor", "ACE": "angiotensin-converting enzyme",
    "ARB": "angiotensin receptor blocker", "DOAC": "direct oral anticoagulant", "tPA": "tissue plasminogen activator",
    # renal, urology
    "CKD": "chronic kidney disease", "ESRD": "end-stage renal disease kidney failure", "AKI": "acute kidney injury",
    "eGFR": "estimated glomerular filtration rate", "GFR": "glomerular filtration rate",
    "UTI": "urinary tract infection", "BPH": "benign prostatic hyperplasia enlarged prostate",
    "PSA": "prostate-specific antigen", "PKD": "polycystic kidney disease", "ACKD": "acquired cystic kidney disease",
    "IC": "interstitial cystitis", "PBS": "painful bladder syndrome", "UI": "urinary incontinence",
    "VUR": "vesicoureteral reflux", "HUS": "hemolytic uremic syndrome",
    # endocrine, metabolic
    "DM": "diabetes mellitus", "T1DM": "type 1 diabetes mellitus", "T2DM": "type 2 diabetes mellitus",
    "T1D": "type 1 diabetes", "T2D": "type 2 diabetes", "GDM": "gestational diabetes mellitus",
    "DKA": "diabetic ketoacidosis", "A1c": "hemoglobin A1c glycated hemoglobin", "HbA1c": "glycated hemoglobin A1c",
    "DPP": "Diabetes Prevention Program", "BMI": "body mass index", "PCOS": "polycystic ovary syndrome",
    "SIADH": "syndrome of inappropriate antidiuretic hormone", "ADH": "antidiuretic hormone",
    "TSH": "thyroid-stimulating hormone", "PKU": "phenylketonuria", "MSUD": "maple syrup urine disease",
    # respiratory
    "COPD": "chronic obstructive pulmonary disease", "OSA": "obstructive sleep apnea",
    "CAP": "community-acquired pneumonia", "RDS": "respiratory distress syndrome",
    "ARDS": "acute respiratory distress syndrome", "SOB": "shortness of breath", "LDCT": "low-dose computed tomography",
    "BOOP": "bronchiolitis obliterans organizing pneumonia", "TB": "tuberculosis",
    "LTBI": "latent tuberculosis infection", "IGRA": "interferon-gamma release assay", "TST": "tuberculin skin test",
    # infection
    "HIV": "human immunodeficiency virus", "PrEP": "pre-exposure prophylaxis", "PEP": "post-exposure prophylaxis",
    "HBV": "hepatitis B virus", "HCV": "hepatitis C virus", "STI": "sexually transmitted infection",
    "STD": "sexually transmitted disease", "HSV": "herpes simplex virus", "HPV": "human papillomavirus",
    "RSV": "respiratory syncytial virus", "CJD": "Creutzfeldt-Jakob disease", "MRSA": "methicillin-resistant "
    "Staphylococcus aureus", "O&P": "ova and parasites stool examination", "TDF": "tenofovir disoproxil fumarate",
    "FTC": "emtricitabine",
    # gastrointestinal, liver
    "GERD": "gastroesophageal reflux disease", "PUD": "peptic ulcer disease", "IBD": "inflammatory bowel disease",
    "IBS": "irritable bowel syndrome", "CRC": "colorectal cancer", "PSC": "primary sclerosing cholangitis",
    "GI": "gastrointestinal", "FOBT": "fecal occult blood test",
    # neurology, psychiatry
    "MS": "multiple sclerosis; mitral stenosis", "TBI": "traumatic brain injury", "mTBI": "mild traumatic brain injury",
    "CTS": "carpal tunnel syndrome", "ADHD": "attention deficit hyperactivity disorder",
    "LGS": "Lennox-Gastaut syndrome",
    "NMS": "neuroleptic malignant syndrome", "PSP": "progressive supranuclear palsy", "MSA": "multiple system atrophy",
    "ALS": "amyotrophic lateral sclerosis", "PD": "Parkinson disease", "LEMS": "Lambert-Eaton myasthenic syndrome",
    "MDD": "major depressive disorder", "PTSD": "posttraumatic stress disorder", "SUD": "substance use disorder",
    "AUD": "alcohol use disorder", "OUD": "opioid use disorder", "CBT": "cognitive behavioral therapy",
    "SSRI": "selective serotonin reuptake inhibitor", "SSRIs": "selective serotonin reuptake inhibitors",
    "MME": "morphine milligram equivalents", "CRPS": "complex regional pain syndrome",
    "LBP": "low back pain", "OA": "osteoarthritis", "RA": "rheumatoid arthritis", "CMI": "chronic multisymptom illness",
    # genetics, haematology, oncology
    "SCD": "sickle cell disease", "TCD": "transcranial Doppler", "DIC": "disseminated intravascular coagulation",
    "IVIG": "intravenous immunoglobulin", "MDS": "myelodysplastic syndromes", "NHL": "non-Hodgkin lymphoma",
    "NSCLC": "non-small cell lung cancer", "SCLC": "small cell lung cancer", "HHT": "hereditary hemorrhagic "
    "telangiectasia", "OI": "osteogenesis imperfecta", "XP": "xeroderma pigmentosum", "DMD": "Duchenne muscular "
    "dystrophy", "FMF": "familial Mediterranean fever", "NF2": "neurofibromatosis type 2",
    "MH": "malignant hyperthermia",
    "BRCA": "breast cancer susceptibility gene", "AR": "autosomal recessive", "AD": "autosomal dominant",
    "ERT": "enzyme replacement therapy", "DH": "dermatitis herpetiformis",
    # obstetrics, paediatrics, screening
    "IPV": "intimate partner violence", "USPSTF": "U.S. Preventive Services Task Force",
    "VA/DoD": "Veterans Affairs Department of Defense", "HRT": "hormone replacement therapy",
    "IUD": "intrauterine device", "MEC": "medical eligibility criteria", "SPR": "selected practice recommendations",
    "NTD": "neural tube defect", "ASD": "autism spectrum disorder", "DEXA": "dual-energy x-ray absorptiometry",
    "BMD": "bone mineral density", "RUQ": "right upper quadrant abdomen", "ER": "emergency room",
    "ICU": "intensive care unit", "NSAID": "nonsteroidal anti-inflammatory drug",
    "NSAIDs": "nonsteroidal anti-inflammatory drugs", "OTC": "over-the-counter",
}

# Note-writing shorthand, matched in any case ("Tx", "tx", "TX").
ANY_CASE: dict[str, str] = {
    "tx": "treatment", "sx": "symptoms", "dx": "diagnosis", "ddx": "differential diagnosis", "hx": "history",
    "fhx": "family history", "abx": "antibiotics", "dz": "disease", "mgmt": "management", "pt": "patient",
    "pts": "patients", "yo": "year old", "y/o": "year old", "w/": "with", "w/o": "without", "s/p": "status post after",
    "r/o": "rule out", "ca": "cancer", "meds": "medications", "rx": "prescription", "htn": "hypertension",
    "afib": "atrial fibrillation", "ckd": "chronic kidney disease", "copd": "chronic obstructive pulmonary disease",
    "uti": "urinary tract infection", "sob": "shortness of breath", "f/u": "follow-up", "prn": "as needed",
}

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9/&'-]*[A-Za-z0-9/]|[A-Za-z0-9]")


@dataclass
class Expanded:
    """A query and what its abbreviations stand for."""

    original: str
    found: list[tuple[str, str]] = field(default_factory=list)  # (abbreviation as written, expansion)

    @property
    def bm25_text(self) -> str:
        """Original words plus every expansion: both the abbreviation and the spelled-out form can match."""
        if not self.found:
            return self.original
        return self.original + " " + " ".join(e for _, e in self.found)

    @property
    def dense_text(self) -> str:
        """Each abbreviation followed by its expansion in brackets (reads like a sentence to the encoder)."""
        if not self.found:
            return self.original
        out, pos = [], 0
        expansions = dict(self.found)
        for m in _TOKEN.finditer(self.original):
            word = _strip(m.group(0))
            parts = [word] if word in expansions else [p for p in word.split("/") if p in expansions]
            if parts:
                end = m.start() + len(word)
                out.append(self.original[pos:end] + " (" + "; ".join(expansions[p] for p in parts) + ")")
                pos = end
        out.append(self.original[pos:])
        return "".join(out)


def _strip(token: str) -> str:
    # "AF," or "T2DM." arrive with punctuation the regex keeps inside ("w/" must keep its slash)
    return token.rstrip("'-") if token not in ANY_CASE else token


_STAGED = re.compile(r"^([A-Za-z]{2,})\d[a-b]?$")  # "CKD3", "CKD3a": the stage written onto the abbreviation


def _lookup(word: str) -> str | None:
    if word in CASED:
        return CASED[word]
    low = word.lower()
    if low in ANY_CASE:
        return ANY_CASE[low]
    m = _STAGED.match(word)
    if m and m.group(1) in CASED:
        return CASED[m.group(1)]
    return None


def expand(query: str) -> Expanded:
    """The abbreviations found in ``query`` (each once, in order) with their expansions."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for m in _TOKEN.finditer(query):
        word = _strip(m.group(0))
        exp = _lookup(word)
        if exp is None and "/" in word:
            # "IC/PBS", "HTN/CKD": look at each part
            for part in word.split("/"):
                e = _lookup(part) if part else None
                if e and part not in seen:
                    seen.add(part)
                    found.append((part, e.replace("; ", " or ")))
            continue
        if exp and word not in seen:
            seen.add(word)
            found.append((word, exp.replace("; ", " or ")))
    return Expanded(query, found)
