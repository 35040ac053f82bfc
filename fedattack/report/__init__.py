"""Reports an auditor can hand on: one self-contained report.html per run, with the records at
risk as CSV (:func:`write_report`), and the run's provenance (:mod:`fedattack.report.provenance`).
"""

from fedattack.report.html import (
    REPORT_HTML,
    RISK_CSV,
    NotReportable,
    write_provenance,
    write_report,
)

__all__ = ["REPORT_HTML", "RISK_CSV", "NotReportable", "write_provenance", "write_report"]
