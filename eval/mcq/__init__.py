"""Multiple-choice benchmarks (MedMCQA, MMLU-medical, MedQA-USMLE, MIRAGE): read, prompt, score, report."""
