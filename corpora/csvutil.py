"""CSV reading shared by the EHR readers: header check and per-row line numbers."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from corpora.errors import SourceError
from corpora.report import LoadReport, skip

# Transcriptions can exceed csv's default 128 KiB field limit; cap at 16 MiB, not unlimited.
csv.field_size_limit(min(sys.maxsize, 16 << 20))


def iter_csv(path: Path, required: Sequence[str], report: LoadReport, strict: bool
             ) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each well-formed row; rows with the wrong number of fields are reported."""
    try:
        f = path.open(encoding="utf-8-sig", newline="")
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror}); check the path and its permissions") from None
    with f:
        try:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise SourceError(f"{path}: missing column(s) {', '.join(missing)} in header "
                                  f"{','.join(header)[:120]!r}; fix the header, or name the file's real format "
                                  "(FORMAT:PATH)")
            start = reader.line_num + 1
            for row in reader:
                line = start
                start = reader.line_num + 1
                if None in row or any(v is None for v in row.values()):
                    skip(report, f"{path}:{line}", f"expected {len(header)} fields", strict)
                    continue
                yield line, row
        except csv.Error as e:
            raise SourceError(f"{path}:{reader.line_num}: malformed CSV ({e}); fix that line") from None
        except UnicodeDecodeError:
            raise SourceError(f"{path}: not UTF-8 text; convert it (e.g. iconv -t utf-8)") from None
