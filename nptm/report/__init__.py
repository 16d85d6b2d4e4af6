"""``python -m nptm.report RUN_DIR [RUN_DIR...]``: one report.html (tables, figures embedded, each study's
config) and report.md from one or more study folders, finished or interrupted (``nptm.study.report``)."""
from nptm.study.report import StudyResults, build_report, load_study
from nptm.study.tables import report_tables

__all__ = ["StudyResults", "build_report", "load_study", "report_tables"]
