"""Self-contained HTML reports: one page per analysis result, readable offline (CSS and JavaScript inline,
plots as inline SVG drawn with matplotlib, no network access), every piece of data escaped, the peak
span of an example highlighted as <mark>. Each writer takes the result object and a path and writes the
page atomically; some take the store for what the result does not hold (the document map of a
clustering, example documents).

Examples:
    >>> write_diff_report(diff(a, b), "diff.html")  # doctest: +SKIP
    >>> write_cluster_report(result, "clusters.html", by="topic", store=store)  # doctest: +SKIP
"""

from saeembed.report._page import write_result_page
from saeembed.report.cluster import write_cluster_report
from saeembed.report.correlations import write_correlations_report
from saeembed.report.diff import write_diff_report
from saeembed.report.risk import write_risk_report
from saeembed.report.search import write_search_report

__all__ = ["write_cluster_report", "write_correlations_report", "write_diff_report", "write_risk_report",
           "write_result_page", "write_search_report"]
