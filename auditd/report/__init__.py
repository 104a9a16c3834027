"""Reading an audit back: the report document (document.py: JSON for `auditd report --json`, the
API and the demo) and its self-contained HTML page (html.py, text_html.py, templates/)."""
