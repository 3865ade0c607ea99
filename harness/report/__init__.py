"""Reports: report.json (every figure and verdict) and a self-contained report.html, from one core dict."""
