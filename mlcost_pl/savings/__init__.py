"""Proof of savings: each cost technique measured on the user's recipe, next to the classic claim.

Pure logic (rows, monthly dollars, the combined estimate, the writers); ``recipes.savings`` runs the measurements.
"""

from mlcost_pl.savings.report import CLAIMS, Row, check_workload, combined, monthly_bills, monthly_usd, write_report

__all__ = [
    "CLAIMS",
    "Row",
    "check_workload",
    "combined",
    "monthly_bills",
    "monthly_usd",
    "write_report",
]
